"""``ollama-magic serve`` as its own process: OLLAMA_HOST / OLLAMA_MODELS / OLLAMA_KEEP_ALIVE,
the CLI's ``ps`` and ``stop`` against it, a busy port, and a clean exit on SIGTERM and SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import ollama
import pytest

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"


@pytest.fixture
def models(tmp_path: Path, clone_registered) -> Path:
    return clone_registered(tmp_path / "models").root


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_honours_the_environment_and_stops_cleanly(models: Path, sig: signal.Signals, serve_process) -> None:
    served = serve_process(models, OLLAMA_KEEP_ALIVE="1h")
    proc, url, port, env = served.proc, served.url, served.port, served.env
    try:
        client = ollama.Client(host=url)
        assert {m.model for m in client.list().models} >= {GEMMA, "all-minilm:latest"}
        assert client.generate(GEMMA, "Hi", options={"num_predict": 2}).eval_count == 2
        [running] = client.ps().models
        left = running.expires_at - datetime.now(timezone.utc)
        assert timedelta(minutes=55) < left <= timedelta(hours=1)  # OLLAMA_KEEP_ALIVE, not the 5m default

        cli = [sys.executable, "-m", "ollama_magic"]
        ps = subprocess.run([*cli, "ps"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert ps.returncode == 0 and GEMMA in ps.stdout and "from now" in ps.stdout
        stop = subprocess.run([*cli, "stop", GEMMA], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0 and client.ps().models == []

        # a second server on the same port: one line, no traceback
        busy = subprocess.run([*cli, "serve"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1
        assert busy.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}") and busy.stderr.count("\n") == 1

        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and f"on http://127.0.0.1:{port}" in err
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a restarted server does
            sock.bind(("127.0.0.1", port))  # nothing listens there any more
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
