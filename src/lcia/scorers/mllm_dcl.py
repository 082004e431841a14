"""MLLM-DCL's scorers, one per evaluation file of MLLM-CL (github.com/bjzhb666/MLLM-CL, commit 80bf389,
``ETrain/Eval/LLaVA/CoIN/``; MCITlib's ``llava/eval/CoIN/`` copies are identical), as its ``Eval_dom`` scripts
pair them with the domains:

* ``mllm-dcl-ai2d`` (RS, AD): ``eval_ai2d.py``, a lower-cased containment rule (below);
* ``mllm-dcl-pvqa`` (Med): ``eval_pvqa.py``, the lower-cased answer contained in the prediction;
* ``mllm-dcl-sci`` (Sci): ``eval_sci.py``, exact match for AI2D / TQA / VQA / SciVerse images, containment or
  a per-state share for MapQA, told apart by the image's file name (``Example.meta``);
* ``mllm-dcl-finvis`` (Fin): ``eval_finvis.py``, exact match after dropping spaces and full stops.

Every file first gives 0 to a prediction containing ``Unanswerable`` (case-sensitive, before lower-casing).
None of them calls an LLM judge.
"""

from __future__ import annotations

from collections.abc import Sequence

from lcia.data.schema import Example
from lcia.scorers.base import Scored, per_example, register_scorer

UNANSWERABLE = "Unanswerable"
EXACT_SOURCES = ("AI2D", "TQA", "VQA", "SciVerse")  # eval_sci.py: the image-name prefixes scored by exact match


def _answer(references: Sequence[str] | str) -> str:
    """The test record's one ``answer`` (a bare string is accepted)."""
    return references if isinstance(references, str) else references[0]


@per_example("mllm-dcl-ai2d")
def ai2d(prediction: str, references: Sequence[str]) -> float:
    """eval_ai2d.py: an answer with a space must occur in the prediction; a one-word answer (its dots dropped)
    must occur as a word of a several-word prediction (after a space, or before a space, "." or ","), or
    anywhere in a one-word prediction."""
    if UNANSWERABLE in prediction:
        return 0.0
    pred, gt = prediction.lower(), _answer(references).lower()
    if " " in gt:
        return float(gt in pred)
    gt = gt.replace(".", "")
    if " " in pred:
        return float(f" {gt}" in pred or f"{gt} " in pred or f"{gt}." in pred or f"{gt}," in pred)
    return float(gt in pred)


@per_example("mllm-dcl-pvqa")
def pvqa(prediction: str, references: Sequence[str]) -> float:
    """eval_pvqa.py: the lower-cased answer occurs in the lower-cased prediction."""
    if UNANSWERABLE in prediction:
        return 0.0
    return float(_answer(references).lower() in prediction.lower())


@per_example("mllm-dcl-finvis")
def finvis(prediction: str, references: Sequence[str]) -> float:
    """eval_finvis.py: the prediction, lower-cased without spaces and dots, equals the lower-cased answer."""
    if UNANSWERABLE in prediction:
        return 0.0
    return float(prediction.lower().replace(" ", "").replace(".", "") == _answer(references).lower())


def sci_score(prediction: str, answer: str, image: str, question: str) -> float:
    """eval_sci.py for one record: ``image`` is the test record's image path, ``question`` its ``text``."""
    if UNANSWERABLE in prediction:
        return 0.0
    pred, gt = prediction.lower(), answer.lower()
    if image.split("/")[-1].split("_")[0] in EXACT_SOURCES:
        return float(gt == pred)
    if "Which states" in question:  # MapQA's list questions: the share of the answer's states named
        gt_list = gt.split(",")
        named = pred.split(",")
        return sum(state in named for state in gt_list) / len(gt_list)
    return float(gt in pred)


@register_scorer("mllm-dcl-sci")
def sci(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    """eval_sci.py over a test set; each example's ``meta`` holds its ``image`` and ``question``."""
    return Scored(
        [
            sci_score(pred, _answer(ex.references), ex.meta["image"], ex.meta["question"])
            for pred, ex in zip(predictions, examples, strict=True)
        ]
    )
