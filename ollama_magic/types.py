"""Wire types shared by every front end, with Ollama's field names and shapes.

They are pydantic models (so the HTTP server can serve them as they are) and subscriptable like the
official ``ollama`` client's types (``resp["models"]`` and ``resp.models`` both work), so code written
against ``ollama.Client`` reads our results unchanged.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Optional, Sequence, Union

import ollama
from ollama import _types as ollama_types
from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return getattr(self, key, None) is not None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


class ModelDetails(WireModel):
    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: Optional[list[str]] = None
    parameter_size: str = ""
    quantization_level: str = ""


class ListedModelDetails(ModelDetails):
    """/api/tags adds the sizes clients need to budget a context or a vector store."""

    context_length: Optional[int] = None
    embedding_length: Optional[int] = None


class ListedModel(WireModel):
    name: str
    model: str
    modified_at: datetime
    size: int
    digest: str
    details: ListedModelDetails
    capabilities: Optional[list[str]] = None


class ListResponse(WireModel):
    """``/api/tags``. Not a subclass of ``ollama.ListResponse``: its entries carry ``name``,
    ``capabilities`` and sizes in ``details`` that the client's ``ListResponse.Model`` lacks, and they are
    required here (the server always sends them). The attributes the client's type has
    (``models[i].model``, ``.size``, ``.digest``, ``.modified_at``, ``.details``) read the same
    (tests/unit/test_wire_types.py)."""

    models: list[ListedModel]


class Message(WireModel):
    role: str
    content: str = ""


class ShowResponse(WireModel):
    """``/api/show``. Not a subclass of ``ollama.ShowResponse``: that one names the wire field
    ``model_info`` as the attribute ``modelinfo`` (an alias), while ours keeps the wire name and reads
    ``modelinfo`` through a property; it also lacks ``system``, ``projector_info`` and ``messages``.
    Every attribute the client's type has reads the same here (tests/unit/test_wire_types.py)."""

    modelfile: str
    parameters: str = ""
    template: str = ""
    system: str = ""
    license: str = ""
    details: ModelDetails
    model_info: dict[str, Any] = Field(default_factory=dict)
    #: the projector GGUF's metadata (vision models), as Ollama's ``projector_info``
    projector_info: Optional[dict[str, Any]] = None
    capabilities: list[str] = Field(default_factory=list)
    messages: Optional[list[Message]] = None
    modified_at: datetime

    @property
    def modelinfo(self) -> dict[str, Any]:
        """The ``ollama`` client's attribute name for ``model_info``."""
        return self.model_info


class RunningModel(ollama.ProcessResponse.Model):
    """One ``/api/ps`` entry, plus where its layers run: ``gpu_layers`` of its ``layers`` are on the GPU.

    The two fields are ours (Ollama's ps shows only ``size_vram``); clients that do not know them
    ignore them, and a real Ollama server leaves them out (None)."""

    gpu_layers: Optional[int] = None
    layers: Optional[int] = None
    #: bytes per llama.cpp device (``CPU``, ``CUDA0``, ``RPC0[host:port]``), as llama.cpp reported
    #: allocating them: ``size_vram`` is the sum of those not on the CPU
    devices: Optional[dict[str, int]] = None
    #: what the memory planner changed to fit the load (fewer slots, a smaller context), one line each
    notes: Optional[list[str]] = None


class RunningModels(ollama.ProcessResponse):
    """``/api/ps``, plus ``gpu_offload``: whether the server's llama.cpp build can use a GPU at all
    (None: the server does not say, as a real Ollama server does not)."""

    models: Sequence[RunningModel]
    gpu_offload: Optional[bool] = None


class ProgressResponse(WireModel):
    """A pull/push/create progress line. Not a subclass of ``ollama.ProgressResponse`` only to keep
    ``status`` required (every line we send has one); the fields and their names are the client's."""

    status: str
    digest: Optional[str] = None
    total: Optional[int] = None
    completed: Optional[int] = None


class CreateRequest(WireModel):
    """Both forms of /api/create: the current structured one and the legacy ``modelfile`` text."""

    model: Optional[str] = None
    name: Optional[str] = None  # legacy alias of ``model``
    from_: Optional[str] = Field(default=None, alias="from")
    files: Optional[dict[str, str]] = None
    adapters: Optional[dict[str, str]] = None
    template: Optional[str] = None
    system: Optional[str] = None
    license: Optional[Union[str, list[str]]] = None
    parameters: Optional[dict[str, Any]] = None
    messages: Optional[list[Message]] = None
    modelfile: Optional[str] = None
    path: Optional[str] = None
    quantize: Optional[str] = None
    quantization: Optional[str] = None
    stream: Optional[bool] = None


# ---- generate/chat results: the ``ollama`` client's types plus the fields current Ollama sends ----


class ToolCallFunction(ollama.Message.ToolCall.Function):
    index: int = 0


class ToolCall(ollama.Message.ToolCall):
    """Ollama's ToolCall: an ``id`` and the call's ``function.index`` in the reply."""

    id: Optional[str] = None
    function: ToolCallFunction


class ChatMessage(ollama.Message):
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None


class ContextFit(WireModel):
    """How a chat fits the model's context, by the engine's one rule (``engine/context_window.py``).

    Ours, not Ollama's: ``Engine.fit_context`` returns it and our ``_debug_render_only`` chat answers
    carry it as ``_debug_info.context_fit``, so a notebook can say what was left out before it sends."""

    num_ctx: int
    #: the oldest messages left out (whole turns; never a system message or the last user message)
    dropped_messages: int = 0
    #: the fitted prompt's tokens; None when it is short enough not to need counting
    prompt_tokens: Optional[int] = None


class DebugInfo(WireModel):
    rendered_template: str
    image_count: Optional[int] = None
    context_fit: Optional[ContextFit] = None


class TokenLogprob(ollama_types.TokenLogprob):
    """Ollama's ``TokenLogprob``: a token's text, its log probability and its UTF-8 bytes (a token
    may hold part of a character, which its text then shows as U+FFFD)."""

    bytes: Optional[list[int]] = None


class Logprob(TokenLogprob):
    """One generated token and, with ``top_logprobs``, the likeliest tokens at its position."""

    top_logprobs: Optional[list[TokenLogprob]] = None


class ChatResponse(ollama.ChatResponse):
    model_config = ConfigDict(populate_by_name=True)

    message: ChatMessage
    logprobs: Optional[list[Logprob]] = None
    debug_info: Optional[DebugInfo] = Field(default=None, alias="_debug_info")
    #: ours: on the final chunk, the oldest messages left out to fit the context (absent: none)
    dropped_messages: Optional[int] = None
    #: ours, not on the wire (Ollama's done_reason is "stop" either way): the stop string that ended
    #: the reply, for Anthropic's stop_reason "stop_sequence"
    stop_sequence: Optional[str] = Field(default=None, exclude=True)


class GenerateResponse(ollama.GenerateResponse):
    model_config = ConfigDict(populate_by_name=True)

    logprobs: Optional[list[Logprob]] = None
    debug_info: Optional[DebugInfo] = Field(default=None, alias="_debug_info")


class TokenizeResponse(WireModel):
    model: str
    tokens: list[int]


class DetokenizeResponse(WireModel):
    model: str
    content: str


class ClassifyResponse(WireModel):
    """``/api/classify`` and ``Engine.classify``: each choice's probability after the prompt."""

    model: str
    created_at: str
    #: the most likely choice
    label: str
    #: each choice's probability among the choices, in the order given (they sum to 1)
    probabilities: dict[str, float]
    #: each choice's log probability as the model gives it (the sum over its tokens), not normalised
    logprobs: dict[str, float]
    #: of ``probabilities``, in nats: 0 when one choice is certain, ln(n) when all are equal
    entropy: float
    prompt_eval_count: int = 0
    load_duration: int = 0
    total_duration: int = 0

    @classmethod
    def from_logprobs(cls, model: str, created_at: str, logprobs: dict[str, float], **counts: int) -> "ClassifyResponse":
        """The response for these labels' log probabilities (in the order given): the one place the
        labels' distribution is worked out, for the engine's answers and the column cache's alike."""
        labels, values = list(logprobs), list(logprobs.values())
        peak = max(values)
        weights = [math.exp(v - peak) for v in values]
        total = sum(weights)
        probabilities = [w / total for w in weights]
        entropy = -sum(p * math.log(p) for p in probabilities if p > 0)
        return cls(model=model, created_at=created_at, label=labels[values.index(peak)],
                   probabilities=dict(zip(labels, probabilities)), logprobs=dict(logprobs), entropy=entropy, **counts)


class RerankResult(WireModel):
    """One ranked document: its place in the request's list, its score, and its text."""

    index: int
    #: a cross-encoder's raw classifier output (unbounded, as llama-server gives it), or a chat model's
    #: probability of "yes" (0 to 1): compare scores of one model only
    relevance_score: float
    document: Optional[str] = None


class RerankResponse(WireModel):
    """``Engine.rerank``, ``/api/rerank`` and ``/v1/rerank``: the documents, most relevant first."""

    model: str
    results: list[RerankResult]
    #: tokens the model read for the ranking (the routes' ``usage``)
    prompt_eval_count: int = 0
