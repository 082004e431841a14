"""TRACE's scorers, ported from ``metrics.py`` and ``evaluations/eval_*.py`` of BeyonderXX/TRACE (commit 462e39f).

TRACE compares each raw answer with its reference and skips a pair in which either side is the empty string:
a skipped pair scores 0 but still counts in the mean (every ``caculate_*`` divides by the number of answers).
The cell of each task is the per-example score whose mean is the number the paper reports:

* ``trace-accuracy`` (C-STANCE, FOMC, NumGLUE-cm, NumGLUE-ds): the answer equals the reference exactly.
* ``trace-scienceqa``: the first character (the option letter) equals the reference's; BLEU-1/4 and ROUGE-L of
  the reasoning (from the third character on) are task-level metrics. An empty answer, on which TRACE's
  ``resolve`` raises IndexError, scores 0.
* ``trace-rougeL`` (MeetingBank): ROUGE-L F of the ``rouge`` package (1.0.1), called as TRACE calls it, with the
  reference as its hypothesis; BLEU-1/4 too. A text with no sentence left after ``rouge`` splits it on "."
  (e.g. "..."), on which ``rouge`` raises ValueError, scores 0.
* ``trace-py150``: ``eval_Py150.postprocess`` on both sides, then fuzzywuzzy's ``fuzz.ratio`` (an integer
  0..100; TRACE installs fuzzywuzzy without python-Levenshtein, so it is difflib's SequenceMatcher ratio),
  divided by 100.
* ``trace-sari`` (20Minuten): sentence SARI of Hugging Face's ``sari`` metric, which TRACE loads with
  ``datasets.load_metric("sari")`` (:func:`sentence_sari`), against the example's prompt as the source
  (``Example.meta["source"]``), divided by 100; BLEU-1/4 and ROUGE-L too.

Task-level metrics carry TRACE's names and scales (``accuracy``, ``bleu-1``, ``bleu-4``, ``rouge-L`` in [0, 1];
``similarity`` and ``sari`` in [0, 100]).
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from functools import cache

from lcia.data.schema import Example
from lcia.scorers.base import Scored, register_scorer


def _pairs(predictions: Sequence[str], examples: Sequence[Example]) -> list[tuple[str, str]]:
    return [(p, ex.output) for p, ex in zip(predictions, examples, strict=True)]


def _skipped(prediction: str, target: str) -> bool:
    return prediction == "" or target == ""


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# --- BLEU and ROUGE-L as metrics.py computes them ------------------------------------------------


def _bleu_tokens(text: str) -> list[str]:
    return [t for t in re.split(r"\s|\.", text) if t]


def bleu(prediction: str, target: str, n: int) -> float:
    """NLTK's sentence BLEU-n (uniform weights, no smoothing) on TRACE's tokens; 0 for a skipped pair."""
    if _skipped(prediction, target):
        return 0.0
    from nltk.translate.bleu_score import sentence_bleu  # imported on first use

    with warnings.catch_warnings():  # NLTK warns on every n-gram order without a match
        warnings.simplefilter("ignore")
        return float(sentence_bleu([_bleu_tokens(target)], _bleu_tokens(prediction), (1.0 / n,) * n))


@cache
def _rouge():
    from rouge import Rouge  # imported on first use

    return Rouge(metrics=["rouge-l"])


def rouge_l(prediction: str, target: str) -> float:
    """``score_rouge(target, prediction)``: the ``rouge`` package's ROUGE-L F; 0 for a skipped pair."""
    if _skipped(prediction, target):
        return 0.0
    try:
        return float(_rouge().get_scores(target, prediction, avg=True)["rouge-l"]["f"])
    except ValueError:  # no sentence left on one side; TRACE stops here
        return 0.0


def _text_metrics(pairs: list[tuple[str, str]]) -> dict[str, float]:
    return {
        "bleu-1": _mean([bleu(p, t, 1) for p, t in pairs]),
        "bleu-4": _mean([bleu(p, t, 4) for p, t in pairs]),
        "rouge-L": _mean([rouge_l(p, t) for p, t in pairs]),
    }


# --- SARI as Hugging Face's sari.py computes it --------------------------------------------------


@cache
def _tokenize_13a():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a  # imported on first use

    return Tokenizer13a()


def _ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision == 0 and recall == 0 else 2 * precision * recall / (precision + recall)


def _sari_ngram(source: list[str], output: list[str], references: list[list[str]]) -> tuple[float, float, float]:
    """(keep F1, deletion precision, addition F1) of one n-gram order, as sari.py's ``SARIngram``: source and
    output counts are weighted by the number of references; an operation with nothing to score counts 1."""
    refs = Counter(gram for ref in references for gram in ref)
    src = Counter({g: c * len(references) for g, c in Counter(source).items()})
    out = Counter({g: c * len(references) for g, c in Counter(output).items()})
    kept, kept_all = src & out, src & refs
    kept_good = kept & refs
    keep_p = sum(kept_good[g] / kept[g] for g in kept_good) / len(kept) if kept else 1.0
    # sari.py's fix of the keep recall: good kept n-grams over all reference-kept ones, counted with repeats
    keep_r = sum(kept_good.values()) / sum(kept_all.values()) if kept_all else 1.0
    deleted = src - out
    deleted_good = deleted - refs
    del_p = sum(deleted_good[g] / deleted[g] for g in deleted_good) / len(deleted) if deleted else 1.0
    added, added_all = set(out) - set(src), set(refs) - set(src)
    added_good = added & set(refs)
    add_p = len(added_good) / len(added) if added else 1.0
    add_r = len(added_good) / len(added_all) if added_all else 1.0
    return _f1(keep_p, keep_r), del_p, _f1(add_p, add_r)


def sentence_sari(source: str, prediction: str, references: Sequence[str]) -> float:
    """SARI of one simplification in [0, 1]: sari.py's ``SARIsent`` on texts lowercased and 13a-tokenised by
    sacrebleu (its ``normalize``), tokens split on single spaces, n-gram orders 1 to 4 averaged."""
    tokenize = _tokenize_13a()
    sides = [tokenize(text.lower()).split(" ") for text in (source, prediction, *references)]
    scores = [
        _sari_ngram(*(_ngrams(s, n) for s in sides[:2]), [_ngrams(r, n) for r in sides[2:]]) for n in (1, 2, 3, 4)
    ]
    return sum(sum(order[k] for order in scores) / 4 for k in range(3)) / 3


# --- The scorers ----------------------------------------------------------------------------------


def exact(prediction: str, target: str) -> float:
    """``caculate_accuracy`` for one pair."""
    return float(not _skipped(prediction, target) and prediction == target)


@register_scorer("trace-accuracy")
def trace_accuracy(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    per_example = [exact(p, t) for p, t in _pairs(predictions, examples)]
    return Scored(per_example, {"accuracy": _mean(per_example)})


@register_scorer("trace-scienceqa")
def trace_scienceqa(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    pairs = _pairs(predictions, examples)
    per_example = [exact(p[:1], t[:1]) for p, t in pairs]
    metrics = _text_metrics([(p[2:], t[2:]) for p, t in pairs])
    return Scored(per_example, {**metrics, "accuracy": _mean(per_example)})


@register_scorer("trace-rougeL")
def trace_rouge_l(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    pairs = _pairs(predictions, examples)
    return Scored([rouge_l(p, t) for p, t in pairs], _text_metrics(pairs))


_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def py150_postprocess(code: str) -> str:
    """``eval_Py150.postprocess``: bare literal placeholders dropped (numbers become 0), named ones unwrapped."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    for kind, value in _LITERAL.findall(code):
        code = code.replace(f"<{kind}_LIT:{value}>", value)
    return code


def fuzz_ratio(prediction: str, target: str) -> int:
    """fuzzywuzzy 0.18's ``fuzz.ratio`` on its pure-Python path (equal: 100, an empty side: 0)."""
    if prediction == target:
        return 100
    if not prediction or not target:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, prediction, target).ratio()))


@register_scorer("trace-py150")
def trace_py150(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    pairs = [(py150_postprocess(p), py150_postprocess(t)) for p, t in _pairs(predictions, examples)]
    per_example = [0.0 if _skipped(p, t) else fuzz_ratio(p, t) / 100 for p, t in pairs]
    return Scored(per_example, {"similarity": 100 * _mean(per_example)})


@register_scorer("trace-sari")
def trace_sari(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    """SARI against the prompt (TRACE passes its inputs as the sources) and the one reference."""
    pairs = _pairs(predictions, examples)
    per_example = [sentence_sari(_source(ex), p, [ex.output]) for p, ex in zip(predictions, examples)]
    return Scored(per_example, {**_text_metrics(pairs), "sari": 100 * _mean(per_example)})


def _source(example: Example) -> str:
    return example.meta.get("source", example.input)
