"""The built-in streams' scorers: ``scorer(prediction, references) -> float in [0, 1]``, one example at a time.

Every scorer takes the model's greedy output and the example's reference answers. All but ``vqa`` score
the best-matching reference (max over references); ``vqa`` counts agreeing references, as the VQA
metric does. A bare string is accepted as a single reference. Each is registered under the name a stream
file gives as ``scorer:`` (``exact``, ``mc``, ``numeric``, ``rougeL``, ``vqa``, ``contains``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Any

from lcia.scorers.base import per_example

# Number words both sides may use for small counts ("three" == "3"); zero is included because
# "zero" answers are as common as "one" in counting questions.
NUMBER_WORDS: dict[str, int] = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _references(references: Sequence[str] | str) -> list[str]:
    if isinstance(references, str):
        return [references]
    refs = list(references)
    if not refs:
        raise ValueError("no reference answers to score against")
    return refs


def normalize(text: str) -> str:
    """SQuAD answer normalisation: lowercase, drop punctuation and the articles a/an/the, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


@per_example("exact")
def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the prediction equals a reference after :func:`normalize` ("Yes" matches "Yes.")."""
    pred = normalize(prediction)
    return float(any(pred == normalize(ref) for ref in _references(references)))


@per_example("contains")
def contains(prediction: str, references: Sequence[str]) -> float:
    """1.0 if a normalised reference occurs in the normalised prediction as a run of whole words."""
    padded = f" {normalize(prediction)} "
    for ref in _references(references):
        norm = normalize(ref)
        # An empty reference (e.g. just "The.") would be "contained" in anything; it only matches emptiness.
        if (norm and f" {norm} " in padded) or (not norm and padded == "  "):
            return 1.0
    return 0.0


# A lone option letter, optionally bracketed, not part of a word, contraction or number ("e.g.", "I'd").
_OPTION = re.compile(r"(?<![\w'’.-])([(\[]?)([A-Ea-e])([)\]]?)(?![\w'’-])")
_OPTION_END = re.compile(r"\s*$|[.:](?!\w)")  # "B", "B.", "B:" but not "e.g."
_ANSWER_CUE = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*$", re.IGNORECASE)


def extract_option(text: str) -> str | None:
    """The first multiple-choice option letter (A-E, upper case) in ``text``, or None.

    A letter counts when a closing bracket follows it ("(B)", "[c]", "c)"), when "." or ":" or the end
    follows it ("B.", "... is D"), when it follows a cue word ("answer is b", "Answer: c"), or when it
    is a capital B-E on its own. A capital "A" before a word ("A bird") and a lower-case letter in
    running text ("is a dog") read as articles or words and are skipped.
    """
    for match in _OPTION.finditer(text):
        _, letter, closing = match.groups()
        accepted = (
            bool(closing)  # "(b)", "b)"; an opening bracket alone may start a phrase: "(a dog)"
            or _OPTION_END.match(text, match.end()) is not None
            or _ANSWER_CUE.search(text, 0, match.start()) is not None
            or letter in "BCDE"
        )
        if accepted:
            return letter.upper()
    return None


def _extracted_match(prediction: str, references: Sequence[str], extract: Callable[[str], Any], what: str) -> float:
    """1.0 if what ``extract`` finds in the prediction equals what it finds in a reference."""
    predicted = extract(prediction)
    for ref in _references(references):
        expected = extract(ref)
        if expected is None:  # the task is set up wrong, not the model
            raise ValueError(f"reference {ref!r} holds no {what}")
        if predicted == expected:
            return 1.0
    return 0.0


@per_example("mc")
def multiple_choice(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the option letter in the prediction is a reference's letter ("The answer is B" vs "B.")."""
    return _extracted_match(prediction, references, extract_option, "option letter A-E")


_NUMBER = re.compile(
    # digits: optional sign (not after a word character, so "5-3" is 5 then 3), thousands separators
    # only in complete groups of three, optional decimals; or a number word zero..twenty as a whole word.
    r"(?P<digits>(?:(?<![\w.])[-+−])?(?<![\d.,])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?)"
    r"|(?<![\w-])(?P<word>" + "|".join(NUMBER_WORDS) + r")(?![\w-])",
    re.IGNORECASE,
)


def extract_number(text: str) -> float | None:
    """The first number in ``text`` ("-1,234.5", "+7", "three"), or None."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    if match["word"] is not None:
        return float(NUMBER_WORDS[match["word"].lower()])
    return float(match["digits"].replace(",", "").replace("−", "-"))


@per_example("numeric")
def numeric_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the first number in the prediction equals a reference's number ("3 apples" vs "three")."""
    return _extracted_match(prediction, references, extract_number, "number")


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, one DP row at a time."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


@per_example("rougeL")
def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F1 on :func:`normalize`-d word tokens, best over references.

    Two texts that both normalise to nothing score 1.0; one empty side scores 0.0.
    """
    pred = normalize(prediction).split()
    best = 0.0
    for ref in _references(references):
        tokens = normalize(ref).split()
        if not pred or not tokens:
            best = max(best, float(pred == tokens))
            continue
        lcs = _lcs_length(pred, tokens)
        if lcs:
            precision, recall = lcs / len(pred), lcs / len(tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


_NUMBER_COMMA = re.compile(r"(?<=\d),(?=\d)")
_NON_DECIMAL_POINT = re.compile(r"(?<!\d)\.|\.(?!\d)")


def normalize_vqa(text: str) -> str:
    """VQA-style answer normalisation: lowercase, "1,000" -> "1000", apostrophes dropped ("don't" ->
    "dont"), other punctuation except decimal points -> space, number words -> digits, no articles."""
    text = _NUMBER_COMMA.sub("", text.lower().replace("'", "").replace("’", ""))
    text = _NON_DECIMAL_POINT.sub(" ", text)
    text = "".join(" " if ch in _PUNCTUATION and ch != "." else ch for ch in text)
    words = (str(NUMBER_WORDS.get(word, word)) for word in text.split() if word not in ("a", "an", "the"))
    return " ".join(words)


@per_example("vqa")
def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy min(1, matches / 3): full credit when three annotators gave the normalised answer.

    With fewer than three references the threshold is their number, so a single reference scores plain
    exact match after :func:`normalize_vqa`.
    """
    refs = _references(references)
    pred = normalize_vqa(prediction)
    matches = sum(pred == normalize_vqa(ref) for ref in refs)
    return min(1.0, matches / min(3, len(refs)))
