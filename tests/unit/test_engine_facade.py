"""Engine calls that need no model loaded: they must not do a model's work either."""

from __future__ import annotations

import pytest

from ollama_magic.engine import Engine
from ollama_magic.errors import ModelNotFound
from ollama_magic.store import ModelStore


def test_unloading_a_default_model_that_is_not_installed_does_not_register_it(store: ModelStore) -> None:
    engine = Engine(store)
    try:
        with pytest.raises(ModelNotFound, match='model "all-minilm" not found'):
            engine.unload("all-minilm")  # the old code converted MiniLM (torch, a subprocess) to say "not loaded"
        assert not store.exists("all-minilm")
    finally:
        engine.close()


def test_the_template_cache_keeps_recent_overrides_and_does_not_grow_with_each_new_one(store: ModelStore) -> None:
    from types import SimpleNamespace

    from ollama_magic.engine.engine import TEMPLATE_CACHE

    record = SimpleNamespace(manifest_digest="0" * 64)
    engine = Engine(store)
    try:
        first = engine._template(record, "{{ .Prompt }} 0")
        for i in range(1, 3 * TEMPLATE_CACHE):  # a client sending a new template override with every request
            engine._template(record, f"{{{{ .Prompt }}}} {i}")
            assert engine._template(record, "{{ .Prompt }} 0") is first  # in use: kept
        assert len(engine._templates) == TEMPLATE_CACHE
    finally:
        engine.close()


@pytest.mark.parametrize("call", ["embed", "embeddings"])
def test_an_unknown_lora_adapter_is_refused_on_embed_as_on_generate(store: ModelStore, tmp_path, monkeypatch,
                                                                     call: str) -> None:
    """README: an unknown adapter id in ``options.lora`` is a 400, on every route that takes options;
    it is refused before any model is loaded."""
    from conftest import write_tiny_gguf

    from ollama_magic.errors import InvalidRequest
    from ollama_magic.types import CreateRequest

    list(store.create("tiny-embed", CreateRequest(from_=str(write_tiny_gguf(tmp_path / "e.gguf", embedding=True)))))
    engine = Engine(store)
    try:
        def no_load(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
            raise AssertionError("a model was loaded")

        monkeypatch.setattr(engine, "_acquire", no_load)
        text = {"embed": {"input": "hi"}, "embeddings": {"prompt": "hi"}}[call]
        with pytest.raises(InvalidRequest, match='option "lora": adapter 0 does not exist: tiny-embed:latest has no adapters'):
            getattr(engine, call)("tiny-embed", options={"lora": [{"id": 0, "scale": 1}]}, **text)
    finally:
        engine.close()
