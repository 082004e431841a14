"""The one thread that owns the model: requests that arrive together are answered by one batched decode.

Requests wait in a queue. The worker takes the first, then everything else queued up to the run's evaluation
batch size, routes each as evaluation routes a test instance (``method.explain_route``), and answers
them with one ``generate_answers`` call with per-request adapters, the evaluation decoder itself. Requests that
ask for different ``max_tokens`` get one call per distinct value, since it sets the decoding steps and each
prompt's length budget; inside a call each adapter's requests decode together (one adapter is active at a
time). Requests arriving meanwhile queue for the next batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from lcia.data.prompts import check_image_kept, encode_prompt, fit
from lcia.data.schema import Example
from lcia.errors import LciaError
from lcia.evaluation.generate import generate_answers
from lcia.methods import Route
from lcia.serving.requests import ApiError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    text: str
    route: Route
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop: the end-of-turn token came; length: max_new_tokens ran out first


@dataclass
class Job:
    example: Example
    max_new_tokens: int
    on_token: Callable[[int], None] | None = None  # hears each answer token, on the worker thread
    future: Future = field(default_factory=Future)


@dataclass
class _Ready:
    """A job routed and measured, about to be decoded."""

    job: Job
    route: Route
    prompt_tokens: int
    tokens: int = 0  # answer tokens heard so far


class Batcher:
    def __init__(self, session, batch_size: int | None = None):
        self.session = session
        self.batch_size = batch_size or session.cfg.evaluation.batch_size
        self.queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.hold = threading.Lock()  # held while a batch is answered: a test holds it to line requests up
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="lcia-serve-model", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in hand; requests still queued get a 503."""
        if self._thread is None:
            return
        self.queue.put(None)
        self._thread.join()
        self._thread = None
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(ApiError(503, "the server is shutting down", code="shutting_down"))

    def submit(self, job: Job) -> Future:
        self.queue.put(job)
        return job.future

    @property
    def queued(self) -> int:
        return self.queue.qsize()

    def _work(self) -> None:
        running = True
        while running:
            first = self.queue.get()
            if first is None:
                return
            with self.hold:
                jobs, running = self._take(first)
                self._answer_all(jobs)

    def _take(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` and whatever else is queued, up to the batch size; False once the stop sign was taken.
        A request whose handler was cancelled (its future with it) is dropped here; the others' futures can no
        longer be cancelled, so setting their results cannot fail."""
        jobs, running = [first], True
        while len(jobs) < self.batch_size:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                running = False
                break
            jobs.append(job)
        return [job for job in jobs if job.future.set_running_or_notify_cancel()], running

    def _answer_all(self, jobs: list[Job]) -> None:
        by_length: dict[int, list[_Ready]] = {}
        for job in jobs:
            ready = self._prepare(job)
            if ready is not None:
                by_length.setdefault(job.max_new_tokens, []).append(ready)
        for max_new_tokens, batch in by_length.items():
            self._decode(batch, max_new_tokens)

    def _prepare(self, job: Job) -> _Ready | None:
        """The job's route and prompt length; a prompt lcia cannot answer fails its own request only."""
        s = self.session
        try:
            route = s.method.explain_route(job.example)
            slots = s.images.slots if s.images is not None else None
            prompt = fit(
                encode_prompt(s.tokenizer, job.example, slots), s.cfg.evaluation.max_length - job.max_new_tokens
            )
            check_image_kept(prompt, job.example, slots, "evaluation.max_length")
        except LciaError as err:
            job.future.set_exception(ApiError(400, str(err), "messages"))
            return None
        except Exception as err:  # a bug: its request gets a 500, the server keeps serving
            log.exception("routing a request failed")
            job.future.set_exception(err)
            return None
        return _Ready(job, route, len(prompt))

    def _decode(self, batch: list[_Ready], max_new_tokens: int) -> None:
        """One ``generate_answers`` call for the batch; each request's future gets its answer."""
        s = self.session

        def hear(i: int, token: int) -> None:
            batch[i].tokens += 1
            if batch[i].job.on_token is not None:
                batch[i].job.on_token(token)

        try:
            texts = generate_answers(
                s.model,
                s.tokenizer,
                [r.job.example for r in batch],
                max_new_tokens=max_new_tokens,
                batch_size=self.batch_size,
                max_length=s.cfg.evaluation.max_length,
                adapters=[r.route.adapter for r in batch],
                progress=False,
                images=s.images,
                precision=s.precision,
                on_token=hear,
            )
        except Exception as err:
            log.exception("a batch of %d requests failed", len(batch))
            for r in batch:
                r.job.future.set_exception(err)
            return
        self.stats["batches"] += 1
        self.stats["requests"] += len(batch)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        for r, text in zip(batch, texts):
            reason = "length" if r.tokens >= max_new_tokens else "stop"
            r.job.future.set_result(Answer(text, r.route, r.prompt_tokens, r.tokens, reason))
