"""One capability rule (Ollama's ``Capabilities()``) for show, the CLI and the engine's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_tiny_gguf
from ollama_magic.engine.capabilities import capabilities
from ollama_magic.errors import InvalidRequest
from ollama_magic.store import ModelStore


def create(store: ModelStore, name: str, text: str) -> None:
    for _ in store.create(name, text):
        pass


def test_capabilities_come_from_template_variables_not_from_its_text(store: ModelStore, tiny_gguf: Path) -> None:
    create(store, "plain", f'FROM {tiny_gguf}\nTEMPLATE "Answer; .tools and .suffix are just words. {{{{ .Prompt }}}}"')
    create(store, "tooled", f'FROM {tiny_gguf}\nTEMPLATE "{{{{ if .Tools }}}}{{{{ .Tools }}}}{{{{ end }}}}{{{{ .Prompt }}}}{{{{ .Suffix }}}}"')
    assert capabilities(store.find("plain")) == ["completion"]
    assert capabilities(store.find("tooled")) == ["completion", "tools", "insert"]


def test_projector_or_vision_blocks_mean_vision(store: ModelStore, tiny_gguf: Path, tmp_path: Path) -> None:
    projector = write_tiny_gguf(tmp_path / "mmproj.gguf", arch="clip")
    create(store, "seeing", f"FROM {tiny_gguf}\nFROM {projector}")
    assert capabilities(store.find("seeing")) == ["completion", "vision"]


def test_embedding_model_has_no_completion(store: ModelStore, tmp_path: Path) -> None:
    create(store, "emb", f"FROM {write_tiny_gguf(tmp_path / 'emb.gguf', arch='bert', embedding=True)}")
    assert capabilities(store.find("emb")) == ["embedding"]


def test_show_and_the_chat_refusal_use_the_same_rule(store: ModelStore, tiny_gguf: Path) -> None:
    from ollama_magic.engine import Engine

    create(store, "plain", f'FROM {tiny_gguf}\nTEMPLATE "Use .tools wisely. {{{{ .Prompt }}}}"')
    engine = Engine(store)
    try:
        assert engine.show("plain").capabilities == ["completion"]  # the old show said "tools" here
        tool = {"type": "function", "function": {"name": "f", "description": "", "parameters": {}}}
        with pytest.raises(InvalidRequest, match="does not support tools"):
            engine.chat("plain", [{"role": "user", "content": "hi"}], tools=[tool])
    finally:
        engine.close()
