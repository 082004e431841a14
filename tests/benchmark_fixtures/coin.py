"""A miniature CoIN copy in CoIN's exact on-disk layout, built at test time: all eight tasks with a few records
each, small generated images under ``cl_dataset/`` where CoIN's data puts them, and TextVQA's annotation file
with ten answers per question.

    <root>/playground/Instructions_Original/<Task>/{train.json, test.json | val.json}   (CoIN's release)
    <root>/playground/Instructions/<Task>/...                                           (the refined release)
    <root>/playground/Instructions_Diverse/<Task>/..., Instructions_10Type/<Task>/...
    <root>/cl_dataset/{ScienceQA, TextVQA, ImageNet_withlabel, GQA, VizWiz, COCO2014, OCR-VQA}/...
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

TEST_FILES = {
    "ScienceQA": "test.json",
    "TextVQA": "val.json",
    "ImageNet": "test.json",
    "GQA": "test.json",
    "VizWiz": "val.json",
    "Grounding": "test.json",
    "VQAv2": "val.json",
    "OCRVQA": "test.json",
}
FOLDERS = {"original": "Instructions_Original", "diverse": "Instructions_Diverse", "10type": "Instructions_10Type"}
COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
SHORT = "Answer the question using a single word or phrase."
# Per task: where its images lie under cl_dataset/, the question, and the answer of record i.
TASKS = {
    "ScienceQA": (
        "ScienceQA/images/test/{i}/image.png",
        "Which color is shown?\nA. red\nB. blue\nC. green\n"
        "Answer with the option's letter from the given choices directly.",
        lambda i: "ABC"[i % 3],
    ),
    "TextVQA": ("TextVQA/train_images/t{i}.jpg", f"What is written on the sign?\n{SHORT}", lambda i: f"word{i}"),
    "ImageNet": (
        "ImageNet_withlabel/train/n0{i}/img{i}.JPEG",
        f"What is the object in the image?\n{SHORT}",
        lambda i: ["goldfish", "tench", "great white shark"][i % 3],
    ),
    "GQA": ("GQA/images/n{i}.jpg", f"What color is the square?\n{SHORT}", lambda i: list(COLORS)[i % 3]),
    "VizWiz": (
        "VizWiz/val/VizWiz_val_{i:08d}.jpg",
        "What is this?\nWhen the provided information is insufficient, respond with 'Unanswerable'.\n" + SHORT,
        lambda i: ["unanswerable", "soup", "blue"][i % 3],
    ),
    "Grounding": (
        "COCO2014/train2014/COCO_train2014_{i:012d}.jpg",
        "Please provide the bounding box coordinate of the region this sentence describes: the square.",
        lambda i: "[0.1, 0.2, 0.5, 0.6]",
    ),
    "VQAv2": (
        "COCO2014/train2014/COCO_train2014_{i:012d}.jpg",
        f"How many squares are there?\n{SHORT}",
        lambda i: ["1", "2", "yes"][i % 3],
    ),
    "OCRVQA": ("OCR-VQA/images/{i}.jpg", f"Who wrote this book?\n{SHORT}", lambda i: f"Author {i}"),
}
DIVERSE = ("Look at the picture and reply briefly.", "Give a short answer to the question about the image.")


def make_coin(root: Path, variants=("original",), refined: bool = False, per_task: int = 3) -> Path:
    """Write CoIN's layout under ``root`` for ``variants`` (the original one under ``Instructions/`` when
    ``refined``); ``per_task`` training and test records per task. Returns ``root``."""
    images = root / "cl_dataset"
    for task, (image_path, question, answer) in TASKS.items():
        for i in range(2 * per_task):
            _image(images / image_path.format(i=i), list(COLORS.values())[i % 3], task)
    for variant in variants:
        folder = "Instructions" if refined and variant == "original" else FOLDERS[variant]
        for task in TASKS:
            _write_task(root / "playground" / folder / task, task, variant, per_task)
    _textvqa_annotations(images / "TextVQA" / "TextVQA_0.5.1_val.json", per_task)
    return root


def _image(path: Path, color, task: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (32, 24) if task == "Grounding" else (16, 16), "white")
    image.paste(color, (3, 5, 16, 14))
    image.save(path)


def _question(task: str, variant: str, i: int) -> str:
    _, question, _ = TASKS[task]
    if variant == "original":
        return question
    return f"{question.split(chr(10))[0]}\n{DIVERSE[i % 2] if variant == 'diverse' else SHORT}"


def _write_task(folder: Path, task: str, variant: str, per_task: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image_path, _, answer = TASKS[task]
    train, test = [], []
    for i in range(per_task):
        record = {"id": f"{task}-train-{i}", "image": image_path.format(i=i)}
        if task == "ScienceQA" and i == per_task - 1:
            del record["image"]  # ScienceQA has text-only questions
        question = _question(task, variant, i)
        human = f"{question}\n<image>" if "image" in record and task == "ScienceQA" else f"<image>\n{question}"
        record["conversations"] = [
            {"from": "human", "value": human if "image" in record else question},
            {"from": "gpt", "value": answer(i)},
        ]
        train.append(record)
    for i in range(per_task, 2 * per_task):
        record = {
            "question_id": i if task in ("TextVQA", "VQAv2") else f"{task}-{i}",
            "image": image_path.format(i=i),
            "text": _question(task, variant, i),
            "answer": answer(i),
        }
        if task == "Grounding":
            record |= {"answer_bbox": answer(i), "size": [32, 24]}
        if task == "ScienceQA" and i == 2 * per_task - 1:
            del record["image"]
        test.append(record)
    (folder / "train.json").write_text(json.dumps(train, indent=1), encoding="utf-8")
    (folder / TEST_FILES[task]).write_text(json.dumps(test, indent=1), encoding="utf-8")


def _textvqa_annotations(path: Path, per_task: int) -> None:
    """TextVQA's val annotations: ten human answers per question, the record's answer among them."""
    data = [
        {"question_id": i, "image_id": f"t{i}", "answers": [f"word{i}"] * 7 + [f"word {i}"] * 2 + ["sign"]}
        for i in range(per_task, 2 * per_task)
    ]
    path.write_text(json.dumps({"dataset_name": "textvqa", "dataset_split": "val", "data": data}), encoding="utf-8")
