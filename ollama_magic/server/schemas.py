"""Request bodies of the native API, with Ollama's field names, and the responses /openapi.json documents.

Unknown fields are ignored (Go's JSON binding does the same), so newer clients keep working. Known
fields are typed strictly, as Go decodes them: ``"stream": "yes"`` or ``"keep_alive": true`` are a 400,
never silently read as something else.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from typing_extensions import Annotated

from ..engine.choices import MAX_CHOICES
from ..names import NAME_PATTERN

INT32_MAX = 2**31 - 1
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
#: the rerank paths of llama-server's (Jina's, Cohere's) shape, served by ``rerank_api`` and answering
#: in OpenAI's envelope (``envelopes``) also outside /v1; the first is the one /openapi.json lists first
RERANK_COMPATIBLE_PATHS = ("/v1/rerank", "/v1/reranking", "/rerank", "/reranking", "/v2/rerank")

#: A model name as a request field: never empty (a name too long for a file is refused by ModelName).
ModelNameField = Annotated[str, Field(min_length=1, description="a model name: [host/][namespace/]model[:tag]",
                                      json_schema_extra={"pattern": NAME_PATTERN})]
KeepAlive = Optional[Union[StrictInt, StrictFloat, StrictStr]]
Format = Optional[Union[Literal["json", ""], dict[str, Any]]]
Think = Optional[Union[StrictBool, Literal["low", "medium", "high", "max"]]]
TokenId = Annotated[int, Field(ge=0, le=INT32_MAX)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)


class GenerateBody(Body):
    model: ModelNameField
    prompt: Optional[str] = None
    suffix: Optional[str] = None
    system: Optional[str] = None
    template: Optional[str] = None
    context: Optional[list[TokenId]] = None
    stream: bool = True
    raw: Optional[bool] = None
    format: Format = None
    images: Optional[list[str]] = None
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None
    think: Think = None
    logprobs: Optional[StrictBool] = None
    #: 0..20, checked by the engine with Ollama's message
    top_logprobs: Optional[StrictInt] = None
    debug_render_only: Optional[bool] = Field(default=None, alias="_debug_render_only")
    #: Ollama's: cut a prompt that does not fit (default true; false: 400), shift the context when full
    truncate: Optional[bool] = None
    shift: Optional[bool] = None


class ToolCallFunction(Body):
    index: Optional[int] = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(Body):
    id: Optional[str] = None
    function: ToolCallFunction


class ChatMessage(Body):
    role: str
    content: Optional[str] = None
    thinking: Optional[str] = None
    images: Optional[list[str]] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_name: Optional[str] = None
    tool_call_id: Optional[str] = None


class ChatBody(Body):
    model: ModelNameField
    messages: Optional[list[ChatMessage]] = None
    tools: Optional[list[dict[str, Any]]] = None
    #: not in Ollama (which ignores it); OpenAI's values, honoured with a grammar
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    stream: bool = True
    format: Format = None
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None
    think: Think = None
    logprobs: Optional[StrictBool] = None
    #: 0..20, checked by the engine with Ollama's message
    top_logprobs: Optional[StrictInt] = None
    debug_render_only: Optional[bool] = Field(default=None, alias="_debug_render_only")
    #: Ollama's: cut a prompt that does not fit (default true; false: 400), shift the context when full
    truncate: Optional[bool] = None
    shift: Optional[bool] = None


class ClassifyBody(Body):
    """Not in Ollama: how likely each of ``choices`` is as the reply to ``prompt`` (templated as
    /api/generate does, or as written with ``raw``) or to ``messages`` (as /api/chat does)."""

    model: ModelNameField
    prompt: Optional[str] = None
    messages: Optional[list[ChatMessage]] = None
    #: 2 to MAX_CHOICES different labels (that they differ is checked by the engine)
    choices: list[Annotated[StrictStr, Field(min_length=1)]] = Field(
        min_length=2, max_length=MAX_CHOICES, description="the labels to score, e.g. [\"positive\", \"negative\"]")
    system: Optional[str] = None
    raw: Optional[bool] = None
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None
    truncate: Optional[bool] = None


class TokenizeBody(Body):
    model: ModelNameField
    content: str = ""
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None


class DetokenizeBody(Body):
    model: ModelNameField
    tokens: list[int] = Field(default_factory=list)
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None


class EmbedBody(Body):
    model: ModelNameField
    input: Union[str, list[str]] = ""
    truncate: Optional[bool] = None
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None
    dimensions: Optional[Annotated[int, Field(ge=1)]] = None


class EmbeddingsBody(Body):
    model: ModelNameField
    prompt: Optional[str] = None
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None


class ModelBody(Body):
    """show / delete / pull / push: ``model``, or the deprecated ``name``."""

    model: Optional[str] = None
    name: Optional[str] = None
    verbose: Optional[bool] = None
    stream: bool = True
    insecure: Optional[bool] = None

    @property
    def target(self) -> str:
        return self.model or self.name or ""


class CopyBody(Body):
    source: ModelNameField
    destination: ModelNameField


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, in one line")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, overloaded_error, api_error...")
    message: str


class AnthropicErrorBody(BaseModel):
    type: Literal["error"]
    error: AnthropicErrorDetail


# ---- documented responses (what /openapi.json promises; the schemathesis test holds us to it) -----

_ERRORS = {
    400: "a client mistake: bad JSON, a bad field, an unknown option",
    401: "an API key is configured and the request does not carry it; or a registry refused a pull/push",
    403: "a foreign Origin, or a Host that does not name this machine",
    404: "no such model or blob",
    405: "the path exists, with other methods",
    413: "the body is over OLLAMA_MAGIC_MAX_BODY",
    500: "a model that cannot load or run, or a registry that cannot be reached (a bug otherwise)",
    503: "the server is busy",
}


def _errors(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model, "description": words} for status, words in _ERRORS.items()}


def native_responses() -> dict[int | str, dict[str, Any]]:
    return _errors(ErrorBody)


def openai_responses() -> dict[int | str, dict[str, Any]]:
    return _errors(OpenAIErrorBody)


def anthropic_responses() -> dict[int | str, dict[str, Any]]:
    return _errors(AnthropicErrorBody)


def ndjson_responses() -> dict[int | str, dict[str, Any]]:
    """A JSON object with ``stream: false``, else one JSON object per line."""
    return {200: {"description": "one JSON object, or NDJSON lines when streaming",
                  "content": {"application/json": {}, NDJSON: {"schema": {"type": "string"}}}}}


def sse_responses() -> dict[int | str, dict[str, Any]]:
    return {200: {"description": "one JSON object, or server-sent events ending with data: [DONE] when streaming",
                  "content": {"application/json": {}, SSE: {"schema": {"type": "string"}}}}}
