"""UCIT's accuracy: ImageNet-R, ArxivQA, IconQA and CLEVR-Math as HiDe-LLaVA scores them.

Ports ``eval_single`` of HiDe-LLaVA ``llava/eval/eval_deepseek_r1.py`` (github.com/Ghy0501/HiDe-LLaVA, commit
4dd0793; MCITlib's ``llava/eval/CoIN/eval_deepseek_r1.py`` is the same): a prediction is right when it equals
the test record's ``answer`` case-insensitively (``pred.upper() == answer.upper()``), nothing else normalised:
no punctuation, article or whitespace handling beyond the strip of the generated text, which lcia's decoding
does as LLaVA's ``model_answer.py`` does. The same file's DeepSeek-chat similarity score (commented out there)
needs an external LLM judge and is not supported. UCIT's caption tasks: :mod:`lcia.scorers.captions`.
"""

from __future__ import annotations

from collections.abc import Sequence

from lcia.scorers.base import per_example


@per_example("ucit-accuracy")
def ucit_accuracy(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the prediction equals the answer after ``str.upper`` on both sides ("Cat" == "CAT", "cat." != "cat")."""
    refs = [references] if isinstance(references, str) else list(references)
    return float(any(prediction.upper() == ref.upper() for ref in refs))
