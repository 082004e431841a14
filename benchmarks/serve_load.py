"""Serving load: ``lcia serve`` on a trained run, asked on loopback by 1 and then by 16 concurrent clients.

    python benchmarks/serve_load.py runs/serve-bench --requests 8 --max-tokens 32

The server runs as its own process (``python -m lcia serve RUN_DIR``, as a user starts it). Each client is a
thread that sends its ``--requests`` chat requests one after another, not streamed; request k of client c asks
test instance c * N + k of the run's stream (cycled): the task's instruction as system message, the instance
as user turn, ``--max-tokens`` answer tokens at most. One untimed request warms the server first. Reported for
each concurrency: requests per second (all requests over the phase's wall time), latency p50 / p95 in
seconds, answer tokens per second, and the mean batch the server decoded (its /health counters). Then every
prompt of the phases is asked again by one client, one request at a time (the path of ``lcia ask``: a batch of
one), and the answers are compared: a padded batch can differ from a batch of one in the last bits of the
logits, more so in bf16 (benchmarks/eval_speed.py measures the same on evaluation).

Without RUN_DIR a quick run is trained first into a temporary folder (the packaged model, 5 steps per task).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
from harness import write_results

from lcia.config import load_config
from lcia.data.streams import load_stream
from lcia.pipeline.run_files import RunDir


def train_quick_run(folder: Path) -> Path:
    run_dir = folder / "serve-load"
    overrides = ["training.steps=5", "data.test_size=10", f"output_dir={run_dir}"]
    subprocess.run([sys.executable, "-m", "lcia", "run", "--quiet", *(a for o in overrides for a in ("--set", o))],
                   check=True)  # fmt: skip
    return run_dir


def prompts_of(run_dir: Path) -> list[tuple[str, str]]:
    """The run's test instances as (instruction, input), the tasks interleaved so that batches mix them."""
    cfg = load_config(str(run_dir / "config.yaml"))
    tasks = load_stream(cfg.stream, cfg.data.test_size, cfg.data.train_size, cfg.data.split_seed)
    rows = [[(ex.instruction, ex.input) for ex in task.test] for task in tasks]
    return [row[k] for k in range(max(map(len, rows))) for row in rows if k < len(row)]


class Server:
    """``lcia serve`` in a child process on a free loopback port."""

    def __init__(self, run_dir: Path, port: int):
        self.url, self.model = f"http://127.0.0.1:{port}", run_dir.resolve().name
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, "-m", "lcia", "serve", str(run_dir), "--port", str(port)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.Client(timeout=600)
        deadline = time.monotonic() + 300
        while not self._up():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"lcia serve did not start (exit code {self.process.poll()})")
            time.sleep(0.5)

    def _up(self) -> bool:
        try:
            return self.client.get(f"{self.url}/health").status_code == 200
        except httpx.TransportError:
            return False

    def health(self) -> dict:
        return self.client.get(f"{self.url}/health").json()

    def ask(self, client: httpx.Client, prompt: tuple[str, str], max_tokens: int) -> tuple[float, dict]:
        messages = [{"role": "system", "content": prompt[0]}, {"role": "user", "content": prompt[1]}]
        body = {"model": self.model, "max_tokens": max_tokens, "messages": messages}
        start = time.perf_counter()
        response = client.post(f"{self.url}/v1/chat/completions", json=body)
        response.raise_for_status()
        return time.perf_counter() - start, response.json()

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=60)


def phase(server: Server, prompts: list[tuple[str, str]], clients: int, requests: int, max_tokens: int) -> dict:
    """``clients`` threads, each sending ``requests`` requests in turn; the timings and the answers."""

    def client(c: int) -> list[tuple[float, dict]]:
        with httpx.Client(timeout=600) as http:
            return [server.ask(http, prompts[(c * requests + k) % len(prompts)], max_tokens) for k in range(requests)]

    before = server.health()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - start
    after = server.health()
    latencies = sorted(seconds for seconds, _ in done)
    tokens = sum(body["usage"]["completion_tokens"] for _, body in done)
    batches = after["batches"] - before["batches"]
    return {
        "clients": clients,
        "requests": len(done),
        "seconds": round(wall, 2),
        "requests_per_second": round(len(done) / wall, 2),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(statistics.quantiles(latencies, n=20, method="inclusive")[-1], 3),
        "answer_tokens_per_second": round(tokens / wall, 1),
        "mean_answer_tokens": round(tokens / len(done), 1),
        "batches": batches,
        "mean_batch": round((after["requests"] - before["requests"]) / max(batches, 1), 2),
        "largest_batch_so_far": after["largest_batch"],
        "answers": [body["choices"][0]["message"]["content"] for _, body in done],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a trained run (default: train a quick one first)")
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(args.run_dir) if args.run_dir else train_quick_run(Path(scratch))
        write_results(args.out, load_test(run_dir, args))


def load_test(run_dir: Path, args) -> dict:
    prompts = prompts_of(run_dir)
    server = Server(run_dir, args.port)
    try:
        server.ask(server.client, prompts[0], args.max_tokens)  # warm-up, untimed
        phases = [phase(server, prompts, int(c), args.requests, args.max_tokens) for c in args.concurrency.split(",")]
        asked = sorted({(c * args.requests + k) % len(prompts) for p in phases for c in range(p["clients"])
                        for k in range(args.requests)})  # fmt: skip
        alone = {i: server.ask(server.client, prompts[i], args.max_tokens)[1] for i in asked}
        health = server.health()
    finally:
        server.close()
    for p in phases:
        indices = [(c * args.requests + k) % len(prompts) for c in range(p["clients"]) for k in range(args.requests)]
        same = sum(a == alone[i]["choices"][0]["message"]["content"] for a, i in zip(p.pop("answers"), indices))
        p["answers_equal_to_one_at_a_time"] = f"{same}/{len(indices)}"
    manifest = RunDir(run_dir).read_json("manifest.json")
    about = {"run": run_dir.name, "method": health["method"], "stage": health["stage"], "device": health["device"]}
    return {"args": vars(args), **about, "precision": manifest.get("precision"), "batch_size": health["batch_size"],
            "prompts": len(prompts), "phases": phases}  # fmt: skip


if __name__ == "__main__":
    main()
