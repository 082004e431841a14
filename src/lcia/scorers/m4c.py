"""TextVQA's soft accuracy over ten human answers: ``m4c-textvqa``, a port of ``TextVQAAccuracyEvaluator`` and
its ``EvalAIAnswerProcessor`` in ``m4c_evaluator.py`` (zackschen/CoIN ``ETrain/Eval/LLaVA/CoIN/``, commit
4122465517c2; the same file as LLaVA's and JingyangQiao/CoIN's ``llava/eval/m4c_evaluator.py``), which CoIN's
``eval_textvqa.py`` runs on the answers of ``TextVQA_0.5.1_val.json``.

Both the answer and the human answers are normalised as EvalAI does (lower case; "," "?" dropped; punctuation
removed or turned into spaces; periods not before a digit dropped; number words zero-ten and "none" to digits;
articles dropped; contractions restored: "dont" -> "don't"). A human answer's score is the mean, over the ten
ways of leaving one human out, of min(1, matches among the other nine / 3): the standard VQA accuracy. The
model's answer scores what the identical human answer scores, 0 if none matches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lcia.scorers.base import per_example

# Contracted forms whose spellings without an apostrophe EvalAI restores. A form with one apostrophe is restored
# from its spelling without it; a form with more from each spelling that lacks exactly one of them ("couldnt've"
# and "couldn'tve" -> "couldn't've"). The capitalised forms never match: answers are lower-cased first.
_CONTRACTED = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock 'ow's'at oughtn't shan't she'd've should've shouldn't shouldn't've "
    "somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've "
    "something'll that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas "
    "wasn't we'd've we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've "
    "who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd "
    "you'd've you'll you're you've"
).split()
# The table's irregular entries: two map a form to itself and one maps a contraction to its spelling without
# the apostrophe.
_IRREGULAR = {"let's": "let's", "she's": "she's", "somebody'd": "somebodyd"}


def _contractions() -> dict[str, str]:
    table = dict(_IRREGULAR)
    for form in _CONTRACTED:
        cuts = [i for i, ch in enumerate(form) if ch == "'"]
        if len(cuts) == 1:
            table[form.replace("'", "")] = form
        else:
            table.update({form[:i] + form[i + 1 :]: form for i in cuts})
    return table


CONTRACTIONS = _contractions()
NUMBER_MAP = {word: str(n) for n, word in enumerate("zero one two three four five six seven eight nine ten".split())}
NUMBER_MAP["none"] = "0"
ARTICLES = {"a", "an", "the"}
PUNCTUATIONS = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
# EvalAI's period pattern: its "(?!<=\d)" is a look-ahead (meant as a look-behind) that never fires before a
# period, so any period not followed by a digit goes; re.UNICODE passed as sub's count caps it at 32 of them.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIOD_COUNT = int(re.UNICODE)
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")


def _punctuation(text: str) -> str:
    """A mark next to a space (or any mark, in a text with a comma between digits) is removed, others become a
    space; checked on the text as given, applied one mark after another."""
    out = text
    digit_comma = _COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATIONS:
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_answer(answer: str) -> str:
    """An answer as EvalAI's answer processor leaves it."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = _punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    words = [NUMBER_MAP.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def answer_scores(answers: Sequence[str]) -> dict[str, float]:
    """Each distinct normalised human answer's soft score, left-one-out over the humans."""
    processed = [process_answer(a) for a in answers]
    scores = {}
    for unique in set(processed):
        matches = sum(a == unique for a in processed)
        # Leaving out a human who gave ``unique`` leaves matches - 1 others; leaving out any other leaves all.
        left_out = [min(1.0, (matches - (a == unique)) / 3) for a in processed]
        scores[unique] = sum(left_out) / len(left_out)
    return scores


@per_example("m4c-textvqa")
def textvqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """The soft score of the human answer the prediction matches after normalisation (CoIN's data: ten)."""
    if isinstance(references, str) or not references:
        raise ValueError(f"TextVQA scores against its human answers, got {references!r}")
    return answer_scores(references).get(process_answer(prediction), 0.0)
