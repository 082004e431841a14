"""What the speed benchmarks share: the machine's matrix-multiply peak, training FLOPs, peak RSS, the
real model with a LoRA adapter, a task's encoded examples, and writing results with the environment."""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path

import torch

from lcia.data.prompts import IGNORE_INDEX, Encoded, encode_for_training
from lcia.data.streams import load_stream
from lcia.models.loading import load_base_model
from lcia.models.lora import add_lora, lora_config
from lcia.reporting.manifest import hardware, package_versions


def device() -> torch.device:
    """The GPU when there is one (the benchmarks' device path), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize() -> None:
    """Wait for the GPU's queued work, so a wall-clock tick measures it (nothing to wait for on a CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, n: int | None = None, seconds: float = 2.0) -> float:
    """GFLOP/s of square ``n`` x ``n`` matrix multiplies in ``dtype`` on ``device()`` (``n``: 8192 on a GPU,
    which a smaller product cannot fill, 2048 on a CPU's current torch threads)."""
    on = device()
    n = n or (8192 if on.type == "cuda" else 2048)
    a, b = torch.randn(n, n, dtype=dtype, device=on), torch.randn(n, n, dtype=dtype, device=on)
    for _ in range(3):
        a @ b
    synchronize()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10 if on.type == "cuda" else 1):  # a GPU queues products faster than it runs them
            a @ b
            count += 1
        synchronize()
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def machine_peaks() -> dict[str, float]:
    return {"float32": round(matmul_peak(torch.float32), 1), "bfloat16": round(matmul_peak(torch.bfloat16), 1)}


def training_flops(model, features: list, batches: list[list[int]]) -> float:
    """The FLOPs that LoRA training must do on these batches (the usual 'model FLOPs' count, for LoRA).

    Per non-pad token: frozen linear layers 4 x params (forward, and backward to their inputs: their
    weights get no gradient), LoRA tensors 6 x params, attention 12 x layers x hidden x attended
    length / 2 (causal); the vocabulary projection 4 x vocab x hidden per answer token only (the
    logits a causal-LM loss needs). Padding, prompt-position logits and elementwise work not counted.
    """
    config = model.config
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    embedding = config.vocab_size * config.hidden_size
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad and p.dim() == 2) - embedding
    total = 0.0
    for batch in batches:
        for i in batch:
            n = len(features[i].input_ids)
            answers = sum(label != IGNORE_INDEX for label in features[i].labels)
            total += n * (4 * frozen + 6 * lora) + 12 * config.num_hidden_layers * config.hidden_size * n * n / 2
            total += 4 * embedding * answers
    return total


class NoTokenizer:
    """What lcia's training loop asks of a tokenizer (its pad id), for random token ids."""

    pad_token_id = 0


def random_features(n: int, length: int, answer: int, vocab: int, seed: int) -> list[Encoded]:
    """``n`` sequences of ``length`` random token ids, the last ``answer`` of them the labelled answer."""
    generator = torch.Generator().manual_seed(seed)
    features = []
    for _ in range(n):
        ids = torch.randint(1, vocab, (length,), generator=generator).tolist()
        features.append(Encoded(ids, [IGNORE_INDEX] * (length - answer) + ids[-answer:], False))
    return features


def peak_rss_mb(children: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return round(usage.ru_maxrss / 1024, 1)  # kilobytes on Linux


def lora_model(name: str, rank: int = 8, targets=("q_proj", "v_proj"), seed: int = 0):
    torch.manual_seed(seed)
    return add_lora(load_base_model(name), lora_config(rank, 2 * rank, 0.0, list(targets)))


def task_of(name: str, stream: str = "ni-cit", test_size: int = 100):
    tasks = {t.name: t for t in load_stream(stream, test_size, None, 0)}
    if name not in tasks:
        raise SystemExit(f"unknown task {name!r} in {stream} (known: {', '.join(tasks)})")
    return tasks[name]


def encoded(tokenizer, task, max_length: int = 256) -> list:
    return [encode_for_training(tokenizer, ex, max_length) for ex in task.train]


def environment() -> dict:
    return {"hardware": hardware(), "cpu": _cpu_model(), "versions": package_versions()}


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_results(path: str, results: dict) -> None:
    results = results | {"environment": environment()}
    text = json.dumps(results, indent=1)
    print(text)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")
