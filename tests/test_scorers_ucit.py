"""``ucit-accuracy`` against UCIT's own accuracy evaluation, on crafted cases.

Expected values come from running HiDe-LLaVA ``llava/eval/eval_deepseek_r1.py`` (github.com/Ghy0501/HiDe-LLaVA,
commit 4dd0793a2319e4fdb03260f8f68b82359092c902) as ``python -m llava.eval.eval_deepseek_r1 --annotation-file
... --result-file ...``: each case alone (its Accuracy 0 or 100 is the example's score) and all together
(Accuracy 53.85%, 7 of 13).
"""

from __future__ import annotations

import pytest

from lcia.data.schema import Example
from lcia.scorers import get_scorer
from lcia.scorers.ucit import ucit_accuracy

CASES = [  # (prediction, answer, eval_deepseek_r1.py's score)
    ("cat", "cat", 1.0),
    ("Cat", "cat", 1.0),
    ("cat.", "cat", 0.0),  # no punctuation handling
    ("a cat", "cat", 0.0),  # nor articles
    ("", "cat", 0.0),  # empty prediction
    ("A", "A", 1.0),
    ("ß", "SS", 1.0),  # str.upper: "ß" -> "SS"
    (" cat", "cat", 0.0),  # nor whitespace (lcia strips generated text, as model_answer.py does)
    ("3", "3", 1.0),
    ("three", "3", 0.0),
    ("B. 42", "B", 0.0),
    ("Goldfish", "goldfish", 1.0),
    ("unanswerable", "Unanswerable", 1.0),
]


@pytest.mark.parametrize("prediction, answer, expected", CASES)
def test_each_case_scores_as_eval_deepseek_r1(prediction, answer, expected):
    assert ucit_accuracy(prediction, (answer,)) == expected


def test_the_whole_set_is_its_accuracy():
    examples = [Example("q", "", a, id=str(k)) for k, (_, a, _) in enumerate(CASES)]
    scored = get_scorer("ucit-accuracy")([p for p, _, _ in CASES], examples)
    assert round(100 * sum(scored.per_example) / len(CASES), 2) == 53.85
