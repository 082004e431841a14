"""Referring-expression grounding scored as CoIN scores it: the answer box must overlap the gold box with
IoU > 0.5. A port of ``eval_grounding.py`` (zackschen/CoIN ``ETrain/Eval/LLaVA/CoIN/``, commit 4122465517c2;
JingyangQiao/CoIN ``llava/eval/CoIN/`` is the same).

Boxes are ``[x1, y1, x2, y2]`` normalised to the image padded to a square (LLaVA's ``pad`` aspect ratio), as
the gold ``answer_bbox`` of CoIN's test file is; both are scaled by the longer side of the image (the
record's ``size``, in ``Example.meta``) before the IoU, as the script does. An answer that does not parse as
four numbers scores 0 (the script skips it but still counts it).

Two scorers differ only in how the answer is parsed:

* ``coin-grounding`` (CoIN's parser, what its papers report): the brackets are removed and *then* the first
  and last characters are sliced off (``[1:-1]``, meant for the brackets), so "[0.12, 0.34, 0.56, 0.78]" reads
  as 0.12, 0.34, 0.56, 0.7 and "[0.1,0.2,0.5,0.6]" as .1, 0.2, 0.5, 0. ; an answer with spaces inside its
  brackets ("[ 0.1, ... 0.6 ]") loses only the spaces.
* ``grounding``: the same without the slice, every coordinate as written.
"""

from __future__ import annotations

from collections.abc import Sequence

from lcia.data.schema import Example
from lcia.scorers.base import Scored, register_scorer


def parse_box(text: str, coin_slice: bool) -> list[float] | None:
    """The four numbers of an answer box, or None if it does not parse as CoIN's script parses it."""
    text = text.replace("[", "").replace("]", "")
    if coin_slice:
        text = text[1:-1]
    try:
        box = [float(x) for x in text.split(",")]
    except ValueError:
        return None
    return box if len(box) == 4 else None


def gold_box(answer_bbox: str | Sequence[float]) -> list[float]:
    """The gold box of a test record's ``answer_bbox`` (a string "[x1, y1, x2, y2]" or a list of numbers)."""
    if isinstance(answer_bbox, str):
        return [float(x) for x in answer_bbox.replace("[", "").replace("]", "").split(",")]
    return [float(x) for x in answer_bbox]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """``calculate_iou`` of the script: areas from the corners as given (a flipped box has a negative area)."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0


def box_hit(prediction: str, meta: dict, coin_slice: bool) -> float:
    """1.0 if the answer's box overlaps the gold box with IoU > 0.5."""
    box = parse_box(prediction.strip(), coin_slice)
    if box is None:
        return 0.0
    side = max(meta["size"])
    return float(iou([x * side for x in box], [x * side for x in gold_box(meta["answer_bbox"])]) > 0.5)


def _scorer(coin_slice: bool):
    def score(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
        for ex in examples:
            if "answer_bbox" not in ex.meta or "size" not in ex.meta:
                raise ValueError(f"example {ex.id!r}: grounding needs answer_bbox and size in its meta")
        pairs = zip(predictions, examples, strict=True)
        return Scored([box_hit(p, ex.meta, coin_slice) for p, ex in pairs])

    return score


coin_grounding = register_scorer("coin-grounding")(_scorer(coin_slice=True))
grounding = register_scorer("grounding")(_scorer(coin_slice=False))
