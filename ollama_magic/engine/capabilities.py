"""What a model can do, decided in one place as Ollama's ``Model.Capabilities()`` is.

``show`` lists these, and the handlers refuse a request that needs one the model lacks, so the two
can never disagree. Each capability is one line in ``_CHECKS``: adding one (``thinking``, say) is a
line here and nothing anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..store import manifests as mt
from ..store.gguf_meta import GGUFInfo
from .prompt import PromptTemplate, prompt_template

if TYPE_CHECKING:  # the store lists what this decides: a run-time import would point back up
    from ..store.store import ModelRecord


@dataclass(frozen=True)
class ModelFacts:
    """What the checks look at: the GGUF header, the prompt template and the manifest's layers."""

    info: GGUFInfo
    template: PromptTemplate
    has_projector: bool


_CHECKS: tuple[tuple[str, Callable[[ModelFacts], bool]], ...] = (
    ("completion", lambda m: not m.info.is_embedding_model),  # Ollama: no pooling type means completion
    ("embedding", lambda m: m.info.is_embedding_model),
    ("tools", lambda m: m.template.supports_tools),
    ("insert", lambda m: m.template.supports_suffix),
    ("vision", lambda m: m.has_projector or m.info.arch_value("vision.block_count") is not None),
    ("thinking", lambda m: not m.info.is_embedding_model and all(m.template.thinking_tags)),
)


def model_template(record: ModelRecord) -> PromptTemplate:
    """The template a model's requests are rendered with: its TEMPLATE, else the GGUF's Jinja one."""
    return prompt_template(record.template, record.gguf_info().metadata.get("tokenizer.chat_template"))


def capabilities(record: ModelRecord, template: PromptTemplate | None = None) -> list[str]:
    """The model's capabilities in Ollama's names and order. ``template`` saves re-parsing one the
    caller already holds (the engine caches them by manifest digest)."""
    facts = ModelFacts(
        info=record.gguf_info(),
        template=template if template is not None else model_template(record),
        has_projector=bool(record.manifest.layers_of(mt.PROJECTOR)),
    )
    return [name for name, check in _CHECKS if check(facts)]


__all__ = ["ModelFacts", "capabilities", "model_template"]
