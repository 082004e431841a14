"""Scorers on concrete predictions and references."""

from __future__ import annotations

import pytest

from lcia.data.schema import Example
from lcia.scorers import SCORERS, Scored, get_scorer
from lcia.scorers.basic import (
    contains,
    exact_match,
    extract_number,
    extract_option,
    multiple_choice,
    normalize,
    normalize_vqa,
    numeric_match,
    rouge_l,
    vqa_accuracy,
)


def test_normalize_is_squad_normalisation():
    assert normalize("  The Quick, brown   fox!  ") == "quick brown fox"
    assert normalize("An apple a day") == "apple day"


@pytest.mark.parametrize(
    "prediction, references, expected",
    [
        ("Yes", ["Yes."], 1.0),
        ("no", ["Yes.", "No."], 1.0),  # best over references
        ("The Eiffel Tower!", ["eiffel tower"], 1.0),
        ("Yes, it is", ["Yes."], 0.0),
        ("Paris", "Paris", 1.0),  # a bare string is one reference
    ],
)
def test_exact_match(prediction, references, expected):
    assert exact_match(prediction, references) == expected


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),
        ("B.", "B"),
        ("(B)", "B"),
        ("The answer is B", "B"),
        ("Answer: (c)", "C"),
        ("answer is d", "D"),
        ("b) a triangle", "B"),
        ("[e]", "E"),
        ("I think C is right", "C"),
        ("The answer is a.", "A"),
        ("A", "A"),
        ("A bird", None),  # article, not option A
        ("It is a dog", None),
        ("e.g. a dog", None),
        ("I'd go", None),
        ("no idea", None),
    ],
)
def test_extract_option(text, letter):
    assert extract_option(text) == letter


def test_multiple_choice():
    assert multiple_choice("The answer is D", ["D."]) == 1.0
    assert multiple_choice("(d)", ["D"]) == 1.0
    assert multiple_choice("C. a square", ["D."]) == 0.0
    assert multiple_choice("I do not know", ["A."]) == 0.0
    with pytest.raises(ValueError, match="no option letter"):
        multiple_choice("A", ["a square"])


@pytest.mark.parametrize(
    "text, number",
    [
        ("109", 109.0),
        ("-10", -10.0),
        ("The result is −4.", -4.0),  # unicode minus
        ("1,234.5 apples", 1234.5),
        ("+7", 7.0),
        ("5-3", 5.0),  # a hyphen after a digit is not a sign
        ("three birds and 4 cats", 3.0),  # first number, words and digits alike
        ("Seventeen", 17.0),
        ("twenty", 20.0),
        ("someone", None),  # "one" inside a word is not a number
        ("no number", None),
    ],
)
def test_extract_number(text, number):
    assert extract_number(text) == number


def test_numeric_match():
    assert numeric_match("The answer is 109.", ["109"]) == 1.0
    assert numeric_match("-10", ["-10"]) == 1.0
    assert numeric_match("3", ["three", "3"]) == 1.0
    assert numeric_match("three", ["3"]) == 1.0
    assert numeric_match("2.0", ["2"]) == 1.0
    assert numeric_match("10", ["-10"]) == 0.0
    assert numeric_match("I cannot say", ["4"]) == 0.0
    with pytest.raises(ValueError, match="holds no number"):
        numeric_match("4", ["many"])


def test_rouge_l():
    # Normalised: "cat sat on mat" vs "cat is on mat"; LCS "cat on mat" = 3, P = R = 3/4, F1 = 0.75.
    assert rouge_l("The cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(0.75)
    # "quick fox" vs "quick brown fox": LCS 2, P = 2/2, R = 2/3, F1 = 2 * 1 * (2/3) / (1 + 2/3) = 0.8.
    assert rouge_l("quick fox", ["unrelated", "quick brown fox"]) == pytest.approx(0.8)
    assert rouge_l("Same text.", ["same text"]) == 1.0
    assert rouge_l("nothing shared", ["other words"]) == 0.0
    assert rouge_l("", ["words"]) == 0.0
    assert rouge_l("The.", ["a"]) == 1.0  # both normalise to nothing


def test_normalize_vqa():
    assert normalize_vqa("Two dogs.") == "2 dogs"
    assert normalize_vqa("I don't know, 1,000 people: a t-shirt 3.5!") == "i dont know 1000 people t shirt 3.5"


def test_vqa_accuracy():
    assert vqa_accuracy("Two", ["2"]) == 1.0  # single reference: exact match after normalisation
    assert vqa_accuracy("red", ["blue"]) == 0.0
    ten = ["2", "two", "2", "3", "3", "3", "3", "4", "4", "4"]
    assert vqa_accuracy("2", ten) == 1.0  # 3 matches: min(1, 3/3)
    assert vqa_accuracy("4 ", ten) == 1.0
    assert vqa_accuracy("yes", ["yes", "no", "no", "no"]) == pytest.approx(1 / 3)
    assert vqa_accuracy("yes", ["yes", "no"]) == pytest.approx(1 / 2)  # two references: threshold 2


def test_contains():
    assert contains("I think the answer is New York City.", ["new york"]) == 1.0
    assert contains("concatenate", ["cat"]) == 0.0  # whole words only
    assert contains("a red car", ["blue", "Red car"]) == 1.0
    assert contains("something", ["The."]) == 0.0  # a reference that normalises to nothing
    assert contains("The", ["a"]) == 1.0


def test_registry_and_lookup():
    assert {"exact", "mc", "numeric", "rougeL", "vqa", "contains"} <= set(SCORERS)
    matching = {"mc": ("B", ["B."]), "numeric": ("3", ["three"])}
    for name in ("exact", "mc", "numeric", "rougeL", "vqa", "contains"):
        prediction, references = matching.get(name, ("Yes", ["Yes."]))
        examples = [Example("q", "", references[0])] * 2
        scored = get_scorer(name)([prediction, "zzz"], examples)
        assert scored == Scored([1.0, 0.0]), name
    with pytest.raises(ValueError, match="unknown scorer 'no-such'.*exact.*rougeL"):
        get_scorer("no-such")


def test_no_references_is_an_error():
    with pytest.raises(ValueError, match="no reference"):
        exact_match("x", [])
