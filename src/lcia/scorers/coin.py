"""CoIN's scorers for its one-answer tasks, ported from zackschen/CoIN ``ETrain/Eval/LLaVA/CoIN/`` (commit
4122465517c2; JingyangQiao/CoIN ``llava/eval/CoIN/`` scores the same way).

Each compares the model's answer (stripped, as CoIN's ``model_*.py`` strip it) with the test record's one
``answer``, exactly as the original script does, quirks included:

* ``coin-scienceqa`` (``eval_science_qa.py``): the option letter is the whole answer if it is one of A-E, else
  its first character when ``". "`` follows it, else the first one-character word of the answer, upper-cased
  (so "I think b" reads "I" and is wrong); it must be the gold letter.
* ``coin-gqa`` (``convert_gqa_for_eval.py`` then GQA's official ``eval_gqa.py``): the answer with trailing
  periods stripped and lower-cased must equal the gold answer.
* ``coin-imagenet`` (``eval_ImagetNet.py``): the gold label in the answer or the answer in the gold label,
  case-sensitive, so an empty answer counts as right.
* ``coin-vizwiz``, ``coin-vqav2`` (``eval_vizwiz.py``, ``eval_vqav2.py``): equal after ``str.upper``.
* ``coin-ocrvqa`` (``eval_ocrvqa.py``): an answer containing "Unanswerable" is wrong; otherwise equal after
  ``str.lower``.

TextVQA's ten-answer soft accuracy is in :mod:`lcia.scorers.m4c`, Grounding's IoU in :mod:`lcia.scorers.grounding`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lcia.data.schema import Example
from lcia.scorers.base import Scored, per_example, register_scorer

OPTIONS = ("A", "B", "C", "D", "E")  # eval_science_qa.py's --options
_ONE_CHAR_WORD = re.compile(r"\b(\w)\b")


def scienceqa_letter(prediction: str) -> str:
    """The option letter ``eval_science_qa.py`` reads from an answer, or "FAILED"."""
    if prediction in OPTIONS:
        return prediction
    if len(prediction) >= 3 and prediction[0] in OPTIONS and prediction[1:3] == ". ":
        return prediction[0]
    found = _ONE_CHAR_WORD.findall(prediction)
    return found[0].upper() if found else "FAILED"


def _gold(references: Sequence[str]) -> str:
    if isinstance(references, str) or len(references) != 1:
        raise ValueError(f"CoIN scores one answer per question, got {references!r}")
    return references[0]


def scienceqa(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the letter read from the answer is the gold letter (a letter past the question's choices never is:
    the gold one is among them)."""
    return float(scienceqa_letter(prediction.strip()) == _gold(references))


@register_scorer("coin-scienceqa")
def scienceqa_task(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    """Accuracy, and (as JingyangQiao/CoIN's copy prints it) the accuracy on the questions with an image."""
    scores = [scienceqa(p, ex.references) for p, ex in zip(predictions, examples, strict=True)]
    with_image = [s for s, ex in zip(scores, examples) if ex.image]
    metrics = {"img_accuracy": sum(with_image) / len(with_image)} if with_image else {}
    return Scored(scores, metrics)


@per_example("coin-gqa")
def gqa(prediction: str, references: Sequence[str]) -> float:
    return float(prediction.strip().rstrip(".").lower() == _gold(references))


@per_example("coin-imagenet")
def imagenet(prediction: str, references: Sequence[str]) -> float:
    prediction, gold = prediction.strip(), _gold(references)
    return float(gold in prediction or prediction in gold)


def upper_exact(prediction: str, references: Sequence[str]) -> float:
    return float(prediction.strip().upper() == _gold(references).upper())


per_example("coin-vizwiz")(upper_exact)
per_example("coin-vqav2")(upper_exact)


@per_example("coin-ocrvqa")
def ocrvqa(prediction: str, references: Sequence[str]) -> float:
    prediction = prediction.strip()
    if "Unanswerable" in prediction:
        return 0.0
    return float(prediction.lower() == _gold(references).lower())
