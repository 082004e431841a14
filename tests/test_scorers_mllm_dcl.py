"""MLLM-DCL's scorers against MLLM-CL's own evaluation files, on crafted cases.

Expected values come from running MLLM-CL's ``ETrain/Eval/LLaVA/CoIN/eval_ai2d.py``, ``eval_pvqa.py``,
``eval_sci.py`` and ``eval_finvis.py`` (github.com/bjzhb666/MLLM-CL, commit
80bf389022fbf314ce1ca0e04e0f47ab56570174; MCITlib's copies are identical) as ``python -m ... --annotation-file
test.json --result-file merge.jsonl --output-dir ...``, each case alone: the per-record ``score`` of its
``Result.json`` where the file writes one (ai2d, sci, finvis), else its Accuracy (pvqa; and a prediction with
``Unanswerable``, which every file skips before scoring, counts 0 of 1). The all-together accuracies are
noted per file.
"""

from __future__ import annotations

import pytest

from lcia.data.schema import Example
from lcia.scorers import get_scorer

AI2D = [  # eval_ai2d.py (RS, AD); all together: 73.68%
    ("Yes", "yes", 1.0),
    ("The answer is yes.", "yes", 1.0),
    ("yesterday", "yes", 1.0),  # a one-word prediction only has to contain the answer
    ("no, it is not", "no", 1.0),
    ("nothing here", "no", 0.0),
    ("", "yes", 0.0),  # empty prediction
    ("Unanswerable", "yes", 0.0),
    ("unanswerable", "unanswerable", 1.0),  # only the capitalised word is skipped
    ("parking lot", "parking lot", 1.0),
    ("A parking lot.", "parking  lot", 0.0),
    ("U.S.A", "u.s.a.", 0.0),  # the answer loses its dots, the prediction keeps them
    ("3 cars", "3", 1.0),
    ("13", "3", 1.0),
    ("The car is red", "Red", 1.0),
    ("dense residential area", "residential", 1.0),
    ("the airport!", "airport", 1.0),
    ("airport", "Airport.", 1.0),
    ("it is an airport", "an airport", 1.0),
    ("Yes.", "yes", 1.0),
]
PVQA = [  # eval_pvqa.py (Med); all together: 70.00%
    ("Yes", "yes", 1.0),
    ("yes, the tissue", "yes", 1.0),
    ("no", "yes", 0.0),
    ("", "yes", 0.0),
    ("Unanswerable", "yes", 0.0),
    ("the liver shows fibrosis", "fibrosis", 1.0),
    ("Fibrosis.", "fibrosis", 1.0),
    ("nos", "no", 1.0),
    ("an unanswerable question", "question", 1.0),
    ("hepatocellular carcinoma", "Hepatocellular Carcinoma", 1.0),
]
FINVIS = [  # eval_finvis.py (Fin); all together: 50.00%
    ("A", "A", 1.0),
    ("A.", "A", 1.0),
    ("(A)", "A", 0.0),
    ("Yes", "Yes", 1.0),
    ("Y e s.", "Yes", 1.0),
    ("The answer is A", "A", 0.0),
    ("", "A", 0.0),
    ("Unanswerable", "A", 0.0),
    ("a b", "a b", 0.0),  # the prediction loses its spaces, the answer keeps them
    ("1.5", "15", 1.0),
    ("no", "No", 1.0),
    ("B", "A", 0.0),
]
SCI = [  # eval_sci.py (Sci): (prediction, answer, image, question, score); all together: 61.54%
    ("B", "B", "Sci/images/AI2D_123.png", "Which label shows the sun?", 1.0),
    ("B.", "B", "Sci/images/AI2D_124.png", "Which label shows the moon?", 0.0),  # exact for AI2D
    ("a", "A", "images/TQA_7.png", "Which is a mammal?", 1.0),
    ("yes", "Yes", "VQA_3.jpg", "Is this a plant cell?", 1.0),
    ("no", "yes", "images/SciVerse_12_a.png", "Is the force balanced?", 0.0),
    ("texas, ohio", "Texas, Ohio, Utah", "images/MapQA_1.png", "Which states have the highest value?", 2 / 3),
    ("Texas,Ohio,Utah", "Texas, Ohio, Utah", "images/MapQA_2.png", "Which states have the highest value?", 1 / 3),
    ("It is 12%", "12", "images/MapQA_3.png", "What is the value in Texas?", 1.0),
    ("Unanswerable", "Texas", "images/MapQA_4.png", "Which states have the lowest value?", 0.0),
    ("", "Texas, Ohio", "Sci_data/images/MapQA_5.png", "Which states have the lowest value?", 0.0),
    ("ohio", "Ohio", "images/abc.png", "Which states border the lake?", 1.0),  # no "_": MapQA's rules
    ("Ohio and Utah", "utah", "images/abc.png", "Name a state with high value.", 1.0),
    ("b", "B", "images/AI2D-9.png", "Which label?", 1.0),  # "AI2D-9.png" is no AI2D prefix: containment
]


def score(name, predictions, examples):
    return get_scorer(name)(predictions, examples).per_example


@pytest.mark.parametrize(
    "name, cases, accuracy",
    [("mllm-dcl-ai2d", AI2D, 73.68), ("mllm-dcl-pvqa", PVQA, 70.0), ("mllm-dcl-finvis", FINVIS, 50.0)],
)
def test_per_example_scorers_match_mllm_cl(name, cases, accuracy):
    examples = [Example("q", "", answer, id=str(k)) for k, (_, answer, _) in enumerate(cases)]
    got = score(name, [p for p, _, _ in cases], examples)
    assert got == [expected for _, _, expected in cases]
    assert round(100 * sum(got) / len(got), 2) == accuracy


def test_sci_reads_the_image_name_and_question_as_eval_sci():
    examples = [
        Example(question, "", answer, id=str(k), meta={"image": image, "question": question})
        for k, (_, answer, image, question, _) in enumerate(SCI)
    ]
    got = score("mllm-dcl-sci", [case[0] for case in SCI], examples)
    assert got == pytest.approx([case[4] for case in SCI], abs=1e-12)
    assert round(100 * sum(got) / len(got), 2) == 61.54
