"""What the benchmark tests share: reading a fixture tree, editing one of its JSON files, and one ``lcia run``
with the tiny model on it (every test example, two steps a task unless ``training`` says otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

from lcia.benchmarks import load_benchmark


def read(stream: str, root, **settings):
    """Every task of the fixture, whole test sets (``settings``: variant, order, tasks, params)."""
    return load_benchmark(stream, str(root), settings, None, None, 0)


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")


def square_image(path: Path, color) -> None:
    """A 16x16 white PNG with a coloured square: enough for the image pipeline, a few hundred bytes."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (16, 16), "white")
    image.paste(color, (3, 3, 13, 13))
    image.save(path)


def edit(path: Path, change) -> None:
    """Apply ``change`` to the JSON value in ``path`` and write it back."""
    value = json.loads(path.read_text(encoding="utf-8"))
    change(value)
    write_json(path, value)


def run_on_fixture(tmp_path: Path, model_dir, stream: str, root, benchmark: str = "", training: str = ""):
    """``lcia run`` of ``stream`` on the fixture under ``root`` with the tiny model (``benchmark``: further
    lines of the benchmark section; ``training``: its training section); returns the run's RunDir."""
    from lcia.cli import main
    from lcia.pipeline.run_files import RunDir

    config, out = tmp_path / f"{stream}.yaml", tmp_path / f"{stream}-run"
    training = training or "  steps: 2\n  batch_size: 2\n"
    config.write_text(
        f"stream: {stream}\nbenchmark:\n  root: {root}\n{benchmark}"
        f"model:\n  name_or_path: {model_dir}\noutput_dir: {out}\nmethod:\n  name: seq-lora\n"
        f"training:\n{training}data:\n  test_size: null\n"
        "evaluation:\n  bootstrap: 0\nlora:\n  r: 4\nvision:\n  prealign_steps: 0\n",
        encoding="utf-8",
    )
    assert main(["run", str(config), "--quiet"]) == 0
    return RunDir(out)
