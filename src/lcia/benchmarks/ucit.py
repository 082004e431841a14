"""UCIT (Guo et al., ACL 2025, "HiDe-LLaVA: Hierarchical Decoupling for Continual Instruction Tuning of
Multimodal Large Language Model"; github.com/Ghy0501/HiDe-LLaVA; also MCITlib, github.com/Ghy0501/MCITlib),
read from the user's copy as HiDe-LLaVA's and MCITlib's scripts read it.

Layout (the Hugging Face release HaiyangGuo/UCIT; ``benchmark.root`` holds the task folders, or an
``instructions/`` folder holding them, and ``datasets/``, the images)::

    <root>/[instructions/]<Task>/train*.json              LLaVA conversations (train.json, train_4w.json, ...)
    <root>/[instructions/]<Task>/test_3000.json           [{question_id, image, text, answer}]
    <root>/[instructions/]<Task>/val_coco_type_3000.json  COCO captions of the caption tasks' test images
    <root>/datasets/...                                   images; every file's ``image`` is relative to it

Task folders go by the release's names (ImageNet-R, ArxivQA, VizWiz, IconQA, CLEVR, Flickr30k), by
HiDe-LLaVA's scripts' (VizWiz-caption, CLEVR-Math, Flickr30k-cap) or MCITlib's (CLEVR-Math). The order is
the scripts' (Train_UCIT/Task1.sh .. Task6.sh). ImageNet-R, ArxivQA, IconQA and CLEVR-Math are scored by
``ucit-accuracy`` (eval_deepseek_r1.py), VizWiz-caption and Flickr30k by ``coco-captions`` (eval_caption.py),
whose test record i is scored against the captions of COCO image id i + 1, as eval_caption.py numbers its
predictions. docs/benchmarks/ucit.md says more.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import Field, PositiveInt

from lcia.benchmarks.base import Benchmark, BenchmarkParams, BenchmarkTask, register_benchmark
from lcia.benchmarks.llava_files import read_conversations, read_questions
from lcia.data.json_records import load
from lcia.data.schema import Example
from lcia.errors import input_error

TASKS = ("ImageNet-R", "ArxivQA", "VizWiz-caption", "IconQA", "CLEVR-Math", "Flickr30k")
TEST_FILES = ("test_3000.json", "test.json")  # the release's name, then MCITlib's data configs'
CAPTION_FILE = "val_coco_type_3000.json"


@dataclass(frozen=True)
class TaskSpec:
    folders: tuple[str, ...]  # the task's folder names: the release's first
    train_file: str  # the file the training scripts read; another single train*.json is taken instead
    scorer: str


SPECS = {
    "ImageNet-R": TaskSpec(("ImageNet-R",), "train.json", "ucit-accuracy"),
    "ArxivQA": TaskSpec(("ArxivQA",), "train_4w.json", "ucit-accuracy"),
    "VizWiz-caption": TaskSpec(("VizWiz", "VizWiz-caption"), "train.json", "coco-captions"),
    "IconQA": TaskSpec(("IconQA",), "train.json", "ucit-accuracy"),
    "CLEVR-Math": TaskSpec(("CLEVR", "CLEVR-Math"), "train_4w.json", "ucit-accuracy"),
    "Flickr30k": TaskSpec(("Flickr30k", "Flickr30k-cap"), "train_brief_4w.json", "coco-captions"),
}


class UCITParams(BenchmarkParams):
    image_folder: str = Field(
        "datasets", description="the images folder the scripts pass as --image_folder; relative to the root"
    )
    max_new_tokens: PositiveInt = Field(
        128,
        description="answer length cap of every task: HiDe-LLaVA's model_answer.py default (MCITlib's "
        "model_others.py: 256)",
    )


@register_benchmark("ucit")
class UCIT(Benchmark):
    tasks = TASKS
    orders = {"default": TASKS}
    Params = UCITParams

    def read_task(self, name: str) -> BenchmarkTask:
        spec = SPECS[name]
        folder = self._task_folder(name)
        images = self._images()
        train = read_conversations(train_file(folder, spec.train_file), images)
        test_file = _first_file(folder, TEST_FILES, "test file")
        if spec.scorer == "coco-captions":
            test = read_questions(test_file, images, answers=False)
            test = with_captions(test, folder / CAPTION_FILE)
        else:
            test = read_questions(test_file, images)
        return BenchmarkTask(name, train, test, spec.scorer, self.params.max_new_tokens)

    def _task_folder(self, name: str) -> Path:
        for base in (self.root, self.root / "instructions"):
            for folder_name in SPECS[name].folders:
                if (base / folder_name).is_dir():
                    return base / folder_name
        names = " or ".join(f"{folder_name}/" for folder_name in SPECS[name].folders)
        raise input_error(f"missing task folder {names} of task {name} (here or in instructions/)", file=self.root)

    def _images(self) -> Path:
        images = self.root / self.params.image_folder
        if not images.is_dir():
            raise input_error("no images folder here", file=images, field="benchmark.params.image_folder")
        return images


def train_file(folder: Path, expected: str) -> Path:
    """The task's training file: the one the scripts name, else the folder's one ``train*.json``."""
    if (folder / expected).is_file():
        return folder / expected
    found = sorted(folder.glob("train*.json"))
    if len(found) != 1:
        listed = ", ".join(path.name for path in found) or "none"
        raise input_error(f"no {expected} and not one train*.json to take instead (found: {listed})", file=folder)
    return found[0]


def _first_file(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for file_name in names:
        if (folder / file_name).is_file():
            return folder / file_name
    raise input_error(f"no {what} ({' or '.join(names)})", file=folder / names[0])


def with_captions(examples: list[Example], path: Path) -> list[Example]:
    """The caption task's test examples with their reference captions: eval_caption.py gives the i-th
    prediction COCO image id i + 1 and scores it against that image's annotations in ``path``."""
    captions = _coco_captions(path)
    found = []
    for k, ex in enumerate(examples):
        refs = captions.get(k + 1)
        if not refs:
            message = f"no caption of image_id {k + 1}, which eval_caption.py scores test record {k + 1} against"
            raise input_error(message, file=path, field="annotations")
        found.append(replace(ex, output=refs[0], references=tuple(refs)))
    return found


def _coco_captions(path: Path) -> dict[int, list[str]]:
    """image_id -> its captions, from a COCO caption file (``{"annotations": [{image_id, caption}]}``)."""
    if not path.is_file():
        raise input_error("no COCO caption file here: eval_caption.py scores the task against it", file=path)
    data = load(str(path)).records[0][1]
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise input_error("expected an object with an `annotations` list", file=path, line=1, field="annotations")
    captions: dict[int, list[str]] = {}
    for k, entry in enumerate(data["annotations"]):
        image_id = entry.get("image_id") if isinstance(entry, dict) else None
        caption = entry.get("caption") if isinstance(entry, dict) else None
        if isinstance(image_id, bool) or not isinstance(image_id, int) or not isinstance(caption, str):
            raise input_error("expected {image_id: integer, caption: string}", file=path, field=f"annotations[{k}]")
        captions.setdefault(image_id, []).append(caption)
    return captions
