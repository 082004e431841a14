"""Exact match and ROUGE-L of the Long-Sequence and SuperNI streams, as O-LoRA and SAPT score them.

Ports ``src/compute_metrics.py`` of cmnfriend/O-LoRA (commit 07117e1), identical in circle-hit/SAPT (52a52b9),
itself the evaluation of Super-NaturalInstructions: exact match after SQuAD's normalisation *without* the
removal of articles, and ROUGE-1 / ROUGE-L F-measure from Google's ``rouge`` (vendored there, ``rouge-score``
here: the same code) with the Porter stemmer, each the best over the example's references. A decoder's answer
is first cut as their ``skip_instructions`` (``uie_trainer_lora.py`` / ``cl_trainer.py``) cuts it: the text
after the last answer prefix (``Answer:`` for O-LoRA's prompts, ``Output:`` for SAPT's), which the reader
puts in ``Example.meta["answer_prefix"]``.

* ``ni-em``: the cell is exact match, as O-LoRA and SAPT report the Long-Sequence tasks (accuracy).
* ``ni-rougeL``: the cell is ROUGE-L, as SAPT reports the SuperNI tasks (``eval_rougeL``).

Both report ``exact_match``, ``rouge1`` and ``rougeL`` as task-level metrics, in percent as compute_metrics
prints them (unrounded).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from functools import cache

from lcia.data.schema import Example
from lcia.scorers.base import Scored, register_scorer

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, squeeze whitespace (articles are kept, unlike SQuAD's)."""
    return " ".join("".join(ch for ch in text.lower() if ch not in _PUNCTUATION).split())


def answer_text(prediction: str, prefix: str | None) -> str:
    """The answer a decoder gave: after the last ``prefix`` when the generation repeats it, stripped.

    The original decodes prompt and answer together, and the prompt ends in the prefix; lcia's prediction is
    the answer alone, so a prediction without the prefix is kept whole where the original would keep it too.
    """
    if prefix and prefix in prediction:
        return prediction.split(prefix)[-1].strip()
    return prediction.strip()


@cache
def _rouge():
    from rouge_score import rouge_scorer  # imported on first use: it pulls in nltk

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def example_scores(prediction: str, references: Sequence[str]) -> tuple[float, float, float]:
    """(exact match, ROUGE-1 F, ROUGE-L F) of one answer, each the best over the references."""
    rouges = [_rouge().score(target=ref, prediction=prediction) for ref in references]
    return (
        max(float(normalize_answer(prediction) == normalize_answer(ref)) for ref in references),
        max(score["rouge1"].fmeasure for score in rouges),
        max(score["rougeL"].fmeasure for score in rouges),
    )


def _scored(predictions: Sequence[str], examples: Sequence[Example], cell: int) -> Scored:
    rows = [
        example_scores(answer_text(p, ex.meta.get("answer_prefix")), ex.references)
        for p, ex in zip(predictions, examples, strict=True)
    ]
    n = max(len(rows), 1)
    metrics = {
        name: 100.0 * sum(row[k] for row in rows) / n for k, name in enumerate(("exact_match", "rouge1", "rougeL"))
    }
    return Scored([row[cell] for row in rows], metrics)


@register_scorer("ni-em")
def ni_exact_match(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    """Exact match per example (O-LoRA's and SAPT's Long-Sequence accuracy)."""
    return _scored(predictions, examples, 0)


@register_scorer("ni-rougeL")
def ni_rouge_l(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    """ROUGE-L F per example (SAPT's SuperNI score)."""
    return _scored(predictions, examples, 2)
