"""Pull and push against a registry with bearer-token auth, the scheme registry.ollama.ai and hf.co
use: Debian's ``docker-registry`` started with ``auth: token`` against a real token server
(``token_server.py``: checks basic credentials, issues JWTs the registry verifies against its
certificate). With credentials pull and push work, one token per scope (reused across blobs);
without credentials, with a wrong password, or with a user who may only pull, every front end says
so in one line.

Without the Debian package these tests skip, naming it; OLLAMA_MAGIC_REQUIRE_REGISTRY=1 (set by
``.ci/run``) turns the skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from conftest import write_tiny_gguf

from bench._registry import PACKAGE, DockerRegistry
from ollama_magic.engine import Engine
from ollama_magic.errors import Unauthorized
from ollama_magic.registry.client import AUTH_ENV
from ollama_magic.store import ModelStore

from .test_registry import _cli, _missing, blobs_identical, no_stray_files
from .token_server import TokenRequest, TokenServer, User

pytestmark = pytest.mark.integration
USERS = {"alice": User("s3cret", frozenset({"pull", "push"})), "reader": User("r3ad", frozenset({"pull"}))}
ALICE = ("alice", "s3cret")


def scopes(requests_: list[TokenRequest]) -> list[tuple[str | None, dict[str, set[str]]]]:
    """(account, {repository: actions}) per token request, the actions as a set (order is the registry's)."""
    out = []
    for request in requests_:
        wanted = {}
        for scope in request.scopes:
            _, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted[name] = set(actions.split(","))
        out.append((request.account, wanted))
    return out


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    with TokenServer(tmp_path_factory.mktemp("token-server"), USERS) as server:
        yield server


@pytest.fixture(scope="module")
def token_registry(token_server: TokenServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    if not DockerRegistry.available():
        _missing("the docker-registry binary", PACKAGE)
    with DockerRegistry(tmp_path_factory.mktemp("token-registry"), token_auth=token_server.registry_auth) as reg:
        yield reg


@pytest.fixture(autouse=True)
def no_credentials_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_ENV, raising=False)


@pytest.fixture(autouse=True)
def count_from_zero(token_server: TokenServer) -> None:
    """Each test counts only its own token requests (module fixtures set up before this one)."""
    token_server.taken()


@pytest.fixture(scope="module")
def pushed(token_registry: DockerRegistry, token_server: TokenServer,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny model of four blobs (weights, system, parameters, config) pushed once by alice."""
    directory = tmp_path_factory.mktemp("token-source")
    gguf = write_tiny_gguf(directory / "tiny.gguf")
    store = ModelStore(directory / "models")
    name = f"{token_registry.host}/private/tiny:1"
    list(store.create(name, f"FROM {gguf}\nSYSTEM be brief\nPARAMETER temperature 0"))
    token_server.taken()
    logged_before = len(_log(token_registry))  # the start-up probes of /v2/ were challenged too
    with Engine(store) as engine:
        statuses = [s.status for s in engine.push(name, insecure=True, auth=ALICE, stream=True)]
    record = store.find(name)
    return {"name": name, "store": store, "statuses": statuses, "record": record,
            "tokens": token_server.taken(), "log": _log(token_registry)[logged_before:]}


def _log(registry: DockerRegistry) -> list[str]:
    return registry.log.read_text(errors="replace").splitlines()


def test_push_with_credentials_asks_one_token_per_scope_and_reuses_it_across_blobs(pushed) -> None:
    assert pushed["statuses"][0] == "retrieving manifest" and pushed["statuses"][-2:] == ["pushing manifest", "success"]
    blobs = set(pushed["record"].manifest.digests)
    assert len(blobs) == 4
    # the first request (HEAD of a blob) is challenged for pull; the first upload for pull,push; then
    # every other blob and the manifest go with that token
    assert scopes(pushed["tokens"]) == [("alice", {"private/tiny": {"pull"}}),
                                        ("alice", {"private/tiny": {"pull", "push"}})]
    uploaded = [line for line in pushed["log"] if "response completed" in line and "http.request.method=PUT" in line
                and "/v2/private/tiny/blobs/uploads/" in line and "http.response.status=201" in line]
    assert len(uploaded) == len(blobs)  # every blob went up, with the second token
    challenged = [line for line in pushed["log"] if "error authorizing context" in line]
    assert len(challenged) == 2  # one challenge per token, none after


def test_pull_with_credentials_takes_one_token_for_every_blob(pushed, token_server: TokenServer,
                                                             tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with Engine(store) as engine:
        statuses = [s.status for s in engine.pull(pushed["name"], insecure=True, auth=ALICE, stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert scopes(token_server.taken()) == [("alice", {"private/tiny": {"pull"}})]
    blobs_identical(store, pushed["name"], pushed["store"])
    no_stray_files(store)


def test_a_second_repository_mounts_the_blobs_with_a_token_for_both(pushed, token_registry: DockerRegistry,
                                                                     token_server: TokenServer) -> None:
    store: ModelStore = pushed["store"]
    copy = pushed["name"].replace("/private/tiny:", "/private/copy:")
    with Engine(store) as engine:
        engine.copy(pushed["name"], copy)
        assert engine.push(copy, insecure=True, auth=ALICE).status == "success"
    granted = scopes(token_server.taken())
    assert ("alice", {"private/copy": {"pull", "push"}, "private/tiny": {"pull"}}) in granted
    mounts = [line for line in token_registry.requests_logged() if "/v2/private/copy/blobs/uploads/?mount=" in line]
    assert mounts and any("http.response.status=201" in line for line in mounts)


def test_without_credentials_every_front_end_says_unauthorized_in_one_line(pushed, token_registry: DockerRegistry,
                                                                         token_server: TokenServer,
                                                                         serve_process, tmp_path: Path) -> None:
    host, name = token_registry.host, pushed["name"]
    expected = (f"unauthorized: access to private/tiny on {host} denied "
                f"(no credentials given: set {AUTH_ENV}=user:password)")
    store = ModelStore(tmp_path / "models")
    with Engine(store) as engine, pytest.raises(Unauthorized) as err:
        engine.pull(name, insecure=True)
    assert str(err.value) == expected and err.value.status_code == 401
    assert store.find(name) is None
    with Engine(pushed["store"]) as engine, pytest.raises(Unauthorized) as err:
        engine.push(name, insecure=True)
    assert str(err.value) == expected
    # each time the realm gave an anonymous token with no access, and the registry refused it
    assert [(r.account, r.status) for r in token_server.taken()] == [(None, 200), (None, 200)]

    cli = _cli("--models", str(tmp_path / "cli-models"), "pull", name, "--insecure")
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert cli.stderr.splitlines()[-1] == f"Error: {expected}"

    server = serve_process(tmp_path / "server-models")  # started without credentials in its environment
    resp = requests.post(f"{server.url}/api/pull", json={"model": name, "insecure": True, "stream": False},
                         timeout=60)
    assert resp.status_code == 401 and resp.json() == {"error": expected}


def test_a_wrong_password_is_refused_by_the_token_service_in_one_line(pushed, token_registry: DockerRegistry,
                                                                      token_server: TokenServer,
                                                                      tmp_path: Path) -> None:
    expected = (f"unauthorized: the token service {token_server.realm} for {token_registry.host} "
                "refused the credentials of 'alice' (401)")
    with Engine(ModelStore(tmp_path / "models")) as engine, pytest.raises(Unauthorized) as err:
        engine.pull(pushed["name"], insecure=True, auth=("alice", "wrong"))
    assert str(err.value) == expected
    with Engine(pushed["store"]) as engine, pytest.raises(Unauthorized) as err:
        engine.push(pushed["name"], insecure=True, auth=("alice", "wrong"))
    assert str(err.value) == expected
    assert [(r.account, r.status) for r in token_server.taken()] == [("alice", 401), ("alice", 401)]

    cli = _cli("--models", str(tmp_path / "cli-models"), "pull", pushed["name"], "--insecure",
               env={**os.environ, AUTH_ENV: "alice:wrong"})
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert cli.stderr.splitlines()[-1] == f"Error: {expected}"


def test_a_user_who_may_only_pull_pulls_but_cannot_push(pushed, token_registry: DockerRegistry,
                                                        tmp_path: Path) -> None:
    reader = ("reader", "r3ad")
    store = ModelStore(tmp_path / "models")
    with Engine(store) as engine:
        assert engine.pull(pushed["name"], insecure=True, auth=reader).status == "success"
    blobs_identical(store, pushed["name"], pushed["store"])
    mine = pushed["name"].replace("/private/tiny:", "/private/readers-own:")
    with Engine(store) as engine:
        engine.copy(pushed["name"], mine)
        with pytest.raises(Unauthorized) as err:
            engine.push(mine, insecure=True, auth=reader)
    message = str(err.value)  # the scope is the registry's: this repository's pull,push (and the mount's pull)
    assert message.startswith(f"unauthorized: access to private/readers-own on {token_registry.host} denied: "
                              "'reader' was not granted ") and "\n" not in message
    assert "repository:private/readers-own:pull,push" in message or "repository:private/readers-own:push,pull" in message
