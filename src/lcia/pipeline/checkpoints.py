"""Checkpoints: everything needed to continue a run exactly, as safetensors + JSON, written atomically.

    checkpoints/ckpt-000007/        one complete checkpoint
        progress.json               stage, step within the stage, skipped steps, each file's SHA-256
        weights.safetensors         every adapter tensor of the model
        optimizer.safetensors/.json AdamW state (mid-stage checkpoints only)
        scheduler.json
        rng.safetensors/.json       torch's CPU (and CUDA) generator (LoRA dropout), one per process
        method.safetensors/.json    the method's state_dict()

A checkpoint is written into a hidden temporary folder (progress.json last) and renamed into place, so a
crash at any moment leaves the previous checkpoints as they were; the newest two are kept. ``latest``
checks each file against the checksum recorded when it was written: a damaged newest checkpoint (a
truncated or altered file) is set aside as ``ckpt-N.damaged`` and the one before it is taken, with a
warning; with none intact, resuming stops with one line naming the damaged file. A full disk while
writing leaves the previous checkpoints intact and stops with one line (``DiskFull``). Loading reads
safetensors and JSON only: a pickled file in a checkpoint is refused. With several processes every rank
calls ``save`` (its generator state is gathered) and rank 0 writes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lcia.core import distributed
from lcia.core.files import disk_full, refuse_pickles
from lcia.core.params import adapter_weights
from lcia.errors import input_error
from lcia.training.loop import Resume

KEEP = 2  # checkpoints kept: the newest, and the one to fall back on if it is damaged
_NAME = re.compile(r"ckpt-(\d+)$")


def _pack(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """JSON skeleton of ``obj`` with its tensors moved into ``tensors`` (non-str keys and tuples kept)."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__items__": [[k, _pack(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        packed = [_pack(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": packed} if isinstance(obj, tuple) else packed
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"cannot checkpoint a {type(obj).__name__} at {key!r}: use tensors, numbers, strings, lists and dicts"
    )


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
        return {k: _unpack(v, tensors) for k, v in obj["__items__"]}
    return obj


def save_state(folder: Path, name: str, state: Any) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(state, tensors, name)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton), encoding="utf-8")


def load_state(folder: Path, name: str, device: torch.device | str = "cpu") -> Any:
    skeleton = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    return _unpack(skeleton, load_file(str(folder / f"{name}.safetensors"), device=str(device)))


def _generators() -> dict[str, torch.Tensor]:
    """This process's random generator states: LoRA dropout draws from the CUDA one on a GPU."""
    return {"cpu": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {})}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def damage(folder: Path) -> tuple[Path, str] | None:
    """(file, what is wrong) when a checkpoint folder is not intact; None when every file is as written."""
    progress = folder / "progress.json"
    try:
        recorded = json.loads(progress.read_text(encoding="utf-8")).get("files", {})
    except json.JSONDecodeError as err:
        return progress, f"not valid JSON at line {err.lineno}"
    except OSError as err:
        return progress, f"unreadable: {err.strerror}"
    for name, checksum in recorded.items():
        if not (folder / name).is_file():
            return folder / name, "missing"
        if _sha256(folder / name) != checksum:
            return folder / name, "its content differs from the checksum recorded when it was written"
    return None


class Checkpoints:
    def __init__(self, run_dir: Path):
        self.root = Path(run_dir) / "checkpoints"

    def _folders(self) -> list[Path]:
        """Complete checkpoints, newest first (temporary and damaged ones are not)."""
        folders = [p for p in self.root.glob("ckpt-*") if _NAME.match(p.name)] if self.root.exists() else []
        return sorted(folders, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)

    def latest(self, log=print) -> dict | None:
        """The progress record of the newest intact checkpoint (None when there is none).

        Newer damaged ones are set aside (by rank 0) with a warning; when every checkpoint is damaged this
        stops with one line naming the newest one's damaged file, since starting over would be silent loss.
        """
        damaged = []
        for folder in self._folders():
            problem = damage(folder)
            if problem is None:
                for bad, (path, why) in damaged:
                    log(f"warning: checkpoint {bad.name} is damaged ({path.name}: {why}); resuming from {folder.name}")
                    if distributed.is_main():
                        bad.rename(bad.with_name(bad.name + ".damaged"))
                progress = json.loads((folder / "progress.json").read_text(encoding="utf-8"))
                return progress | {"folder": str(folder)}
            damaged.append((folder, problem))
        if damaged:
            path, why = damaged[0][1]
            raise input_error(f"damaged checkpoint ({why}) and no intact one to resume from", file=path)
        return None

    def save(self, progress: dict, model, method, optimizer=None, scheduler=None) -> None:
        """Write a checkpoint; with several processes every rank calls it and returns once it is written."""
        rng = distributed.gather_in_order([_generators()], distributed.world_size())
        if distributed.is_main():
            self._write(progress, model, method, optimizer, scheduler, rng)
        distributed.barrier()

    def _write(self, progress, model, method, optimizer, scheduler, rng: list[dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        folders = self._folders()
        number = int(_NAME.match(folders[0].name).group(1)) + 1 if folders else 0
        name = f"ckpt-{number:06d}"
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            self._write_files(tmp, progress, model, method, optimizer, scheduler, rng)
            tmp.rename(self.root / name)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self.root / name, "the previous checkpoints and results are intact") from None
            raise
        for old in self._folders()[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _write_files(folder: Path, progress, model, method, optimizer, scheduler, rng: list[dict]) -> None:
        weights = {n: p.detach().cpu().clone().contiguous() for n, p in adapter_weights(model).items()}
        save_file(weights, str(folder / "weights.safetensors"))
        save_state(folder, "rng", {"ranks": rng})
        save_state(folder, "method", method.state_dict())
        if optimizer is not None:
            save_state(folder, "optimizer", optimizer.state_dict())
            (folder / "scheduler.json").write_text(json.dumps(scheduler.state_dict()), encoding="utf-8")
        files = {p.name: _sha256(p) for p in sorted(folder.iterdir())}
        (folder / "progress.json").write_text(json.dumps(progress | {"files": files}), encoding="utf-8")

    def restore(self, progress: dict, model, method) -> Resume | None:
        """Load a checkpoint's method state (letting the method rebuild its adapters) and weights; for a
        checkpoint inside a stage, return what the training loop needs to continue it."""
        folder = Path(progress["folder"])
        refuse_pickles(folder)
        # on the model's device, where an uninterrupted run keeps it (an EMA, a Fisher, a subspace's basis)
        method.load_state_dict(load_state(folder, "method", next(model.parameters()).device))
        method.restore_model(model)
        weights = load_file(str(folder / "weights.safetensors"))
        missing = set(adapter_weights(model)) - set(weights)
        if missing:
            raise input_error(
                f"checkpoint lacks {len(missing)} adapter tensors (e.g. {sorted(missing)[0]})", file=folder
            )
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in weights:
                    param.copy_(weights[name])
        if progress["step"] == progress["steps"]:
            return None
        states = load_state(folder, "rng")["ranks"]
        # Resumed with more processes than saved it: the extra ranks take rank 0's (their dropout differs).
        rng = states[distributed.rank()] if distributed.rank() < len(states) else states[0]
        scheduler = json.loads((folder / "scheduler.json").read_text(encoding="utf-8"))
        return Resume(progress["step"], progress["skipped_steps"], load_state(folder, "optimizer"), scheduler, rng)
