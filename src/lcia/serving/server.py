"""The FastAPI app over one trained run's Session, and ``lcia serve``, which runs it with uvicorn.

POST /v1/chat/completions   answers (``stream: true``: server-sent chunks), routed as evaluation routes
GET  /v1/models             the run as one model, named after its directory
GET  /health                the run, and how many requests and batches were answered
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lcia.errors import LciaError
from lcia.serving.batcher import Batcher, Job
from lcia.serving.requests import ApiError, Chat, parse_chat
from lcia.serving.responses import Reply, TextDeltas, stream_events

log = logging.getLogger(__name__)


def create_app(
    session, model_id: str, stage: int | None, *, created: int | None = None, batch_size: int | None = None
) -> FastAPI:
    """The app answering with ``session`` (a trained run's stage, as ``open_saved`` builds it) as ``model_id``.
    Its one model worker (``app.state.batcher``) runs from the app's startup to its shutdown and answers up to
    ``batch_size`` requests at once (default: the run's ``evaluation.batch_size``)."""
    batcher = Batcher(session, batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="lcia serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    _error_handlers(app)
    card = {"id": model_id, "object": "model", "created": created or int(time.time()), "owned_by": "lcia"}

    @app.get("/health")
    async def health() -> dict:
        about = {"model": model_id, "stage": stage, "method": session.cfg.method.name, "precision": session.precision}
        return {"status": "ok", **about, "device": str(session.device), "batch_size": batcher.batch_size,
                "queued": batcher.queued, **batcher.stats}  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict:
        if name != model_id:
            raise ApiError(404, f"The model {name!r} does not exist: this server answers {model_id!r}", "model",
                           "model_not_found")  # fmt: skip
        return card

    limit = session.cfg.evaluation.max_length // 2  # the prompt keeps the other half of the length budget

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        chat = parse_chat(await request.body(), model_id, limit)
        reply = Reply(model_id, stage, chat.notes)
        if chat.stream:
            return await _streamed(batcher, chat, reply, TextDeltas(session.tokenizer))
        answer = await asyncio.wrap_future(batcher.submit(Job(chat.example, chat.max_new_tokens)))
        return reply.completion(answer)

    return app


async def _streamed(batcher: Batcher, chat: Chat, reply: Reply, deltas: TextDeltas) -> StreamingResponse:
    """Tokens go from the worker thread to this request's queue on the event loop; ``None`` ends them. The
    response starts with the first token, so a request that fails before it gets a plain error status."""
    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue = asyncio.Queue()
    put = _on_loop(loop, tokens.put_nowait)
    future = batcher.submit(Job(chat.example, chat.max_new_tokens, on_token=put))
    future.add_done_callback(lambda _: put(None))
    answer = asyncio.wrap_future(future)
    first = await tokens.get()
    if first is None:
        await answer  # raises this request's error, if any, as its response
    events = stream_events(first, tokens, answer, deltas, reply, chat.include_usage)
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _on_loop(loop: asyncio.AbstractEventLoop, put: Callable) -> Callable:
    """``put`` called on ``loop`` from the worker thread; a loop already closed (the server stopping) must not
    fail the worker's batch."""

    def call(item) -> None:
        try:
            loop.call_soon_threadsafe(put, item)
        except RuntimeError:
            pass

    return call


def _error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        message = f"{request.method} {request.url.path}: {err.detail}"
        return await api_error(request, ApiError(err.status_code, message, code=code))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return await api_error(request, ApiError(400, str(err.errors()[0].get("msg", "invalid request"))))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return await api_error(request, ApiError(500, f"the server failed to answer: {type(err).__name__}"))


def serve(run_dir: str, *, host: str = "127.0.0.1", port: int = 8000, stage: int | None = None,
          batch_size: int | None = None, log_line: Callable[[str], None] = print) -> None:  # fmt: skip
    """``lcia serve``: the run's stage (default: its last) loaded once, then answered until Ctrl-C."""
    import uvicorn

    from lcia.pipeline.session import open_saved

    if batch_size is not None and batch_size < 1:
        raise LciaError(f"--batch-size: expected 1 or more, got {batch_size}")
    path = Path(run_dir).resolve()
    session, stage = open_saved(path, stage)
    model_id = path.name
    created = int((path / "manifest.json").stat().st_mtime)
    app = create_app(session, model_id, stage, created=created, batch_size=batch_size)
    about = f"stage {stage}, method {session.cfg.method.name}, {session.precision} on {session.device}, "
    about += f"batches of up to {app.state.batcher.batch_size}"
    log_line(f"lcia serve: model {model_id!r} ({about}) at http://{host}:{port}/v1")
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info")).run()
    except SystemExit as err:  # uvicorn exits when it cannot listen (the port taken, say), after logging why
        if err.code:
            raise LciaError(f"could not serve on {host}:{port}: see the log above") from None
