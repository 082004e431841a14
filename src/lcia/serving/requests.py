"""A chat-completions request, checked and mapped onto the :class:`~lcia.data.schema.Example` that lcia answers.

The mapping is the one lcia's conversational data readers use, so a request is answered (and routed) like a
data record with the same messages:

* the system message (``developer`` is OpenAI's newer name for it) is the instruction, which routes the
  request; several leading system messages are joined with newlines;
* the last message must be the user's: it is the input;
* without a system message the first user turn is the instruction; one user turn alone is then the
  instruction with no input, as ``lcia ask INSTRUCTION`` answers it;
* earlier user and assistant turns are kept verbatim in the prompt (``Example.messages``); the run's tasks
  were single-turn, so such a prompt is out of what the adapters trained on, but it is the model's own.

Content is a string or a list of text parts; images, tools and sampling are refused with a 400 error, except
``temperature``, which is accepted and ignored with a note in the response (decoding is greedy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lcia.data.schema import Example

DEFAULT_MAX_TOKENS = 64

# Options that change what a sampler would return: refused unless at their no-op value.
_NO_OP = {
    "stop": (None, [], ""),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "web_search_options": (None,),
}
_SYSTEM_ROLES = ("system", "developer")


class ApiError(Exception):
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = "invalid_request_error" if status < 500 else "server_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")  # name, refusal...: nothing the prompt uses

    role: str
    content: Any = None  # a string or a list of parts: checked by _text, which names the part


class _StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``: the fields lcia reads, those it accepts and ignores
    (``user``, ``seed``: greedy answers repeat anyway; ``top_p``: the greedy token is in every nucleus), and
    those refused unless at their no-op value (``_NO_OP``). Any other field is an error, as OpenAI's API has it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: str
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    seed: int | None = None
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None
    reasoning_effort: Any = None
    service_tier: Any = None
    stop: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None


@dataclass
class Chat:
    """A checked request: what to answer, how long, how to send it, and notes for the response."""

    example: Example
    max_new_tokens: int
    stream: bool = False
    include_usage: bool = False
    notes: list[str] = field(default_factory=list)


def parse_chat(body: bytes, model_id: str, max_tokens_limit: int) -> Chat:
    """The request in ``body`` (raw JSON), or an :class:`ApiError` that names the offending parameter."""
    try:
        request = ChatRequest.model_validate_json(body)
    except ValidationError as err:
        raise _validation_error(err) from None
    if request.model != model_id:
        raise ApiError(404, f"The model {request.model!r} does not exist: this server answers {model_id!r}",
                       "model", "model_not_found")  # fmt: skip
    _refuse_unsupported(request)
    chat = Chat(to_example(request.messages), _max_new_tokens(request, max_tokens_limit), bool(request.stream))
    chat.include_usage = chat.stream and request.stream_options is not None and request.stream_options.include_usage
    if request.temperature not in (None, 0):
        chat.notes.append(f"temperature {request.temperature} ignored: answers are greedy (temperature 0)")
    return chat


def _validation_error(err: ValidationError) -> ApiError:
    first = err.errors()[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"The body is not valid JSON: {first['msg']}", None, "invalid_json")
    param = _param(first["loc"])
    if first["type"] == "extra_forbidden":
        return ApiError(400, f"Unrecognized request argument supplied: {param}", param, "unknown_parameter")
    if first["type"] == "missing":
        return ApiError(400, f"Missing required parameter: {param!r}", param, "missing_required_parameter")
    where = f"{param}: " if param else "the body: "
    return ApiError(400, where + first["msg"], param, "invalid_type" if first["type"].endswith("_type") else None)


def _param(loc: tuple) -> str | None:
    """``("messages", 0, "role")`` as ``messages[0].role``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or None


def _refuse_unsupported(request: ChatRequest) -> None:
    if request.n is not None and request.n != 1:
        raise ApiError(400, f"n={request.n}: lcia serve returns one choice (n=1): greedy choices are all the same",
                       "n", "unsupported_value")  # fmt: skip
    for name, no_ops in _NO_OP.items():
        value = getattr(request, name)
        if not any(value == no_op and type(value) is type(no_op) for no_op in no_ops):
            raise ApiError(400, f"{name} is not supported by lcia serve (greedy text answers only)", name,
                           "unsupported_parameter")  # fmt: skip
    if request.response_format not in (None, {"type": "text"}):
        raise ApiError(400, "response_format: only {'type': 'text'} is supported", "response_format",
                       "unsupported_value")  # fmt: skip


def _max_new_tokens(request: ChatRequest, limit: int) -> int:
    name = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    value = getattr(request, name)
    if value is None:
        return min(DEFAULT_MAX_TOKENS, limit)
    if not 1 <= value <= limit:
        raise ApiError(400, f"{name}={value}: expected 1 to {limit} (half the run's evaluation.max_length, so that "
                       "the prompt keeps the other half)", name, "invalid_value")  # fmt: skip
    return value


def to_example(messages: list[_Message]) -> Example:
    """The request's messages as an example (the mapping in this module's docstring)."""
    turns = [(_role(m.role, k), _text(m.content, k)) for k, m in enumerate(messages)]
    systems = 0
    while systems < len(turns) and turns[systems][0] == "system":
        systems += 1
    later = next((k for k, (role, _) in enumerate(turns) if role == "system" and k >= systems), None)
    if later is not None:
        raise ApiError(400, "a system message must come before the conversation's turns", f"messages[{later}].role")
    if turns[-1][0] != "user":
        raise ApiError(400, f"the last message must be the user's, got {turns[-1][0]!r}", f"messages[{len(turns) - 1}]")
    system = "\n".join(text for _, text in turns[:systems])
    if systems == len(turns) - 1:  # one user turn: the instruction and input of `lcia ask`
        if systems:
            return Example(instruction=system, input=turns[-1][1], output="")
        return Example(instruction=turns[-1][1], input="", output="")
    conversation = ([{"role": "system", "content": system}] if systems else []) + [
        {"role": role, "content": text} for role, text in turns[systems:]
    ]
    first_user = next(text for role, text in turns if role == "user")
    return Example(instruction=system if systems else first_user, input=turns[-1][1], output="",
                   messages=tuple(conversation))  # fmt: skip


def _role(role: str, k: int) -> str:
    if role in _SYSTEM_ROLES:
        return "system"
    if role not in ("user", "assistant"):
        raise ApiError(400, f"role {role!r} is not supported: system, developer, user or assistant",
                       f"messages[{k}].role", "unsupported_value")  # fmt: skip
    return role


def _text(content: Any, k: int) -> str:
    """A message's content as one string: a string, or a list of text parts joined as they come."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(400, "expected a string or a list of text parts", f"messages[{k}].content", "invalid_type")
    parts = []
    for j, part in enumerate(content):
        where = f"messages[{k}].content[{j}]"
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ApiError(400, f"content part of type {kind!r}: lcia serve takes text parts only", where,
                           "unsupported_content")  # fmt: skip
        if not isinstance(part.get("text"), str):
            raise ApiError(400, "a text part needs a string 'text'", f"{where}.text", "invalid_type")
        parts.append(part["text"])
    return "".join(parts)
