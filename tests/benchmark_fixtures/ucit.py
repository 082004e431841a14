"""A miniature UCIT copy in the exact on-disk layout of its Hugging Face release (HaiyangGuo/UCIT, as
HiDe-LLaVA's README lays it out), built at test time: all six tasks with a few records each, small generated
images where the release's files point, and the caption tasks' COCO caption files.

    <root>/instructions/{ImageNet-R, ArxivQA, VizWiz, IconQA, CLEVR, Flickr30k}/
        train.json | train_4w.json | train_brief_4w.json, test_3000.json, val_coco_type_3000.json (captions)
    <root>/datasets/{ImageNet-R, ArxivQA, VizWiz, IconQA, CLEVR, Flickr30k}/...

``layout="mcitlib"`` writes MCITlib's instead: ``<root>/{datasets, ImageNet-R, ArxivQA, VizWiz, IconQA,
CLEVR-Math, Flickr30k}`` with ``train.json`` and ``test.json`` in each task folder. As in the release, the
training records of VizWiz, IconQA and Flickr30k carry ``question_id`` rather than ``id``, and VizWiz, CLEVR
and Flickr30k repeat ids.
"""

from __future__ import annotations

from pathlib import Path

from benchmark_fixtures.common import square_image, write_json

COLORS = [(220, 30, 30), (30, 30, 220), (30, 200, 30)]
SHORT = "Answer the question using a single word or phrase."
ARXIV = "Which trend does the plot show?\nA. rising\nB. falling\nC. flat\nAnswer with the option's letter."
CAPTIONS = [
    ["a red square on a white background", "a red box", "a small red square"],
    ["a blue square on a white background", "a blue box"],
    ["a green square in the middle of a white picture", "a green box", "green square"],
]
# task -> (folder in the release, in MCITlib; train file in the release; image path of record i; question;
# answer of record i; the training records' id field; ids repeat)
TASKS = {
    "ImageNet-R": ("ImageNet-R", "ImageNet-R", "train.json", "ImageNet-R/{split}/n0144353{c}/art_{i}.jpg",
                   f"What is the object in the image?\n{SHORT}", lambda i: ["goldfish", "tench", "hammerhead"][i % 3],
                   "id", False),
    "ArxivQA": ("ArxivQA", "ArxivQA", "train_4w.json", "ArxivQA/images/1911.0285{i}_{split}.jpg", ARXIV,
                lambda i: "ABC"[i % 3], "id", False),
    "VizWiz-caption": ("VizWiz", "VizWiz", "train.json", "VizWiz/{split}/VizWiz_{split}_{i:08d}.jpg",
                       "Generate a brief caption for the image.", lambda i: CAPTIONS[i % 3][0], "question_id", True),
    "IconQA": ("IconQA", "IconQA", "train.json", "IconQA/iconqa_data/iconqa/{split}/choose_txt/{i}/image.png",
               f"How many squares are there?\n{SHORT}", lambda i: str(i % 3 + 1), "question_id", False),
    "CLEVR-Math": ("CLEVR", "CLEVR-Math", "train_4w.json", "CLEVR/images/{split}/CLEVR_{split}_{i:06d}.png",
                   f"Subtract all red cubes. How many objects are left?\n{SHORT}", lambda i: str(i % 3), "id", True),
    "Flickr30k": ("Flickr30k", "Flickr30k", "train_brief_4w.json", "Flickr30k/{split}/10000927{i}.jpg",
                  "Please describe the image briefly.", lambda i: CAPTIONS[i % 3][0], "question_id", True),
}  # fmt: skip
CAPTION_TASKS = ("VizWiz-caption", "Flickr30k")


def make_ucit(root: Path, layout: str = "release", per_task: int = 3) -> Path:
    """Write UCIT under ``root`` in the release's layout (or ``"mcitlib"``); ``per_task`` training and test
    records per task. Returns ``root``."""
    for task, (release, mcitlib, train_name, image, question, answer, id_field, repeat) in TASKS.items():
        folder = root / "instructions" / release if layout == "release" else root / mcitlib
        folder.mkdir(parents=True, exist_ok=True)
        train, test = [], []
        for i in range(per_task):
            train_image = image.format(split="train", i=i, c=i % 3)
            test_image = image.format(split="test" if task != "VizWiz-caption" else "val", i=i, c=i % 3)
            square_image(root / "datasets" / train_image, COLORS[i % 3])
            square_image(root / "datasets" / test_image, COLORS[i % 3])
            record_id = f"{task}-{i // 2 if repeat else i}"
            turns = [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer(i)}]
            train.append({id_field: record_id, "image": train_image, "conversations": turns})
            test.append({"question_id": f"{task}-test-{i}", "image": test_image, "text": question, "answer": answer(i)})
        write_json(folder / (train_name if layout == "release" else "train.json"), train)
        write_json(folder / ("test_3000.json" if layout == "release" else "test.json"), test)
        if task in CAPTION_TASKS:
            write_json(folder / "val_coco_type_3000.json", coco_captions(test, task == "VizWiz-caption"))
    return root


def coco_captions(test: list[dict], categories: bool) -> dict:
    """The COCO caption file of a caption task's test records: image i + 1 is test record i (eval_caption.py
    numbers predictions so); VizWiz's file has a category, Flickr30k's none."""
    images = [{"id": k + 1, "file_name": Path(record["image"]).name} for k, record in enumerate(test)]
    annotations = []
    for k in range(len(test)):
        for caption in CAPTIONS[k % 3]:
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "caption": caption})
    data = {"images": images, "annotations": annotations}
    if categories:
        data["categories"] = [{"id": 1, "name": "captioning"}]
        for annotation in annotations:
            annotation["category_id"] = 1
    return data
