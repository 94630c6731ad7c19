"""What a request asks for, checked and normalised before any model work: the engine's request rules.

Each function is pure (the model's record and capabilities come in as arguments), so each rule is
tested without a model and written once for ``generate``, ``chat``, ``embed`` and the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from .. import envconfig
from ..errors import InvalidRequest
from ..names import ModelName
from ..options import OPTION_DEFAULTS, check_options
from ..store import manifests as mt
from .context_window import ContextWindow
from .images import NO_VISION, Picture, image_bytes
from .images import pictures as decode_pictures
from .prompt import PromptTemplate
from .grammar import JSON_GRAMMAR, schema_grammar
from .thinking import check_think, think_enabled

if TYPE_CHECKING:
    from ..store.store import ModelRecord


def as_dict(value: Any) -> dict[str, Any]:
    """A pydantic model (``ollama.Message``, ``ollama.Tool``) or a mapping, as a plain dict."""
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True, by_alias=True)
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidRequest(f"expected an object, got {type(value).__name__}")


def tool_dict(tool: Any) -> dict[str, Any]:
    """A tool as the template sees it; a plain Python function is described as ``ollama`` does."""
    if callable(tool) and not hasattr(tool, "model_dump"):
        from ollama._utils import convert_function_to_tool

        tool = convert_function_to_tool(tool)
    return as_dict(tool)


def check_model_name(model: str) -> None:
    """An empty or malformed model name is the caller's mistake (400), before the store is asked."""
    if not model:
        raise InvalidRequest("model is required")
    ModelName.parse(model)


def options(parameters: Mapping[str, Any], request: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request's options over the model's Modelfile ``parameters`` over the defaults."""
    if request is not None and hasattr(request, "model_dump"):
        request = request.model_dump(exclude_none=True)  # ollama.Options
    merged = dict(OPTION_DEFAULTS)
    merged["num_ctx"] = envconfig.context_length()
    merged.update(check_options(parameters, strict=False))
    merged.update(check_options(request, strict=False))
    return merged


def require(record: ModelRecord, capabilities: list[str], capability: str, verb: str) -> None:
    """Refuse a request needing a capability the model lacks, by the rule ``show`` lists them with."""
    if capability in capabilities:
        return
    if capability == "completion":
        raise InvalidRequest(f'"{record.name.short}" does not support {verb}: it is an embedding model')
    n = record.name
    raise InvalidRequest(f"{n.host}/{n.namespace}/{n.model}:{n.tag} does not support {capability}")


def pictures(record: ModelRecord, capabilities: list[str], images: list[Any]) -> list[Picture]:
    """A request's images, decoded; refused (400) unless the model can see, in Ollama's order:
    unreadable base64 first, then a model without vision, then too many or non-images."""
    if not images:
        return []
    encoded = [image_bytes(image) for image in images]
    if "vision" not in capabilities:
        raise InvalidRequest(NO_VISION)
    if not record.manifest.layers_of(mt.PROJECTOR):
        raise InvalidRequest(f"{NO_VISION}: {record.name.short}'s vision weights are inside its model GGUF "
                             "(Ollama's own engine format), which llama.cpp cannot load; a model with a "
                             "projector layer (an mmproj GGUF) is needed")
    return decode_pictures(encoded)


def message(value: Any) -> dict[str, Any]:
    """A chat message as a dict with a known role and string content."""
    m = as_dict(value)
    role = m.get("role")
    if role not in ("system", "user", "assistant", "tool"):
        raise InvalidRequest(f"invalid message role {role!r}: use system, user, assistant or tool")
    content = m.get("content")
    if content is not None and not isinstance(content, str):
        raise InvalidRequest("message content must be a string")
    m["content"] = content or ""
    return m


def think(model: str, tmpl: PromptTemplate, think: Any, constrained: Any) -> bool | str | None:
    """Ollama's rule: a model that can think thinks unless told not to; asking one that cannot is a
    400. Under a forced tool call's grammar the trace is left out; under ``format`` it is not (the
    decoder applies that grammar after the trace: ``thinking.GrammarGate``)."""
    think = check_think(think)
    if all(tmpl.thinking_tags):
        if constrained:
            return False
        return True if think is None else think
    if think_enabled(think):
        raise InvalidRequest(f'"{model}" does not support thinking')
    return think


def trace(tmpl: PromptTemplate, text: str, think: Any) -> tuple[tuple[str, str] | None, bool]:
    """The reply's thinking tags (None: no trace expected) and whether the prompt ``text`` opened it."""
    tags = tmpl.thinking_tags if think_enabled(think) and all(tmpl.thinking_tags) else None
    return tags, bool(tags) and text.rstrip().endswith(tags[0])


def grammar(format: str | Mapping[str, Any] | None) -> str | None:
    """``format`` ("json" or a JSON schema) as a GBNF grammar; None without one."""
    if format in (None, ""):
        return None
    if format == "json":
        return JSON_GRAMMAR
    if isinstance(format, Mapping):
        return schema_grammar(dict(format))
    raise InvalidRequest(f'invalid format {format!r}: use "json" or a JSON schema object')


def with_tool_names(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A tool result that names its call only by ``tool_call_id`` gets that call's function name."""
    names: dict[str, str] = {}
    for m in messages:
        for call in m.get("tool_calls") or []:
            if isinstance(call, Mapping) and call.get("id"):
                names[str(call["id"])] = str((call.get("function") or {}).get("name") or "")
        if m["role"] == "tool" and not (m.get("tool_name") or m.get("name")) and m.get("tool_call_id"):
            m["tool_name"] = names.get(str(m["tool_call_id"]), "")
    return messages


def window(num_ctx: int, opts: Mapping[str, Any], truncate: bool | None) -> ContextWindow:
    """The context a prompt is fitted to: ``num_ctx`` less the reply's room, ``num_keep`` kept."""
    return ContextWindow(num_ctx=num_ctx, num_predict=int(opts["num_predict"]), num_keep=int(opts["num_keep"]),
                         truncate=truncate is not False)


__all__ = ["as_dict", "check_model_name", "grammar", "message", "options", "pictures", "require", "think",
           "tool_dict", "trace", "window", "with_tool_names"]
