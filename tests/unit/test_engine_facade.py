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
