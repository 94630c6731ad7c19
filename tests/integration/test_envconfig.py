"""Environment variables read through ``envconfig`` on a real model: a bad value is a warning and the
default, never a failed request; a good one takes effect at the next request."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ollama_magic import Engine, envconfig
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
SMOLLM2 = "smollm2:135m"
USER = [{"role": "user", "content": "Say hi."}]


def test_a_context_length_of_8k_does_not_break_chat(registered: ModelStore, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(envconfig, "_warned", set())
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "8k")
    with Engine(registered) as engine, caplog.at_level(logging.WARNING, logger="ollama_magic"):
        for _ in range(2):  # was: ValueError (a 500 over HTTP) on every request
            reply = engine.chat(SMOLLM2, USER, options={"num_predict": 4, "seed": 1})
            assert reply.done and reply.eval_count > 0
        [model] = engine.ps().models
        assert model.context_length == 4096  # the default, as Ollama falls back
        monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "1024")  # read per request: the next one reloads
        assert engine.generate(SMOLLM2, "Hi", options={"num_predict": 2}).done
        [model] = engine.ps().models
        assert model.context_length == 1024
    warnings = [r.getMessage() for r in caplog.records if "OLLAMA_CONTEXT_LENGTH" in r.getMessage()]
    assert len(warnings) == 1 and "'8k'" in warnings[0]


def test_ollama_status_lists_every_variable(notebook_shell, clone_registered, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ip = notebook_shell(clone_registered(tmp_path / "models").root)
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "33")
    monkeypatch.setenv("OLLAMA_MAGIC_API_KEY", "s3cret-key")
    status = ip.run_line_magic("ollama", "status")
    for var in envconfig.VARS:
        assert var.name in status and var.meaning in status
    assert "OLLAMA_MAX_QUEUE" in status and "33" in status.split("OLLAMA_MAX_QUEUE", 1)[1].splitlines()[0]
    assert "s3cret" not in status
