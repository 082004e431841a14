"""CoIN's scorers on crafted answers. Every expected score was obtained by running CoIN's own evaluation scripts
on the case: zackschen/CoIN at commit 4122465517c29af08e730619c38852146aaf1a86, ``ETrain/Eval/LLaVA/CoIN/``
(eval_science_qa.py with a problems.json / pid_splits.json holding the question; eval_textvqa.py with
m4c_evaluator.py on a TextVQA-style annotation file, the exact float from its TextVQAAccuracyEvaluator;
convert_gqa_for_eval.py then eval_gqa.py on a testdev_balanced_questions.json; eval_ImagetNet.py,
eval_vizwiz.py, eval_vqav2.py, eval_ocrvqa.py, eval_grounding.py), one case per run, each script's printed
accuracy being the case's score. The ``grounding`` column (the parser without CoIN's slice) came from the same
eval_grounding.py with ``pred_bbox[1:-1].split`` replaced by ``pred_bbox.split``. JingyangQiao/CoIN
``llava/eval/CoIN/`` (commit efa9cb493db7) holds the same scoring code.
"""

from __future__ import annotations

import pytest

from lcia.data.schema import Example
from lcia.scorers import get_scorer
from lcia.scorers.coin import gqa, imagenet, ocrvqa, scienceqa, scienceqa_letter, upper_exact
from lcia.scorers.grounding import box_hit, gold_box, parse_box
from lcia.scorers.m4c import CONTRACTIONS, process_answer, textvqa_accuracy


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [
        ("A", "A", 1.0),
        ("B. The lion.", "B", 1.0),  # a letter followed by ". "
        ("The answer is C.", "C", 1.0),  # the first one-character word
        ("", "A", 0.0),  # empty: FAILED
        ("a", "A", 1.0),  # upper-cased
        ("I think it is b", "B", 0.0),  # the first one-character word is "I"
        ("(B)", "B", 1.0),
        ("B.", "B", 1.0),
        ("2", "A", 0.0),
        ("E", "A", 0.0),  # a letter past the choices
        ("Answer: D", "D", 1.0),
        ("b. lion", "B", 1.0),
        ("the answer is (A).", "A", 1.0),
        ("C. ", "C", 1.0),
    ],
)
def test_scienceqa_as_eval_science_qa(prediction, gold, expected):
    assert scienceqa(prediction, [gold]) == expected


def test_scienceqa_reads_letters_as_the_script_does():
    assert [scienceqa_letter(p) for p in ("D", "D. x", "It is a", "!!")] == ["D", "D", "A", "FAILED"]


TEN = {
    "cola": ["coca-cola"] * 4 + ["coca cola"] * 3 + ["coke"] * 3,
    "two": ["two"] * 2 + ["2"] * 5 + ["3"] * 3,
    "dont": ["dont walk"] * 3 + ["don't walk"] * 6 + ["walk"],
    "unans": ["unanswerable"] * 10,
    "mcd": ["mcdonald's"] * 5 + ["mcdonalds"] * 4 + ["the mcdonalds"],
    "dec": ["3.5"] * 4 + ["3.50"] * 6,
    "one": ["stop"] + ["go"] * 9,
}


@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("Coca-Cola", "cola", 1.0),  # "-" between letters becomes a space
        ("coca cola", "cola", 1.0),
        ("Coke.", "cola", 0.9),  # three humans: 0.9 after leaving each out in turn
        ("the coke", "cola", 0.9),  # articles dropped
        ("", "cola", 0.0),  # empty prediction
        ("pepsi", "cola", 0.0),
        ("two", "two", 1.0),  # number words to digits
        ("Two.", "two", 1.0),
        ("three", "two", 0.9),
        ("dont walk", "dont", 1.0),  # contractions restored
        ("Don't Walk!", "dont", 1.0),
        ("do not walk", "dont", 0.0),
        ("Unanswerable", "unans", 1.0),  # unanswerable
        ("McDonald's", "mcd", 1.0),
        ("mcdonalds", "mcd", 1.0),
        ("a McDonalds", "mcd", 1.0),
        ("3.5", "dec", 1.0),  # a decimal point stays
        ("3.50.", "dec", 1.0),
        ("STOP", "one", 0.3),  # one human
        ("go", "one", 1.0),
        ("(go)", "one", 1.0),
        ("go-go", "one", 0.0),
    ],
)
def test_textvqa_as_m4c_evaluator(prediction, answers, expected):
    assert textvqa_accuracy(prediction, TEN[answers]) == pytest.approx(expected, abs=1e-12)


def test_the_answer_processor_normalises_as_evalai():
    assert process_answer("The Coca-Cola, please!") == "coca cola please"
    assert process_answer("none of the three") == "0 of 3"
    assert process_answer("It's 1,000.") == "it 's 1000"
    assert CONTRACTIONS["couldnt've"] == CONTRACTIONS["couldn'tve"] == "couldn't've"
    assert "shes" not in CONTRACTIONS and "Im" in CONTRACTIONS  # the table's own gaps and capitals


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [
        ("Yes", "yes", 1.0),
        ("yes.", "yes", 1.0),
        ("Yes..", "yes", 1.0),  # every trailing period goes
        ("the table", "table", 0.0),  # articles stay
        ("", "no", 0.0),
        ("Table", "table", 1.0),
        ("yes, it is", "yes", 0.0),
        ("Left.", "left", 1.0),
        ("t-shirt", "t-shirt", 1.0),
    ],
)
def test_gqa_as_convert_gqa_for_eval_and_eval_gqa(prediction, gold, expected):
    assert gqa(prediction, [gold]) == expected


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [
        ("goldfish", "goldfish", 1.0),
        ("a goldfish swimming", "goldfish", 1.0),
        ("Goldfish", "goldfish", 0.0),  # case-sensitive
        ("fish", "goldfish", 1.0),  # the answer inside the label counts too
        ("", "goldfish", 1.0),  # so an empty answer counts
        ("shark", "goldfish", 0.0),
        ("great white", "great white shark", 1.0),
    ],
)
def test_imagenet_as_eval_imagetnet(prediction, gold, expected):
    assert imagenet(prediction, [gold]) == expected


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [
        ("Unanswerable", "unanswerable", 1.0),
        ("blue.", "blue", 0.0),  # punctuation counts
        ("BLUE", "blue", 1.0),
        ("", "blue", 0.0),
        ("Coca Cola", "coca cola", 1.0),
        ("", "", 1.0),
    ],
)
def test_vizwiz_as_eval_vizwiz(prediction, gold, expected):
    assert upper_exact(prediction, [gold]) == expected
    assert get_scorer("coin-vizwiz")([prediction], [Example("q", "", gold)]).per_example == [expected]


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [("2", "two", 0.0), ("Yes", "yes", 1.0), ("yes.", "yes", 0.0), ("", "no", 0.0), ("Two", "two", 1.0)],
)
def test_vqav2_as_eval_vqav2(prediction, gold, expected):
    assert get_scorer("coin-vqav2")([prediction], [Example("q", "", gold)]).per_example == [expected]


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [
        ("Unanswerable", "unanswerable", 0.0),  # "Unanswerable" in the answer: wrong, whatever the gold
        ("unanswerable", "unanswerable", 1.0),
        ("The Hobbit", "the hobbit", 1.0),
        ("", "Tolkien", 0.0),
        ("Yes", "yes", 1.0),
        ("It is Unanswerable here", "no", 0.0),
    ],
)
def test_ocrvqa_as_eval_ocrvqa(prediction, gold, expected):
    assert ocrvqa(prediction, [gold]) == expected


BOX, SIZE = "[0.1, 0.2, 0.5, 0.6]", [640, 480]


@pytest.mark.parametrize(
    "prediction, box, size, coin, fixed",
    [
        ("[0.1, 0.2, 0.5, 0.6]", BOX, SIZE, 0.0, 1.0),  # CoIN's slice reads the last coordinate as "0."
        ("[0.10, 0.20, 0.50, 0.60]", BOX, SIZE, 1.0, 1.0),  # ... and here as 0.6
        ("[ 0.1, 0.2, 0.5, 0.6 ]", BOX, SIZE, 1.0, 1.0),  # a box with spaces: the slice takes only them
        ("", BOX, SIZE, 0.0, 0.0),  # empty prediction
        ("[0.1, 0.2, 0.5]", BOX, SIZE, 0.0, 0.0),
        ("the box is [0.1, 0.2, 0.5, 0.6]", BOX, SIZE, 0.0, 0.0),
        ("[0.12, 0.22, 0.52, 0.62]", BOX, SIZE, 1.0, 1.0),
        ("[1.0, 0.2, 0.5, 0.63]", BOX, SIZE, 1.0, 0.0),  # the slice makes "1.0" ".0"
        ("[0.1,0.2,0.5,0.6]", BOX, SIZE, 0.0, 1.0),
        ("[0.30, 0.40, 0.70, 0.80]", BOX, SIZE, 0.0, 0.0),
        ("[0.10, 0.20, 0.50, 0.60]", BOX, [300, 500], 1.0, 1.0),
        ("[0.5, 0.6, 0.1, 0.2]", BOX, SIZE, 0.0, 0.0),  # corners swapped
        ("[0.15, 0.25, 0.55, 0.65]", BOX, SIZE, 1.0, 1.0),
        ("[0.15, 0.25, 0.55, 0.6]", BOX, SIZE, 0.0, 1.0),
    ],
)
def test_grounding_as_eval_grounding(prediction, box, size, coin, fixed):
    meta = {"answer_bbox": gold_box(box), "size": size}
    assert box_hit(prediction, meta, coin_slice=True) == coin
    assert box_hit(prediction, meta, coin_slice=False) == fixed
    example = Example("q", "", box, meta=meta)
    assert get_scorer("coin-grounding")([prediction], [example]).per_example == [coin]
    assert get_scorer("grounding")([prediction], [example]).per_example == [fixed]


def test_the_box_parsers():
    assert parse_box("[0.12, 0.34, 0.56, 0.78]", coin_slice=True) == [0.12, 0.34, 0.56, 0.7]
    assert parse_box("[0.12, 0.34, 0.56, 0.78]", coin_slice=False) == [0.12, 0.34, 0.56, 0.78]
    assert parse_box("no box", coin_slice=False) is None
    with pytest.raises(ValueError, match="grounding needs answer_bbox and size"):
        get_scorer("coin-grounding")(["[0, 0, 1, 1]"], [Example("q", "", "[0, 0, 1, 1]")])


def test_scienceqa_reports_the_accuracy_on_questions_with_an_image():
    examples = [Example("q", "", "A", image="a.png"), Example("q", "", "B", image="b.png"), Example("q", "", "C")]
    scored = get_scorer("coin-scienceqa")(["A", "A", "C"], examples)
    assert scored.per_example == [1.0, 0.0, 1.0] and scored.metrics == {"img_accuracy": 0.5}


def test_coin_scores_one_answer():
    with pytest.raises(ValueError, match="one answer"):
        gqa("yes", ["yes", "no"])
