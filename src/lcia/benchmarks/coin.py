"""CoIN (Chen et al. 2024, "CoIN: A Benchmark of Continual Instruction tuNing for Multimodel Large Language
Model"; github.com/zackschen/CoIN), read from the user's copy as CoIN's own scripts read it.

Layout (``benchmark.root`` is the folder CoIN's scripts run in)::

    <root>/playground/Instructions_Original/<Task>/train.json    (or <root>/Instructions_Original/...)
    <root>/playground/Instructions_Original/<Task>/<test file>
    <root>/cl_dataset/...                                        images, and TextVQA_0.5.1_val.json

Variants: ``original`` (``Instructions_Original/``, the Hugging Face release Zacks-Chen/CoIN, or
``Instructions/``, the refined release jingyang/CoIN_Refined of JingyangQiao/CoIN), ``diverse``
(``Instructions_Diverse/``) and ``10type`` (``Instructions_10Type/``). Train files are LLaVA conversations; test
files are JSON arrays of ``{question_id, image?, text, answer}`` (Grounding adds ``answer_bbox`` and ``size``),
the test file of each task being the one CoIN's ``scripts/LLaVA/Eval/*.sh`` read: ScienceQA/test.json,
TextVQA/val.json, ImageNet/test.json, GQA/test.json, VizWiz/val.json, Grounding/test.json, VQAv2/val.json,
OCRVQA/test.json. The order is CoIN's (``scripts/LLaVA/Train/1_Science.sh`` .. ``8_OCRVQA.sh``). Each task is
scored by a port of its CoIN eval script (``lcia.scorers.coin``, ``.m4c``, ``.grounding``) with the
``max_new_tokens`` of the ``model_*.py`` that answers it. docs/benchmarks/coin.md says more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, PositiveInt, field_validator

from lcia.benchmarks.base import Benchmark, BenchmarkParams, BenchmarkTask, register_benchmark
from lcia.benchmarks.llava_files import answer_of, question_id, question_image, read_conversations
from lcia.data.images import IMAGE_PLACEHOLDER
from lcia.data.json_records import Where, json_type, load, string
from lcia.data.schema import Example
from lcia.errors import input_error
from lcia.scorers.coin import OPTIONS
from lcia.scorers.grounding import gold_box

TASKS = ("ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCRVQA")


@dataclass(frozen=True)
class TaskSpec:
    test_file: str  # the file CoIN's eval script of the task reads
    scorer: str
    max_new_tokens: int  # model_vqa*.py (1024) or the DataLoader scripts' --max_new_tokens default (128)


SPECS = {
    "ScienceQA": TaskSpec("test.json", "coin-scienceqa", 1024),  # model_vqa_science.py
    "TextVQA": TaskSpec("val.json", "m4c-textvqa", 128),  # model_text_vqa.py
    "ImageNet": TaskSpec("test.json", "coin-imagenet", 1024),  # model_vqa.py
    "GQA": TaskSpec("test.json", "coin-gqa", 128),  # model_gqa.py
    "VizWiz": TaskSpec("val.json", "coin-vizwiz", 128),  # model_vizwiz.py
    "Grounding": TaskSpec("test.json", "coin-grounding", 1024),  # model_vqa.py
    "VQAv2": TaskSpec("val.json", "coin-vqav2", 1024),  # model_vqa.py
    "OCRVQA": TaskSpec("test.json", "coin-ocrvqa", 128),  # model_ocr_vqa.py
}

# A variant's folder under the instructions folder: CoIN's name first, then the refined release's.
VARIANT_FOLDERS = {
    "original": ("Instructions_Original", "Instructions"),
    "diverse": ("Instructions_Diverse",),
    "10type": ("Instructions_10Type",),
}


class CoINParams(BenchmarkParams):
    image_folder: str = Field(
        "cl_dataset", description="the images folder CoIN's scripts pass as --image-folder; relative to the root"
    )
    instructions_folder: str | None = Field(
        None,
        description="the folder holding Instructions_Original/ (or Instructions/, Instructions_Diverse/, "
        "Instructions_10Type/), relative to the root; default: playground/ if the root has one, else the root",
    )
    textvqa_annotations: str = Field(
        "TextVQA/TextVQA_0.5.1_val.json",
        description="TextVQA's annotations, whose ten answers per question eval_textvqa.py scores against; "
        "relative to the images folder",
    )
    grounding_off_by_one: bool = Field(
        True,
        description="score Grounding with CoIN's box parser, which slices off the first and last characters "
        "after removing the brackets (scorer coin-grounding, as the papers' numbers); false: every coordinate "
        "as written (scorer grounding)",
    )
    max_new_tokens: PositiveInt | None = Field(
        None, description="answer length cap for every task; default: each task's cap in CoIN's eval scripts"
    )
    test_files: dict[str, str] = Field(
        default_factory=dict, description="a task's test file name instead of CoIN's, e.g. {TextVQA: test.json}"
    )

    @field_validator("test_files")
    @classmethod
    def _known_tasks(cls, value: dict[str, str]) -> dict[str, str]:
        for task in value:
            if task not in TASKS:
                raise ValueError(f"CoIN has no task {task!r} (tasks: {', '.join(TASKS)})")
        return value


@register_benchmark("coin")
class CoIN(Benchmark):
    tasks = TASKS
    orders = {"coin": TASKS}
    variants = tuple(VARIANT_FOLDERS)
    Params = CoINParams

    def read_task(self, name: str) -> BenchmarkTask:
        folder = self._variant_folder() / name
        if not folder.is_dir():
            raise input_error(f"missing task folder {name} (variant {self.variant})", file=folder)
        images = self._images()
        spec = SPECS[name]
        train = read_conversations(folder / "train.json", images)
        test_file = folder / self.params.test_files.get(name, spec.test_file)
        test = self._test_examples(name, test_file, images)
        scorer = spec.scorer
        if name == "Grounding" and not self.params.grounding_off_by_one:
            scorer = "grounding"
        max_new_tokens = self.params.max_new_tokens or spec.max_new_tokens
        return BenchmarkTask(name, train, test, scorer, max_new_tokens)

    def _variant_folder(self) -> Path:
        if self.params.instructions_folder is not None:
            base = self.root / self.params.instructions_folder
        else:
            base = self.root / "playground" if (self.root / "playground").is_dir() else self.root
        names = VARIANT_FOLDERS[self.variant]
        for folder_name in names:
            if (base / folder_name).is_dir():
                return base / folder_name
        expected = " or ".join(f"{folder_name}/" for folder_name in names)
        raise input_error(f"no {expected} here (variant {self.variant})", file=base, field="benchmark.variant")

    def _images(self) -> Path:
        images = self.root / self.params.image_folder
        if not images.is_dir():
            raise input_error("no images folder here", file=images, field="benchmark.params.image_folder")
        return images

    def _test_examples(self, name: str, path: Path, images: Path) -> list[Example]:
        source = load(str(path))
        answers = _textvqa_answers(images / self.params.textvqa_annotations) if name == "TextVQA" else None
        examples = []
        for line, record in source.records:
            where = Where(str(path), line)
            if not isinstance(record, dict):
                raise where.error(None, f"expected a JSON object, got {json_type(record)}")
            examples.append(_test_example(name, record, where, images, answers))
        return examples


def _test_example(name: str, record: dict, where: Where, images: Path, answers: dict | None) -> Example:
    """One test record as an example: the question as CoIN's model scripts prompt it, the references and meta
    its eval script reads."""
    qid = question_id(record, where)
    text = string(record, "text", where).replace(IMAGE_PLACEHOLDER, "").strip()
    answer = answer_of(record, where)
    references, meta = (answer,), {}
    if name == "ScienceQA":
        if answer.strip() not in OPTIONS:
            raise where.error("answer", f"expected an option letter A-E (eval_science_qa.py's), got {answer!r}")
        references = (answer.strip(),)
    elif name == "TextVQA":
        if qid not in answers:
            raise where.error("question_id", f"{qid!r} is not in TextVQA's annotations")
        references = answers[qid]
    elif name == "Grounding":
        meta = {"answer_bbox": _box(record, where), "size": _size(record, where)}
    image = question_image(record, where, images, qid, optional=True)  # ScienceQA has text-only questions
    return Example(text, "", answer, references, qid, image=image, meta=meta)


def _box(record: dict, where: Where) -> list[float]:
    if "answer_bbox" not in record:
        raise where.error("answer_bbox", "missing required field")
    try:
        box = gold_box(record["answer_bbox"])
    except (TypeError, ValueError):
        box = []
    if len(box) != 4:
        raise where.error("answer_bbox", f"expected a box [x1, y1, x2, y2], got {record['answer_bbox']!r}")
    return box


def _size(record: dict, where: Where) -> list[float]:
    size = record.get("size")
    if "size" not in record:
        raise where.error("size", "missing required field")
    numbers = isinstance(size, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in size)
    if not numbers or len(size) != 2 or min(size) <= 0:
        raise where.error("size", f"expected the image's [width, height], got {size!r}")
    return list(size)


def _textvqa_answers(path: Path) -> dict[str, tuple[str, ...]]:
    """question_id -> the ten human answers of TextVQA's annotation file (``{"data": [{question_id, answers}]}``)."""
    if not path.is_file():
        message = "no TextVQA annotations here: eval_textvqa.py scores against their ten answers per question"
        raise input_error(message, file=path, field="benchmark.params.textvqa_annotations")
    data = load(str(path)).records[0][1]
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise input_error("expected an object with a `data` list", file=path, line=1, field="data")
    answers = {}
    for k, entry in enumerate(data["data"]):
        found = entry.get("answers") if isinstance(entry, dict) else None
        if not isinstance(found, list) or not found or not all(isinstance(a, str) for a in found):
            raise input_error("expected a list of answer strings", file=path, field=f"data[{k}].answers")
        answers[str(entry.get("question_id"))] = tuple(found)
    return answers
