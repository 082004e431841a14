"""The Long-Sequence / SuperNI scorers (lcia.scorers.ni_metrics) on crafted answers, against O-LoRA's and SAPT's
own evaluation code.

Expected values were computed by running ``src/compute_metrics.py`` of cmnfriend/O-LoRA at commit
07117e1fc4a5f5ad9308a815a42cee8f46502dc8 and of circle-hit/SAPT at 52a52b920324c656bdb6dac08e43dc600ba22f21 (the
same file; their vendored Google ``rouge`` with nltk 3.5): per answer, ``metric_max_over_ground_truths`` of
``exact_match_score``, ``rouge1_score`` and ``rougeL_score`` over the listed references; per task,
``compute_metrics`` (rounded to 4 places there). Each answer was first cut as the decoder branch of their
``skip_instructions`` cuts the decoded prompt + answer: after the last ``Answer:`` (O-LoRA) or ``Output:``
(SAPT), stripped; the O-LoRA and SAPT rows differ only where an answer repeats O-LoRA's prefix.
"""

from __future__ import annotations

import pytest

from lcia.data.schema import Example
from lcia.scorers import get_scorer
from lcia.scorers.ni_metrics import answer_text, normalize_answer

LABELS = (
    ["positive", "Positive.", "the positive", "very positive", "", "Answer: negative", "  neutral  ", "not entailment"],
    ["positive", "positive", "positive", "positive", "positive", "negative", "neutral", "entailment"],
)
GENERATION = (
    ["The cats are running in the garden.", 'He said: "It\'s 5 o\'clock!"', "Résumé des réunions",
     "A man walks his dog", ""],
    ["A cat runs in gardens", "It is five o'clock, he said.", "résumé de la réunion", "A man walks a dog.", "anything"],
)  # fmt: skip
MULTI = (
    ["Oliver", "the Artful Dodger", "Fagin's gang"],
    [["Oliver.", "Oliver Twist"], ["Jack Dawkins", 'the "Artful Dodger".'], ["Fagin"]],
)
T = 2 / 3

# (answers, references, prefix, per-example (exact match, ROUGE-1, ROUGE-L), compute_metrics or None)
CASES = {
    "labels, O-LoRA: punctuation and case ignored, articles kept, its prefix cut": (
        *LABELS, "Answer:",
        [(1, 1, 1), (1, 1, 1), (0, T, T), (0, T, T), (0, 0, 0), (1, 1, 1), (1, 1, 1), (0, T, T)],
        {"exact_match": 50.0, "rouge1": 75.0, "rougeL": 75.0},
    ),
    "labels, SAPT: O-LoRA's prefix is not SAPT's": (
        *LABELS, "Output:",
        [(1, 1, 1), (1, 1, 1), (0, T, T), (0, T, T), (0, 0, 0), (0, T, T), (1, 1, 1), (0, T, T)],
        {"exact_match": 37.5, "rouge1": 70.8333, "rougeL": 70.8333},
    ),
    "generation: stemming, contractions, accents, empty answer": (
        *GENERATION, "Output:",
        [(0, T, T), (0, 0.7142857142857143, 0.42857142857142855), (0, 0.7272727272727272, 0.7272727272727272),
         (0, 0.8000000000000002, 0.8000000000000002), (0, 0, 0)],
        {"exact_match": 0.0, "rouge1": 58.1645, "rougeL": 52.4502},
    ),
    "several accepted outputs: the best one counts": (
        *MULTI, "Output:", [(1, 1, 1), (1, 1, 1), (0, 0.5, 0.5)], None,
    ),
}  # fmt: skip


def examples(references, prefix):
    refs = [r if isinstance(r, list) else [r] for r in references]
    return [Example("i", "x", r[0], tuple(r), meta={"answer_prefix": prefix}) for r in refs]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_scores_match_olora_and_sapts_own_evaluation(case):
    answers, references, prefix, expected, task_metrics = CASES[case]
    em = get_scorer("ni-em")(answers, examples(references, prefix))
    rouge_l = get_scorer("ni-rougeL")(answers, examples(references, prefix))
    assert em.per_example == pytest.approx([e[0] for e in expected], abs=1e-12)
    assert rouge_l.per_example == pytest.approx([e[2] for e in expected], abs=1e-12)
    assert em.metrics == rouge_l.metrics
    if task_metrics:  # compute_metrics rounds to 4 places
        assert em.metrics == pytest.approx(task_metrics, abs=1e-4)


def test_the_pieces():
    assert normalize_answer("  The  Answer: (B)! ") == "the answer b"
    assert answer_text(" negative ", "Answer:") == "negative"
    assert answer_text("x Answer: y Answer: z", "Answer:") == "z"
    assert answer_text("Answer: z", None) == "Answer: z"
