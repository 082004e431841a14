"""Sources written by Hugging Face datasets (save_to_disk folder, parquet, arrow, CSV): the same records give
the same examples as JSON Lines, and every bad row is named by file, row and field."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lcia.data.readers import read_examples
from lcia.data.streams import load_stream
from lcia.errors import LciaError

datasets = pytest.importorskip("datasets")

KINDS = ("folder", "parquet", "arrow", "csv")

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 + 3", "output": "5"},
    {"instruction": "Say hi.", "output": "hi"},  # no input: a null cell in a table
    {"instruction": "Spell the code.", "input": "agent", "output": "007"},  # CSV must not make it the number 7
    {"instruction": "Which library?", "input": 'a, b; "c"\nd', "output": "NA"},  # nor this a null
    {"instruction": "Übersetze.", "input": "", "output": "naïve — ok"},
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def as_dataset(records: list[dict]):
    """Every key of any record a column (``Dataset.from_list`` takes only the first record's keys)."""
    keys = list(dict.fromkeys(key for record in records for key in record))
    return datasets.Dataset.from_dict({key: [record.get(key) for record in records] for key in keys})


def write_source(kind: str, folder: Path, stem: str, records: list[dict]) -> Path:
    """``records`` written by datasets as ``kind``, named ``stem`` (so that default ids match the JSONL's)."""
    dataset = as_dataset(records)
    if kind == "folder":
        dataset.save_to_disk(folder / stem)
        return folder / stem
    if kind == "arrow":  # the Arrow file datasets writes: a save_to_disk shard
        dataset.save_to_disk(folder / f"{stem}-saved")
        [shard] = (folder / f"{stem}-saved").glob("*.arrow")
        return Path(shutil.copy(shard, folder / f"{stem}.arrow"))
    path = folder / f"{stem}.{kind}"
    dataset.to_parquet(path) if kind == "parquet" else dataset.to_csv(path, index=False)
    return path


def read_error(path: Path, **kwargs) -> str:
    with pytest.raises(LciaError) as info:
        read_examples(path, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_alpaca_sources_read_as_the_jsonl(tmp_path, kind):
    expected = read_examples(write_jsonl(tmp_path / "train.jsonl", ALPACA))
    assert [ex.id for ex in expected] == [f"train-{i}" for i in range(len(ALPACA))]
    assert read_examples(write_source(kind, tmp_path, "train", ALPACA)) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_explicit_format_and_instruction_as_for_jsonl(tmp_path, kind):
    expected = read_examples(write_jsonl(tmp_path / "train.jsonl", ALPACA), "alpaca", "Do it.")
    assert read_examples(write_source(kind, tmp_path, "train", ALPACA), "alpaca", "Do it.") == expected


@pytest.mark.parametrize("kind", ["folder", "parquet"])
@pytest.mark.parametrize(
    "records",
    [
        [{"prompt": "The sky is", "completion": " blue."}, {"prompt": "Grass is", "completion": " green.", "id": 9}],
        [
            {
                "prompt": [{"role": "system", "content": "Answer."}, {"role": "user", "content": "2+2?"}],
                "completion": [{"role": "assistant", "content": "4"}],
            }
        ],
    ],
    ids=["strings", "conversational"],
)
def test_prompt_completion(tmp_path, kind, records):
    expected = read_examples(write_jsonl(tmp_path / "pc.jsonl", records))
    assert read_examples(write_source(kind, tmp_path, "pc", records)) == expected


MESSAGES = [
    {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris"},
        ]
    },
    {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}], "id": "greet"},
]


@pytest.mark.parametrize("kind", ["folder", "parquet", "arrow"])
def test_messages_nested_lists(tmp_path, kind):
    expected = read_examples(write_jsonl(tmp_path / "chat.jsonl", MESSAGES))
    assert expected[0].messages and expected[1].id == "greet"
    assert read_examples(write_source(kind, tmp_path, "chat", MESSAGES)) == expected


def test_trl_vision_typed_items_and_images_beside_the_file(tmp_path):
    # Arrow gives the image item the text item's key too (text: null): it must read as absent, as in JSON.
    records = [
        {
            "images": ["cat.png"],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]},
            ],
        }
    ]
    (tmp_path / "cat.png").write_bytes(b"png")
    expected = read_examples(write_jsonl(tmp_path / "vqa.jsonl", records))
    [example] = read_examples(write_source("parquet", tmp_path, "vqa", records))
    assert [example] == expected and example.image == str(tmp_path / "cat.png")


def test_llava_images_relative_to_the_dataset_folder(tmp_path):
    records = [
        {
            "id": "q1",
            "image": "images/cat.png",
            "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "cat"}],
        }
    ]
    folder = write_source("folder", tmp_path, "vqa", records)
    (folder / "images").mkdir()
    (folder / "images" / "cat.png").write_bytes(b"png")
    [example] = read_examples(folder)
    assert (example.id, example.instruction, example.output) == ("q1", "What is it?", "cat")
    assert example.image == str(folder / "images" / "cat.png")
    assert "vqa:row 1: image: record 'q1': image not found" in read_error(folder, image_folder=tmp_path)


# --- Errors: file:row N: field: message ----------------------------------------------------------


def test_missing_output_names_the_file_and_row(tmp_path):
    records = [{"instruction": "A", "output": "a"}, {"instruction": "B", "output": "b"}, {"instruction": "C"}]
    path = write_source("parquet", tmp_path, "train", records)
    assert read_error(path) == f"{path}:row 3: output: missing required field"
    csv = write_source("csv", tmp_path, "train", records)
    assert read_error(csv) == f"{csv}:row 3: output: missing required field"


def test_errors_keep_the_json_messages(tmp_path):
    wrong_type = write_source("parquet", tmp_path, "typed", [{"instruction": "A", "output": 5}])
    assert read_error(wrong_type) == f"{wrong_type}:row 1: output: expected a string, got a number (5)"
    duplicate = write_source("folder", tmp_path, "dup", [{"id": "x", "output": "a", "instruction": "i"}] * 2)
    assert read_error(duplicate) == f"{duplicate}:row 2: id: duplicate id 'x' (first on row 1)"
    nested = write_source("parquet", tmp_path, "chat", [{"messages": [{"role": "user", "content": "hi"}]}])
    message = "the last message must be the assistant's answer, got 'user'"
    assert read_error(nested) == f"{nested}:row 1: messages[0].role: {message}"
    alpaca = write_source("arrow", tmp_path, "alp", ALPACA)
    assert read_error(alpaca, format="messages") == f"{alpaca}:row 1: messages: missing required field"
    assert "row 1: expected a BIG-bench task" in read_error(alpaca, format="bigbench")


def test_bad_sources_are_one_line_errors(tmp_path):
    splits = datasets.DatasetDict({"train": as_dataset(ALPACA), "test": as_dataset(ALPACA)})
    splits.save_to_disk(tmp_path / "dict")
    assert "a DatasetDict folder (splits: train, test): name one split's folder" in read_error(tmp_path / "dict")
    assert read_examples(tmp_path / "dict" / "test") == read_examples(write_jsonl(tmp_path / "test.jsonl", ALPACA))
    (tmp_path / "plain").mkdir()
    message = "not a dataset folder written by save_to_disk (no state.json)"
    assert read_error(tmp_path / "plain") == f"{tmp_path / 'plain'}: {message}"
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    assert read_error(broken).startswith(f"{broken}: cannot read the dataset: ") and "\n" not in read_error(broken)
    assert read_error(tmp_path / "absent.arrow") == f"{tmp_path / 'absent.arrow'}: no such file or folder"
    empty = tmp_path / "empty.parquet"
    datasets.Dataset.from_dict({"instruction": [], "output": []}).to_parquet(empty)
    assert read_error(empty) == f"{empty}: no examples: the dataset has no rows"


# --- Streams and imports -------------------------------------------------------------------------


def test_stream_task_from_a_save_to_disk_folder(tmp_path):
    records = [{"instruction": "Copy.", "input": str(i), "output": str(i)} for i in range(10)]
    (tmp_path / "data").mkdir()
    write_source("folder", tmp_path / "data", "copy", records)
    write_source("parquet", tmp_path / "data", "copy-test", records[:3])
    stream = tmp_path / "stream.yaml"
    stream.write_text(
        "tasks:\n"
        "  - name: copy\n    train: data/copy\n"
        "  - name: copy-with-test\n    train: data/copy\n    test: data/copy-test.parquet\n"
    )
    split, own_test = load_stream(str(stream), 4, None, 0)
    assert (len(split.train), len(split.test)) == (6, 4)
    assert {ex.id for ex in split.train + split.test} == {f"copy-{i}" for i in range(10)}
    assert [ex.output for ex in own_test.test] == ["0", "1", "2"] and len(own_test.train) == 10


def test_importing_the_readers_does_not_import_datasets():
    code = "import sys, lcia.data.readers; print('datasets' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
