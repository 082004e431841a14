"""The lowest layer: helpers every other part of lcia may use and that use nothing of lcia but its errors.

files        atomic writes, JSON reads with file:line errors, the refusal of pickled files
packages     the folder of an installed asset package (model, embedder, data), found without importing it
params       the tensors a run trains and the tensors it changes
precision    fp32 or bf16: choosing it, autocast for answering, the Accelerator for training
distributed  what each process of a multi-process launch does and what they agree on
"""
