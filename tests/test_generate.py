"""The greedy decoder gives exactly what Hugging Face's ``generate`` gives, batched or not."""

import torch

from lcia.evaluation.generate import _generate_batch, shared_prefix_length


def hf_greedy(model, prompt, eos_id, max_new_tokens):
    out = model.generate(
        input_ids=torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=eos_id,
        eos_token_id=eos_id,
    )[0, len(prompt) :].tolist()
    return out[: out.index(eos_id)] if eos_id in out else out


def test_batched_greedy_decoding_equals_generate_and_drops_ended_rows(tiny_lora):
    tok, model, _, _ = tiny_lora()
    model.eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], [30, 31, 32, 33, 34], [40]]
    unconstrained = hf_greedy(model, prompts[1], -1, 8)
    eos = unconstrained[2]  # a token the second prompt produces third: it ends there, the others may run on
    expected = [hf_greedy(model, p, eos, 8) for p in prompts]
    assert expected[1] == unconstrained[: unconstrained.index(eos)]
    assert len({len(e) for e in expected}) > 1  # rows end at different steps

    sizes = []  # the batch size of every forward pass
    hook = model.get_input_embeddings().register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    ours = _generate_batch(model, prompts, tok.pad_token_id, eos, 8)
    hook.remove()
    assert ours == expected
    still_going = [sum(len(e) >= step for e in expected) for step in range(1, len(sizes))]
    assert sizes == [4] + still_going  # an ended row leaves the batch at the next step
    one_by_one = [_generate_batch(model, [p], tok.pad_token_id, eos, 8)[0] for p in prompts]
    assert one_by_one == expected


def test_a_shared_prefix_is_encoded_once_and_changes_no_answer(tiny_lora):
    tok, model, _, _ = tiny_lora()
    model.eval()
    prefix = list(range(100, 112))  # a chat template and instruction, shared by the batch
    prompts = [prefix + [5, 6, 7], prefix + [20], prefix + [30, 31, 32, 33, 34, 35], prefix + [40, 41]]
    assert shared_prefix_length(prompts) == 12
    assert shared_prefix_length([prefix, prefix + [1]]) == 11  # every prompt keeps a token of its own
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4]]) == 0  # too short to be worth it
    eos = hf_greedy(model, prompts[0], -1, 8)[3]
    expected = [hf_greedy(model, p, eos, 8) for p in prompts]

    sizes = []  # the tokens of every forward pass
    hook = model.get_input_embeddings().register_forward_pre_hook(lambda m, args: sizes.append(tuple(args[0].shape)))
    ours = _generate_batch(model, prompts, tok.pad_token_id, eos, 8)
    hook.remove()
    assert ours == expected
    assert sizes[:2] == [(1, 12), (4, 6)]  # the prefix once, then the padded suffixes
