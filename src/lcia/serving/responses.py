"""OpenAI's response bodies for a chat completion: the whole answer at once, or server-sent chunks as it decodes.

Every response carries an ``lcia`` field beside OpenAI's: the adapter that answered, every candidate's routing
score, what the adapter trained on, the method's rule, the run's stage and notes (an ignored option). A stream
sends it in its last chunk, the one with ``finish_reason``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lcia.serving.batcher import Answer
from lcia.serving.requests import ApiError

log = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


@dataclass
class Reply:
    """What every body of one request shares."""

    model: str
    stage: int | None
    notes: list[str]
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "system_fingerprint": None}

    def route(self, answer: Answer) -> dict:
        route = answer.route
        return {
            "adapter": route.adapter,
            "holds": route.holds.get(route.adapter, "") if route.adapter is not None else "",
            "scores": {adapter: float(score) for adapter, score in route.scores.items()},
            "rule": route.rule,
            "stage": self.stage,
            "notes": self.notes,
        }

    def completion(self, answer: Answer) -> dict:
        message = {"role": "assistant", "content": answer.text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}
        return self.head("chat.completion") | {"choices": [choice], "usage": usage(answer), "lcia": self.route(answer)}

    def chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self.head("chat.completion.chunk") | {"choices": [choice]}


def usage(answer: Answer) -> dict:
    total = answer.prompt_tokens + answer.completion_tokens
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens, "total_tokens": total}


def event(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


class TextDeltas:
    """Answer tokens as text pieces that join to exactly the finished answer (``decode(tokens).strip()``): each
    piece is what the tokens decoded so far add, less what may still change: trailing whitespace (a finished
    answer is stripped) and an unfinished UTF-8 character (U+FFFD until its last byte comes)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.tokens, self.sent = tokenizer, [], ""
        # A tokenizer that tidies spaces before punctuation rewrites text already decoded: only the end is sure.
        self.live = not getattr(tokenizer, "clean_up_tokenization_spaces", False)

    def push(self, tokens: list[int]) -> str:
        self.tokens += tokens
        if not self.live or not tokens:
            return ""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).strip().rstrip("\ufffd").rstrip()
        if not text.startswith(self.sent):  # a decoder that rewrote earlier text: the rest comes at the end
            self.live = False
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta

    def finish(self, answer: str) -> str:
        if not answer.startswith(self.sent):  # never seen with a tokenizer that passes the check above
            log.warning("a streamed answer drifted from the finished one: %r is not a prefix of %r", self.sent, answer)
            return ""
        return answer[len(self.sent) :]


async def stream_events(
    first: int | None, tokens: asyncio.Queue, answer: asyncio.Future, deltas: TextDeltas, reply: Reply, usage_too: bool
) -> AsyncIterator[str]:
    """The chunks of one streamed answer: its role, its text as the tokens come (those already waiting are
    sent together), the rest of the finished answer, the chunk with ``finish_reason`` and the ``lcia`` field,
    optionally the usage chunk, then ``[DONE]``. ``None`` on ``tokens`` says the answer is finished."""
    yield event(reply.chunk({"role": "assistant", "content": ""}))
    waiting = [first]
    while True:
        while not tokens.empty():
            waiting.append(tokens.get_nowait())
        text = deltas.push([t for t in waiting if t is not None])
        if text:
            yield event(reply.chunk({"content": text}))
        if None in waiting:  # the worker's last word on this answer
            break
        waiting = [await tokens.get()]
    try:
        finished: Answer = await answer
    except ApiError as err:
        yield event(err.body())
        return
    except Exception:  # a bug while decoding; the status line was sent already, so the error is an event
        log.exception("a streamed request failed")
        yield event(ApiError(500, "the server failed to answer this request").body())
        return
    rest = deltas.finish(finished.text)
    if rest:
        yield event(reply.chunk({"content": rest}))
    yield event(reply.chunk({}, finished.finish_reason) | {"lcia": reply.route(finished)})
    if usage_too:
        yield event(reply.head("chat.completion.chunk") | {"choices": [], "usage": usage(finished)})
    yield DONE
