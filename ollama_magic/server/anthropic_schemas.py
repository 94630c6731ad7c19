"""Bodies of Anthropic's Messages API (``/v1/messages``), as its reference names the fields.

Requests are validated here so a bad one is a 400 in Anthropic's envelope before the engine sees it;
unknown fields (``metadata``, ``service_tier``, ``cache_control`` on a block...) are ignored, as
Ollama's Go binding ignores them. The response models document what ``/openapi.json`` promises.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Annotated

from .schemas import INT32_MAX, ModelNameField


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---- request content blocks -------------------------------------------------------------------------


class TextBlock(_Body):
    type: Literal["text"]
    text: str


class ImageSource(_Body):
    type: Literal["base64", "url"] = Field(description="base64 only: URL images are refused, as Ollama refuses them")
    media_type: Optional[str] = None
    data: Optional[str] = None
    url: Optional[str] = None


class ImageBlock(_Body):
    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(_Body):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_Body):
    type: Literal["tool_result"]
    tool_use_id: str
    content: Union[str, list[Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]], None] = None
    is_error: Optional[bool] = None


class ThinkingBlock(_Body):
    type: Literal["thinking"]
    thinking: str
    signature: Optional[str] = None


class RedactedThinkingBlock(_Body):
    """Accepted and left out of the prompt: its text is Anthropic's encryption, no model here can read it."""

    type: Literal["redacted_thinking"]
    data: str = ""


ContentBlock = Annotated[Union[TextBlock, ImageBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock,
                               RedactedThinkingBlock], Field(discriminator="type")]


class MessageParam(_Body):
    role: Literal["user", "assistant"]
    content: Union[str, list[ContentBlock]]


class Tool(_Body):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    type: Optional[str] = Field(default=None, description='"custom" or absent: server tools (web search...) are refused')


class ToolChoice(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: Optional[str] = None
    disable_parallel_tool_use: Optional[bool] = None


class ThinkingConfig(_Body):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"] = Field(
        description="enabled / disabled: think or not; adaptive, between_tools: the model's default")
    budget_tokens: Optional[int] = Field(default=None, description="accepted, not enforced (as Ollama)")


class JSONOutputFormat(_Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    effort: Optional[str] = Field(default=None, description="low, medium, high, xhigh, max: Ollama's think levels")
    format: Optional[JSONOutputFormat] = Field(default=None, description="structured output: the reply follows the schema")


System = Union[str, list[TextBlock], None]


class CountTokensBody(_Body):
    model: ModelNameField
    messages: list[MessageParam] = Field(min_length=1)
    system: System = None
    tools: Optional[list[Tool]] = None
    tool_choice: Optional[ToolChoice] = None
    thinking: Optional[ThinkingConfig] = None
    output_config: Optional[OutputConfig] = None


class MessagesBody(CountTokensBody):
    max_tokens: int = Field(ge=1, le=INT32_MAX, description="required, as in Anthropic's API")
    stream: bool = False
    temperature: Optional[float] = Field(default=None, ge=0, le=1)
    top_p: Optional[float] = Field(default=None, ge=0, le=1)
    top_k: Optional[int] = Field(default=None, ge=0, le=INT32_MAX)
    stop_sequences: Optional[list[str]] = None
    metadata: Optional[dict[str, Any]] = Field(default=None, description="accepted and ignored")


# ---- responses -------------------------------------------------------------------------------------


class TextOut(BaseModel):
    type: Literal["text"]
    text: str


class ThinkingOut(BaseModel):
    type: Literal["thinking"]
    thinking: str
    signature: str = Field(description="always empty: a local trace carries no signature")


class ToolUseOut(BaseModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class Usage(BaseModel):
    input_tokens: int = Field(description="the prompt's tokens, counted with the model's tokenizer")
    output_tokens: int


class MessageResponse(BaseModel):
    """The answer of ``POST /v1/messages`` without ``stream`` (with it: server-sent events)."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[Annotated[Union[ThinkingOut, TextOut, ToolUseOut], Field(discriminator="type")]]
    stop_reason: Optional[Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]]
    stop_sequence: Optional[str]
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int


__all__ = ["CountTokensBody", "MessageResponse", "MessagesBody", "TokenCount"]
