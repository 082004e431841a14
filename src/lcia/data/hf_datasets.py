"""Task sources written by Hugging Face ``datasets``: a ``save_to_disk`` folder, a ``.parquet``, ``.arrow`` or
``.csv`` file.

Each row becomes a record for the format parsers of :mod:`lcia.data.readers`, numbered as a :class:`Row`
(1-based) where a JSON record has its line, so that errors read ``file:row N: field: message``. A columnar
file gives every row every column: a null cell is read as an absent field, exactly as a JSON record without
that key (``missing required field``, an optional ``input`` defaulting to ""). Nested values (``messages``,
``conversations``) come back from ``datasets`` as lists and dicts, as they do from JSON.

A ``DatasetDict`` folder holds one ``save_to_disk`` folder per split: a task names the split's folder
(``data/my-dict/train``), so no path syntax is needed. A CSV file is comma-separated with a header row, and
every column is read as text. Image columns hold paths (strings); embedded ``Image`` features are not read.

``datasets`` is imported inside the functions: importing it takes about a second, and only these sources need it.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lcia.data.json_records import Source
from lcia.errors import input_error

SUFFIXES = (".parquet", ".arrow", ".csv")


class Row(int):
    """A 1-based row number that prints as ``row N``: passed where a JSON source has its line number, it makes
    :class:`~lcia.data.json_records.Where` and ``input_error`` write ``file:row N:`` unchanged."""

    def __str__(self) -> str:
        return f"row {int(self)}"


def is_dataset_source(path: str | os.PathLike) -> bool:
    """A folder (``save_to_disk``) or a file with a suffix of :data:`SUFFIXES`: read by :func:`load_rows`."""
    return os.path.isdir(path) or Path(path).suffix.lower() in SUFFIXES


def default_image_folder(path: str | os.PathLike) -> Path:
    """Where relative image paths start: a dataset folder itself, or a file's folder (as for JSON files)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def load_rows(file: str) -> Source:
    """The rows of a dataset source as records, each with its :class:`Row`."""
    path = Path(file)
    if not path.exists():
        raise input_error("no such file or folder", file)
    if path.is_dir():
        _check_folder(path)
    import datasets

    try:
        with _quiet(datasets), tempfile.TemporaryDirectory(prefix="lcia-datasets-") as cache:
            rows = _dataset(datasets, path, cache).to_list()
    except Exception as err:  # datasets, pyarrow and pandas raise many types for a bad file: one line for the user
        if _has_no_rows(path):
            raise input_error("no examples: the dataset has no rows", file) from None
        raise input_error(f"cannot read the dataset: {_first_line(err)}", file) from None
    if not rows:
        raise input_error("no examples: the dataset has no rows", file)
    return Source(file, [(Row(number), _without_nulls(row)) for number, row in enumerate(rows, 1)])


def _check_folder(path: Path) -> None:
    """A plain ``save_to_disk`` folder; a ``DatasetDict`` folder is refused with the split folders to name."""
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            splits = sorted(child.name for child in path.iterdir() if (child / "state.json").is_file())
        example = f", e.g. {path / splits[0]}" if splits else ""
        message = f"a DatasetDict folder (splits: {', '.join(splits)}): name one split's folder{example}"
        raise input_error(message, str(path))
    if not (path / "state.json").is_file():
        raise input_error("not a dataset folder written by save_to_disk (no state.json)", str(path))


def _dataset(datasets: Any, path: Path, cache: str) -> Any:
    """The ``datasets.Dataset`` of a source. Parquet and CSV are converted to Arrow by a builder, which writes a
    cache: it goes to a temporary folder (kept in memory, then deleted), not to the user's datasets cache."""
    if path.is_dir():
        return datasets.load_from_disk(str(path))
    suffix = path.suffix.lower()
    if suffix == ".arrow":
        return datasets.Dataset.from_file(str(path))
    if suffix == ".parquet":
        return datasets.Dataset.from_parquet(str(path), cache_dir=cache, keep_in_memory=True)
    # Only an empty cell is null: pandas would also read "NA", "null" or "None" (real answers) as missing.
    return datasets.Dataset.from_csv(
        str(path),
        cache_dir=cache,
        keep_in_memory=True,
        features=_csv_text_features(datasets, path),
        keep_default_na=False,
        na_values=[""],
    )


def _csv_text_features(datasets: Any, path: Path) -> Any:
    """Every CSV column as a string: pandas would make an answer like ``42`` a number, ``007`` the number 7."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    return datasets.Features({name: datasets.Value("string") for name in header})


def _has_no_rows(path: Path) -> bool:
    """Whether a source that ``datasets`` failed to read is empty: it then fails with messages like ``list
    index out of range`` (a folder) or ``Instruction "train" corresponds to no data!`` (parquet, CSV)."""
    try:
        if path.is_dir():
            return not json.loads((path / "state.json").read_text(encoding="utf-8"))["_data_files"]
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet

            return pyarrow.parquet.read_metadata(path).num_rows == 0
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:
                rows = (row for row in csv.reader(handle) if row)
                return next(rows, None) is None or next(rows, None) is None  # no header, or nothing under it
    except Exception:  # unreadable as well: the caller reports the original error
        return False
    return False


@contextmanager
def _quiet(datasets: Any) -> Iterator[None]:
    """No progress bars (reading a task's file is one step of a run) and no logged errors: a bad file is
    reported once, by the caller's one-line error."""
    were_disabled, verbosity = datasets.are_progress_bars_disabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not were_disabled:
            datasets.enable_progress_bars()


def _without_nulls(value: Any) -> Any:
    """Nulls dropped from every dict: Arrow fills a field a record (or a nested message) lacks with null."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _first_line(err: Exception) -> str:
    """The message of the error's root cause, on one line (a builder wraps the real error in its own)."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
