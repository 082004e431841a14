"""The two file kinds the multimodal benchmarks (CoIN, UCIT, MLLM-DCL) ship for LLaVA: training conversations,
and the question files LLaVA's ``model_*.py`` scripts answer (``{question_id, image, text, answer}``), read
with the checks every reader needs."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from lcia.data.images import IMAGE_PLACEHOLDER
from lcia.data.json_records import Where, json_type, load, string
from lcia.data.readers import read_examples
from lcia.data.schema import Example


def read_conversations(path: Path, images: Path) -> list[Example]:
    """A training file of LLaVA conversations (``lcia.data.readers``' llava format), image placeholder first.
    Ids may repeat: they only label training records (UCIT's VizWiz, CLEVR and Flickr30k files repeat some)."""
    return [image_first(ex) for ex in read_examples(path, "llava", image_folder=images, unique_ids=False)]


def image_first(example: Example) -> Example:
    """A training conversation with its ``<image>`` placeholder at the start of its turn, where LLaVA's
    ``preprocess_multimodal`` (the benchmarks' training code) puts it."""
    if not example.image:
        return example
    messages = []
    for message in example.messages:
        content = message["content"]
        if IMAGE_PLACEHOLDER in content:
            content = f"{IMAGE_PLACEHOLDER}\n{content.replace(IMAGE_PLACEHOLDER, '').strip()}".strip()
        messages.append({**message, "content": content})
    return replace(example, messages=tuple(messages))


def read_questions(path: Path, images: Path, answers: bool = True) -> list[Example]:
    """A test file of ``{question_id, image, text, answer}`` records (``answer`` optional when ``answers`` is
    false), as LLaVA's model_*.py scripts prompt them: the image, then ``text``. ``meta`` keeps the record's
    ``image`` and ``text`` for scorers that read them."""
    source = load(str(path))
    examples = []
    for line, record in source.records:
        where = Where(str(path), line)
        if not isinstance(record, dict):
            raise where.error(None, f"expected a JSON object, got {json_type(record)}")
        qid = question_id(record, where)
        text = string(record, "text", where)
        if IMAGE_PLACEHOLDER in text:  # model_*.py put the image first themselves
            text = text.replace(IMAGE_PLACEHOLDER, "").strip()
        answer = answer_of(record, where) if answers or "answer" in record else ""
        image = question_image(record, where, images, qid)
        meta = {"image": record["image"], "question": record["text"]}
        examples.append(Example(text, "", answer, (answer,), qid, image=image, meta=meta))
    # The eval scripts key annotations by question_id: a repeated id is scored against its last record.
    last = {ex.id: ex.output for ex in examples}
    return [ex if ex.output == last[ex.id] else replace(ex, references=(last[ex.id],)) for ex in examples]


def question_id(record: dict, where: Where) -> str:
    """The record's ``question_id`` as the eval scripts match it: ``str(question_id)``."""
    value = record.get("question_id")
    if value is None:
        raise where.error("question_id", "missing required field")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise where.error("question_id", f"expected a string or an integer, got {json_type(value)}")
    return str(value)


def answer_of(record: dict, where: Where) -> str:
    if "answer" not in record:
        raise where.error("answer", "missing required field")
    if not isinstance(record["answer"], str):
        raise where.error("answer", f"expected a string, got {json_type(record['answer'])}")
    return record["answer"]


def question_image(record: dict, where: Where, images: Path, qid: str, optional: bool = False) -> str:
    """The absolute path of the record's image, which must exist ("" when ``optional`` and the record has none,
    as CoIN's text-only ScienceQA questions)."""
    if optional and record.get("image") is None:
        return ""
    path = os.path.abspath(images / string(record, "image", where))
    if not os.path.isfile(path):
        raise where.error("image", f"record {qid!r}: image not found: {path}")
    return path
