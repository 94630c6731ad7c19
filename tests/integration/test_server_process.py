"""``ollama-magic serve`` as its own process: OLLAMA_HOST / OLLAMA_MODELS / OLLAMA_KEEP_ALIVE,
the CLI's ``ps`` and ``stop`` against it, a busy port, and a clean exit on SIGTERM and SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import ollama
import pytest
import requests

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ollama_magic", "serve"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if requests.get(url, timeout=1).text == "Ollama is running":
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("server did not come up")


@pytest.fixture
def models(tmp_path: Path, clone_registered) -> Path:
    return clone_registered(tmp_path / "models").root


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_honours_the_environment_and_stops_cleanly(models: Path, sig: signal.Signals) -> None:
    port = free_port()
    env = {"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models), "OLLAMA_KEEP_ALIVE": "1h"}
    proc = serve(env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc)
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
