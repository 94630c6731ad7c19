"""Request bodies of the native API, with Ollama's field names.

Unknown fields are ignored (Go's JSON binding does the same), so newer clients keep working.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


KeepAlive = Optional[Union[float, str]]
Format = Optional[Union[str, dict[str, Any]]]


class GenerateBody(Body):
    model: str = ""
    prompt: Optional[str] = None
    suffix: Optional[str] = None
    system: Optional[str] = None
    template: Optional[str] = None
    context: Optional[list[int]] = None
    stream: bool = True
    raw: Optional[bool] = None
    format: Format = None
    images: Optional[list[str]] = None
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None
    think: Optional[Union[bool, str]] = None
    debug_render_only: Optional[bool] = Field(default=None, alias="_debug_render_only")


class ChatBody(Body):
    model: str = ""
    messages: Optional[list[dict[str, Any]]] = None
    tools: Optional[list[dict[str, Any]]] = None
    #: not in Ollama (which ignores it); OpenAI's values, honoured with a grammar
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    stream: bool = True
    format: Format = None
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None
    think: Optional[Union[bool, str]] = None
    debug_render_only: Optional[bool] = Field(default=None, alias="_debug_render_only")


class TokenizeBody(Body):
    model: str = ""
    content: str = ""
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None


class DetokenizeBody(Body):
    model: str = ""
    tokens: list[int] = Field(default_factory=list)
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None


class EmbedBody(Body):
    model: str = ""
    input: Union[str, list[Any]] = ""
    truncate: Optional[bool] = None
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None
    dimensions: Optional[int] = None


class EmbeddingsBody(Body):
    model: str = ""
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
    source: str
    destination: str


class ErrorBody(Body):
    error: str = Field(description="what went wrong, in one line")
