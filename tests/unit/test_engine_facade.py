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
