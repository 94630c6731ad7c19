"""What a user sees of RPC workers without one running: ``%ollama rpc``, OLLAMA_MAGIC_RPC, and the
refusals of ``ollama-magic rpc-server`` (each one line, before llama.cpp is asked)."""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace

import pandas as pd
import pytest

from ollama_magic import cli
from ollama_magic.engine import devices
from ollama_magic.errors import EngineError, InvalidRequest
from ollama_magic.notebook.verbs import rpc as _rpc  # noqa: F401 - registers %ollama rpc
from ollama_magic.notebook.verbs import run as run_verb


@pytest.fixture
def fresh_env_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """OLLAMA_MAGIC_RPC is read once per process: let this test's setting be that once."""
    monkeypatch.setattr(devices, "_env_read", False)
    monkeypatch.setattr(devices, "_servers", {})


def dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_rpc_lists_the_devices_and_says_how_to_add_a_worker(capsys, fresh_env_read) -> None:
    frame = run_verb(SimpleNamespace(remote=None), ["rpc"])
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["device", "kind", "description", "free", "total"]
    cpu = frame[frame.device == "CPU"].iloc[0]
    assert cpu.kind == "CPU" and cpu.total.endswith("GB")
    assert "ollama-magic rpc-server" in capsys.readouterr().out


def test_rpc_add_refuses_a_bad_or_dead_endpoint_in_one_line(fresh_env_read) -> None:
    session = SimpleNamespace(remote=None)
    with pytest.raises(InvalidRequest, match="not host:port"):
        run_verb(session, ["rpc", "add", "gpu-box"])
    dead = dead_endpoint()
    with pytest.raises(EngineError, match=f"{dead}"):
        run_verb(session, ["rpc", "add", dead])
    with pytest.raises(InvalidRequest, match="which worker"):
        run_verb(session, ["rpc", "add"])


def test_rpc_on_a_remote_backend_says_where_workers_belong() -> None:
    with pytest.raises(InvalidRequest, match="OLLAMA_MAGIC_RPC"):
        run_verb(SimpleNamespace(remote=SimpleNamespace(host="http://gpu-box:11434")), ["rpc"])


def test_a_dead_worker_in_ollama_magic_rpc_is_one_warning_and_the_devices_still_list(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_env_read) -> None:
    dead = dead_endpoint()
    monkeypatch.setenv("OLLAMA_MAGIC_RPC", f"{dead}, not-an-endpoint")
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        assert devices.cpu_device().handle in [d.handle for d in devices.devices()]
        devices.devices()
    warnings = [r.getMessage() for r in caplog.records if "OLLAMA_MAGIC_RPC" in r.getMessage()]
    assert len(warnings) == 2 and dead in warnings[0] and "not-an-endpoint" in warnings[1]
    assert devices.rpc_servers() == []


@pytest.mark.parametrize(("host", "words"), [("0.0.0.0", "--all-interfaces"), ("::1", "IPv4 address"),
                                             ("localhost", "IPv4 address")])
def test_rpc_server_refuses_an_address_it_should_not_or_cannot_listen_on(capsys, host: str, words: str) -> None:
    assert cli.main(["rpc-server", "--host", host]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and words in err and len(err.strip().splitlines()) == 1


def test_rpc_server_refuses_bad_numbers(capsys) -> None:
    assert cli.main(["rpc-server", "--port", "0"]) == 1
    assert cli.main(["rpc-server", "--threads", "0"]) == 1
    err = capsys.readouterr().err
    assert "--port 0" in err and "--threads 0" in err
