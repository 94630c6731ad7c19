"""Anthropic's Messages API without a model: its error envelope whatever fails (our errors, bad bodies,
the middleware, a failure mid-stream as the ``anthropic`` SDK sees it), the API key as ``x-api-key``,
and the stop string the decoder reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import anthropic
import pytest
from fastapi.testclient import TestClient

from ollama_magic.engine import Engine
from ollama_magic.engine.decoder import TextAssembler
from ollama_magic.errors import EngineError, ServerBusy
from ollama_magic.server import BackgroundServer, create_app
from ollama_magic.store import ModelStore
from ollama_magic.types import ChatMessage, ChatResponse

ASK = {"model": "ghost", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Engine(ModelStore(tmp_path / "models")), api_key="sekret", origins="", max_body=1000)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_errors_on_v1_messages_are_in_anthropics_envelope(client: TestClient) -> None:
    key = {"x-api-key": "sekret"}
    missing = client.post("/v1/messages", json=ASK, headers=key)
    assert missing.status_code == 404 and missing.json() == {
        "type": "error", "error": {"type": "not_found_error", "message": 'model "ghost" not found'}}
    counted = client.post("/v1/messages/count_tokens", json={**ASK, "max_tokens": None}, headers=key)
    assert counted.status_code == 404 and counted.json()["error"]["type"] == "not_found_error"
    no_limit = client.post("/v1/messages", json={**ASK, "max_tokens": None}, headers=key)
    assert no_limit.status_code == 400 and no_limit.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in no_limit.json()["error"]["message"]
    block = {**ASK, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}
    unknown = client.post("/v1/messages", json=block, headers=key)
    assert unknown.status_code == 400 and "document" in unknown.json()["error"]["message"]
    empty = client.post("/v1/messages", json={**ASK, "messages": [{"role": "user", "content": []}]}, headers=key)
    assert empty.status_code == 400 and "non-empty content" in empty.json()["error"]["message"]
    big = client.post("/v1/messages", content=b'{"model": "' + b"x" * 2000 + b'"}', headers=key)
    assert big.status_code == 413 and big.json()["type"] == "error"
    assert client.post("/v1/chat/completions", json=ASK, headers=key).json()["error"]["param"] is None  # OpenAI's stays


def test_the_api_key_may_come_as_x_api_key_or_bearer(client: TestClient) -> None:
    assert client.post("/v1/messages", json=ASK, headers={"x-api-key": "sekret"}).status_code == 404
    assert client.post("/v1/messages", json=ASK, headers={"Authorization": "Bearer sekret"}).status_code == 404
    assert client.get("/api/tags", headers={"x-api-key": "sekret"}).status_code == 200  # one rule for every route
    wrong = client.post("/v1/messages", json=ASK, headers={"x-api-key": "guess"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert client.post("/v1/messages", json=ASK).status_code == 401


class _FailingEngine:
    """An engine whose chat stream fails after its first piece, or before it."""

    def __init__(self, early: bool = False) -> None:
        self.early = early

    def chat(self, model: str, messages: Any, **_: Any) -> Iterator[ChatResponse]:
        if self.early:
            raise ServerBusy("server busy, please try again.  maximum pending requests exceeded")

        def chunks() -> Iterator[ChatResponse]:
            yield ChatResponse(model=model, created_at="now", done=False,
                               message=ChatMessage(role="assistant", content="Hel"))
            raise EngineError("llama_decode failed")

        return chunks()


def test_a_failure_mid_stream_is_an_error_event_the_sdk_raises() -> None:
    with BackgroundServer(_FailingEngine(), port=0) as srv:  # type: ignore[arg-type]
        claude = anthropic.Anthropic(base_url=srv.url, api_key="unused", max_retries=0)
        seen: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as failed:
            with claude.messages.stream(model="m", max_tokens=4, messages=[{"role": "user", "content": "hi"}]) as stream:
                for text in stream.text_stream:
                    seen.append(text)
        assert seen == ["Hel"]
        assert failed.value.body == {"type": "error", "error": {"type": "api_error", "message": "llama_decode failed"}}


def test_a_busy_server_is_overloaded_error_before_the_stream() -> None:
    with BackgroundServer(_FailingEngine(early=True), port=0) as srv:  # type: ignore[arg-type]
        claude = anthropic.Anthropic(base_url=srv.url, api_key="unused", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as busy:
            claude.messages.create(model="m", max_tokens=4, messages=[{"role": "user", "content": "hi"}], stream=True)
        assert busy.value.status_code == 503 and busy.value.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("stops, pieces, said, by", [
    (["END", "@@"], [b"one two E", b"ND three"], "one two ", "END"),
    (["x", "two"], [b"one two"], "one ", "two"),
    (["@@"], [b"no stop here"], "no stop here", None),
])
def test_the_assembler_names_the_stop_string_that_ended_the_text(stops: list[str], pieces: list[bytes], said: str,
                                                               by: str | None) -> None:
    out: list[str] = []
    text = TextAssembler(stops, lambda t, _probs: out.append(t))
    hit = [text.add(piece) for piece in pieces][-1]
    text.finish()
    assert "".join(out) == said and hit == (by is not None) and text.stopped_by == by


def test_images_are_decoded_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big base64 image takes a while to decode: other requests are answered meanwhile."""
    import threading

    import httpx

    from ollama_magic.server import anthropic_api

    decoding, release = threading.Event(), threading.Event()

    def slow_decode(data: str) -> bytes:
        decoding.set()
        release.wait(10)
        return b"\x89PNG"

    monkeypatch.setattr(anthropic_api, "from_base64", slow_decode)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}
    ask = {**ASK, "messages": [{"role": "user", "content": [image, {"type": "text", "text": "what is it?"}]}]}
    with BackgroundServer(Engine(ModelStore(tmp_path / "models")), port=0) as srv:
        answers: list[int] = []
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            decoding.clear()
            release.clear()
            sent = threading.Thread(target=lambda: answers.append(httpx.post(srv.url + path, json=ask, timeout=20).status_code))
            sent.start()
            try:
                assert decoding.wait(10)
                assert httpx.get(srv.url + "/api/version", timeout=3).status_code == 200  # not behind the decode
            finally:
                release.set()
                sent.join(20)
        assert answers == [404, 404]  # then the request goes on (model "ghost" is not there)


class _StoppedEngine:
    """An engine whose reply was ended by the stop string "END" (the model's or the request's)."""

    class store:  # noqa: N801 - what _think looks the model up in
        @staticmethod
        def find(name: str) -> None:
            return None

    def chat(self, model: str, messages: Any, stream: bool = False, **_: Any) -> Any:
        final = ChatResponse(model=model, created_at="now", done=True, done_reason="stop", stop_sequence="END",
                             message=ChatMessage(role="assistant", content="one two "))
        return iter([final]) if stream else final


@pytest.mark.parametrize("stops, reason, sequence", [
    (None, "end_turn", None),  # a Modelfile's PARAMETER stop: Anthropic names only the request's
    (["END"], "stop_sequence", "END"),
])
def test_stop_sequence_names_only_the_requests_stop_sequences(stops: list[str] | None, reason: str,
                                                              sequence: str | None) -> None:
    with BackgroundServer(_StoppedEngine(), port=0) as srv:  # type: ignore[arg-type]
        claude = anthropic.Anthropic(base_url=srv.url, api_key="unused", max_retries=0)
        args: dict[str, Any] = dict(model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        if stops:
            args["stop_sequences"] = stops
        whole = claude.messages.create(**args)
        with claude.messages.stream(**args) as stream:
            final = stream.get_final_message()
        assert (whole.stop_reason, whole.stop_sequence) == (final.stop_reason, final.stop_sequence) == (reason, sequence)
