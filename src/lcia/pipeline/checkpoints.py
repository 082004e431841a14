"""Checkpoints: everything needed to continue a run exactly, as safetensors + JSON, written atomically.

    checkpoints/ckpt-000007/        one complete checkpoint
        progress.json               stage, step within the stage, skipped steps
        weights.safetensors         every adapter tensor of the model
        optimizer.safetensors/.json AdamW state (mid-stage checkpoints only)
        scheduler.json
        rng.safetensors             torch's CPU (and CUDA) generator (LoRA dropout), one per process
        method.safetensors/.json    the method's state_dict()
    checkpoints/latest.json         names the newest complete checkpoint

A checkpoint is written into a hidden temporary folder, renamed into place, and only then named in
``latest.json`` (itself replaced atomically), so a crash at any moment leaves the previous checkpoint
in force. Loading reads safetensors and JSON only: a pickled file in a checkpoint is refused.
With several processes every rank calls ``save`` (its generator state is gathered) and rank 0 writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lcia.core import distributed
from lcia.core.files import refuse_pickles, write_atomic
from lcia.core.params import adapter_weights
from lcia.errors import input_error


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


def load_state(folder: Path, name: str) -> Any:
    skeleton = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    return _unpack(skeleton, load_file(str(folder / f"{name}.safetensors")))


def _generators() -> dict[str, torch.Tensor]:
    """This process's random generator states: LoRA dropout draws from the CUDA one on a GPU."""
    return {"cpu": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {})}


class Checkpoints:
    def __init__(self, run_dir: Path):
        self.root = Path(run_dir) / "checkpoints"

    def latest(self) -> dict | None:
        """The progress record of the newest complete checkpoint (None when there is none)."""
        pointer = self.root / "latest.json"
        if not pointer.exists():
            return None
        folder = self.root / json.loads(pointer.read_text(encoding="utf-8"))["name"]
        return json.loads((folder / "progress.json").read_text(encoding="utf-8")) | {"folder": str(folder)}

    def save(self, progress: dict, model, method, optimizer=None, scheduler=None) -> None:
        """Write a checkpoint; with several processes every rank calls it and returns once it is written."""
        rng = distributed.gather_in_order([_generators()], distributed.world_size())
        if distributed.is_main():
            self._write(progress, model, method, optimizer, scheduler, rng)
        distributed.barrier()

    def _write(self, progress, model, method, optimizer, scheduler, rng: list[dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        previous = self.latest()
        number = int(Path(previous["folder"]).name.split("-")[1]) + 1 if previous else 0
        name = f"ckpt-{number:06d}"
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(
            {n: p.detach().cpu().clone().contiguous() for n, p in adapter_weights(model).items()},
            str(tmp / "weights.safetensors"),
        )
        save_state(tmp, "rng", {"ranks": rng})
        save_state(tmp, "method", method.state_dict())
        if optimizer is not None:
            save_state(tmp, "optimizer", optimizer.state_dict())
            (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()), encoding="utf-8")
        (tmp / "progress.json").write_text(json.dumps(progress), encoding="utf-8")
        tmp.rename(self.root / name)
        write_atomic(self.root / "latest.json", json.dumps({"name": name}))
        for old in self.root.glob("ckpt-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, progress: dict, model, method) -> None:
        """Load a checkpoint's method state (letting the method rebuild its adapters), weights and RNG."""
        folder = Path(progress["folder"])
        refuse_pickles(folder)
        method.load_state_dict(load_state(folder, "method"))
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
        rng = load_state(folder, "rng")
        states = rng["ranks"] if "ranks" in rng else [{"cpu": rng["torch"]}]  # before one per rank was kept
        # Resumed with more processes than saved it: the extra ranks take rank 0's (their dropout differs).
        state = states[distributed.rank()] if distributed.rank() < len(states) else states[0]
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])

    def restore_optimizer(self, progress: dict, optimizer, scheduler) -> None:
        """A mid-stage checkpoint's AdamW and scheduler state."""
        folder = Path(progress["folder"])
        optimizer.load_state_dict(load_state(folder, "optimizer"))
        scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text(encoding="utf-8")))
