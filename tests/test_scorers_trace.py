"""TRACE's scorers (lcia.scorers.trace) on crafted answers, against the numbers TRACE's own evaluation code gave.

Every expected value below was computed by running BeyonderXX/TRACE at commit 462e39f616134f4f819efeb3baea8638c03c7db4:
``evaluations/eval_{CStance,FOMC,NumGLUE_cm,ScienceQA,MeetingBank,Py150,20Minuten}.py`` with its ``metrics.py``,
in TRACE's pinned environment (nltk 3.5, rouge 1.0.1, fuzzywuzzy 0.18.0 without python-Levenshtein, as its
requirements.txt installs it) and ``datasets.load_metric("sari")`` (datasets 2.14.7, sacrebleu 2.3.1) pointed at
Hugging Face's ``metrics/sari/sari.py`` on disk; each task's whole list for the task-level numbers, and each
answer alone (a one-element list) for the per-example cell. BLEU-4 values that NLTK 3.5 returns as 1e-78 and
smaller (no 4-gram match) are 0 from newer NLTK: compared with an absolute tolerance.
"""

from __future__ import annotations

import pytest

from lcia.data.schema import Example
from lcia.scorers import get_scorer
from lcia.scorers.trace import fuzz_ratio, py150_postprocess, sentence_sari

SOURCE = "Provide a simplified version of the following paragraph in German.\n\n"

# (scorer, predictions, references, sources, TRACE's number for each answer alone, TRACE's task-level numbers)
CASES = {
    "accuracy: exact, case, spaces and punctuation count; empty answers score 0": (
        "trace-accuracy",
        ["A", "B", "", "C.", " A", "a"],
        ["A", "A", "B", "C", "A", "A"],
        None,
        [1, 0, 0, 0, 0, 0],
        {"accuracy": 1 / 6},
    ),
    "accuracy: C-STANCE": ("trace-accuracy", ["B", "B", "C"], ["B", "A", "C"], None, [1, 0, 1], {"accuracy": 2 / 3}),
    "accuracy: NumGLUE, no number parsing": (
        "trace-accuracy",
        ["12", "12.0", "The answer is 12"],
        ["12", "12", "12"],
        None,
        [1, 0, 0],
        {"accuracy": 1 / 3},
    ),
    "ScienceQA: the first character decides; BLEU/ROUGE-L on the reasoning": (
        "trace-scienceqa",
        ["A\nBecause plants need light to grow.", "B\nThe magnet attracts iron.", "C", "Answer: A\nbecause"],
        ["A\nBecause plants need sunlight to grow.", "A\nThe magnet attracts iron objects.",
         "C\nIt is the only option left.", "A\nbecause"],
        None,
        [1, 0, 1, 1],
        {"bleu-1": 0.4863668624345179, "bleu-4": 0.19470019576785122, "rouge-L": 0.5555555521334877, "accuracy": 0.75},
    ),
    "MeetingBank: ROUGE-L of the rouge package, empty answer skipped": (
        "trace-rougeL",
        ["The council approved the budget.", "", "city hall", "The the the council.",
         "Motion passed 5 to 2. Council member Smith abstained"],
        ["The council approved the new budget for the city.", "something",
         "The city hall was closed. It reopens Monday.", "The council voted.",
         "The motion passed five to two. Smith abstained."],
        None,
        [0.7692307644970415, 0, 0.39999999680000003, 0.6666666616666668, 0.4705882303114187],
        {"bleu-1": 0.288712095385906, "bleu-4": 0.06354471150216286, "rouge-L": 0.4612971306550254},
    ),
    "Py150: literals unwrapped, fuzz.ratio rounded; an answer emptied by postprocess scores 0": (
        "trace-py150",
        ["x = <NUM_LIT>", "print(<STR_LIT:hello>)", "<STR_LIT>", "return self . _name",
         "for i in range ( <NUM_LIT:10> ) :", "import os"],
        ["x = 0", "print(hello)", "x", "return self . name", "for i in range ( 10 ) :", "import sys"],
        None,
        [1, 1, 0, 0.97, 1, 0.84],
        {"similarity": 80.16666666666667},
    ),
    "Py150: a target over 200 characters (difflib's autojunk)": (
        "trace-py150",
        ["self . assertEqual ( response . status_code , <NUM_LIT> ) ; self . assertEqual ( response . json ( ) [ "
         "<STR_LIT:name> ] , <STR_LIT:test> ) ; self . assertEqual ( response . json ( ) [ <STR_LIT:id> ] , "
         "<NUM_LIT:1> ) ; self . assertTrue ( response . ok )"],
        ["self . assertEqual ( response . status_code , <NUM_LIT:200> ) ; self . assertEqual ( response . json ( "
         ") [ <STR_LIT:name> ] , <STR_LIT:test> ) ; self . assertEqual ( response . json ( ) [ <STR_LIT:id> ] , "
         "<NUM_LIT:1> ) ; self . assertFalse ( response . ok ) # long"],
        None,
        [0.96],
        {"similarity": 96.0},
    ),
    "20Minuten: SARI against the prompt; an empty answer still has a SARI": (
        "trace-sari",
        ["Der Hund lief schnell über die Straße.", "", "Es regnet heute stark, sagt der Wetterdienst."],
        ["Der Hund rannte am Montag über die Straße.", "Die Regierung beschliesst neue Regeln.", "Es regnet."],
        [SOURCE + "Der Hund lief am Montagmorgen sehr schnell über die stark befahrene Straße.",
         SOURCE + "Die Regierung hat neue Massnahmen beschlossen.", SOURCE + "Es regnet."],
        [0.6046807359307359, 0.47794117647058826, 0.5340909090909091],
        {"bleu-1": 0.3016375951786147, "bleu-4": 0, "rouge-L": 0.3703703675588477, "sari": 53.89042738307444},
    ),
    "20Minuten: quotes, dashes, brackets and apostrophes through sacrebleu's 13a tokens": (
        "trace-sari",
        ["Zürich wächst."],
        ["Die Stadt Zürich wächst schnell."],
        ["Vereinfache: \"Zürich\" – die Stadt (ca. 400'000 Einwohner) wächst!"],
        [0.5708333333333333],
        {"bleu-1": 0.22313016014842982, "bleu-4": 0, "rouge-L": 0.5714285673469389, "sari": 57.08333333333333},
    ),
}  # fmt: skip


def score(scorer, predictions, references, sources=None):
    sources = sources or [""] * len(references)
    examples = [Example("i", s, r, meta={"source": s}) for s, r in zip(sources, references)]
    return get_scorer(scorer)(predictions, examples)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_scores_match_traces_own_evaluation(case):
    scorer, predictions, references, sources, per_example, metrics = CASES[case]
    scored = score(scorer, predictions, references, sources)
    assert scored.per_example == pytest.approx(per_example, abs=1e-12)
    assert scored.metrics == pytest.approx(metrics, abs=1e-12)


def test_answers_on_which_trace_itself_fails_score_zero():
    # TRACE raises IndexError on an empty ScienceQA answer (resolve takes datium[0]) and ValueError from rouge on
    # a MeetingBank answer with no sentence ("..."); lcia scores those answers 0. The other answer of each pair
    # matches TRACE's number for it alone (bleu-1 1.0, rouge-L 0.999999995).
    science = score("trace-scienceqa", ["", "B\nok"], ["A\nBecause.", "B\nok"])
    assert science.per_example == [0.0, 1.0]
    assert science.metrics["rouge-L"] == pytest.approx(0.999999995 / 2) and science.metrics["bleu-1"] == 0.5
    meeting = score("trace-rougeL", ["...", "ok"], ["The council met.", "ok"])
    assert meeting.per_example == pytest.approx([0.0, 0.999999995])


def test_the_pieces():
    assert py150_postprocess("f ( <STR_LIT:a b> , <CHAR_LIT> , <NUM_LIT> , <NUM_LIT:3> )") == "f ( a b ,  , 0 , 3 )"
    assert (fuzz_ratio("abc", "abc"), fuzz_ratio("", "abc"), fuzz_ratio("abcd", "abce")) == (100, 0, 75)
    assert sentence_sari("a b c", "a b c", ["a b c"]) == pytest.approx(1.0)
