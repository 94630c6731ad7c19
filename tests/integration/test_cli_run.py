"""``ollama-magic run`` answers with the real model; ``ps``/``stop`` say clearly when no server answers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ollama_magic.cli import main

pytestmark = pytest.mark.integration


def test_run_streams_a_seeded_answer(capsys, registered_root: Path) -> None:
    argv = ["--models", str(registered_root), "run", "gemma3:270m", "Why is the sky blue?", "--seed", "42",
            "--num-predict", "16", "--verbose"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert first.out.strip()
    assert "eval count:           16 token(s)" in first.err
    assert main(argv) == 0
    assert capsys.readouterr().out == first.out  # seeded: the same answer again


def test_run_reads_the_prompt_from_stdin(capsys, monkeypatch, registered_root: Path) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Say hello."))
    assert main(["--models", str(registered_root), "run", "gemma3:270m", "--num-predict", "4"]) == 0
    assert capsys.readouterr().out.strip()


def test_run_unknown_model_is_one_error_line(capsys, monkeypatch, registered_root: Path) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hi"))
    assert main(["--models", str(registered_root), "run", "no-such-model"]) == 1
    assert capsys.readouterr().err == 'Error: model "no-such-model" not found\n'
    assert main(["--models", str(registered_root), "run", "no-such-model", "hi"]) == 1  # text after it: a hint
    assert capsys.readouterr().err == ('Error: model "no-such-model" not found: name the model first, '
                                       "e.g. ollama-magic run smollm2:135m 'no-such-model hi'\n")


@pytest.mark.parametrize("argv", [["ps"], ["stop", "gemma3:270m"]])
def test_ps_and_stop_without_a_server_explain_themselves(capsys, monkeypatch, argv: list[str]) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # the discard port: nothing listens there
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: no Ollama-compatible server answers at 127.0.0.1:9") and err.count("\n") == 1
