"""Stateful ``/v1/responses`` through the official ``openai`` client on a real model (greedy
smollm2:135m): ``store`` and ``previous_response_id`` (the model sees the prior turn, and exactly what
a stateless request carrying it would send), retrieve / delete / input_items, OpenAI's errors, a
streamed response stored when it ends, the count and age bounds, and a chain continued across a
server restart."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from ollama_magic import Engine
from ollama_magic.server import BackgroundServer

pytestmark = pytest.mark.integration
SMOL = "smollm2:135m"
TELL = "The secret word is {}. Reply with OK."
ASK = "What is the secret word? Answer with the word only."
GREEDY = {"temperature": 0, "max_output_tokens": 16}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, clone_registered):
    with Engine(clone_registered(tmp_path_factory.mktemp("responses") / "models")) as engine:
        yield engine


@pytest.fixture(scope="module")
def server(engine: Engine, tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()  # the store opens at the first request: on this module's own file
    mp.setenv("OLLAMA_MAGIC_RESPONSES", str(tmp_path_factory.mktemp("stored") / "responses.sqlite"))
    with BackgroundServer(engine, port=0) as srv:
        yield srv
    mp.undo()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("word", ["banana", "Zebra"])
def test_a_chain_continues_with_the_prior_input_and_output_and_not_its_instructions(oai: openai.OpenAI,
                                                                                    word: str) -> None:
    first = oai.responses.create(model=SMOL, input=TELL.format(word), instructions="Answer in one short sentence.",
                                 **GREEDY)
    assert first.status == "completed" and first.model_extra["store"] is True
    second = oai.responses.create(model=SMOL, previous_response_id=first.id, input=ASK, **GREEDY)
    assert second.previous_response_id == first.id
    assert word in second.output_text  # only the first turn said it
    alone = oai.responses.create(model=SMOL, input=ASK, store=False, **GREEDY)
    assert word not in alone.output_text
    # exactly what a stateless request carrying the prior turn sends: its input and output, no instructions
    explicit = oai.responses.create(model=SMOL, store=False, **GREEDY, input=[
        {"role": "user", "content": TELL.format(word)}, {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": ASK}])
    assert second.usage.input_tokens == explicit.usage.input_tokens and second.output_text == explicit.output_text
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens


def test_retrieve_list_input_items_delete(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model=SMOL, input=TELL.format("kiwi"), **GREEDY)
    second = oai.responses.create(model=SMOL, previous_response_id=first.id, input=ASK, **GREEDY)
    got = oai.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text and got.status == "completed"
    assert got.usage.input_tokens == second.usage.input_tokens and got.previous_response_id == first.id
    items = list(oai.responses.input_items.list(second.id, order="asc"))
    assert [i.type for i in items] == ["message", "message", "message"]
    assert [i.role for i in items] == ["user", "assistant", "user"]
    assert items[1].id == first.output[0].id and items[2].content[0].text == ASK
    newest = oai.responses.input_items.list(second.id, limit=1)  # desc by default, as OpenAI
    assert [i.id for i in newest.data] == [items[2].id] and newest.has_more
    assert [i.id for i in oai.responses.input_items.list(second.id, order="asc", after=items[0].id).data] == [
        items[1].id, items[2].id]

    assert oai.responses.delete(second.id) is None  # the client reads {id, object, deleted} as nothing
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.input_items.list(second.id)
    assert oai.responses.retrieve(first.id).id == first.id  # deleting one leaves the rest of the chain


def test_the_deleted_object_and_the_error_envelopes_are_openais(server: BackgroundServer, oai: openai.OpenAI) -> None:
    made = oai.responses.create(model=SMOL, input="Hi", max_output_tokens=2)
    deleted = httpx.delete(f"{server.url}/v1/responses/{made.id}", timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {"id": made.id, "object": "response", "deleted": True}
    gone = httpx.get(f"{server.url}/v1/responses/{made.id}", timeout=30)
    assert gone.status_code == 404 and gone.json()["error"] == {
        "message": f"Response with id '{made.id}' not found.", "type": "invalid_request_error", "param": None,
        "code": None}
    unknown = httpx.post(f"{server.url}/v1/responses", timeout=30,
                         json={"model": SMOL, "input": "Hi", "previous_response_id": "resp_nope"})
    assert unknown.status_code == 400 and unknown.json()["error"] == {
        "message": "Previous response with id 'resp_nope' not found.", "type": "invalid_request_error",
        "param": "previous_response_id", "code": "previous_response_not_found"}
    assert httpx.get(f"{server.url}/v1/responses/{made.id}/input_items", params={"limit": 0},
                     timeout=30).status_code == 400


def test_store_false_is_not_kept_and_a_chain_through_it_is_not_found(oai: openai.OpenAI) -> None:
    kept = oai.responses.create(model=SMOL, input=TELL.format("lemon"), **GREEDY)
    unkept = oai.responses.create(model=SMOL, previous_response_id=kept.id, input=ASK, store=False, **GREEDY)
    assert "lemon" in unkept.output_text and unkept.model_extra["store"] is False  # it read the chain
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(unkept.id)
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model=SMOL, previous_response_id=unkept.id, input="And again?")
    assert refused.value.code == "previous_response_not_found" and refused.value.param == "previous_response_id"


def test_a_streamed_response_is_stored_when_it_completes(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model=SMOL, input=TELL.format("mango"), **GREEDY)
    events = []
    for event in oai.responses.create(model=SMOL, previous_response_id=first.id, input=ASK, stream=True, **GREEDY):
        events.append(event)
        if event.type == "response.completed":  # a client may chain on this event, before the stream closes
            got = oai.responses.retrieve(event.response.id)
    done = events[-1].response
    assert events[-1].type == "response.completed" and "mango" in done.output_text
    assert got.status == "completed" and got.output_text == done.output_text
    assert got.usage.input_tokens == done.usage.input_tokens


def test_a_stream_the_client_leaves_is_stored_cancelled_with_its_text_so_far(server: BackgroundServer,
                                                                            oai: openai.OpenAI) -> None:
    # 3000 tokens of Gemma take over a minute on 2 cores: the client leaves long before the end
    body = {"model": "gemma3:270m", "input": "Tell me a very long story.", "stream": True, "max_output_tokens": 3000}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=60) as answer:
        lines = answer.iter_lines()
        created = next(line for line in lines if line.startswith("data:") and "response.created" in line)
        next(line for line in lines if "response.output_text.delta" in line)
    response_id = created.split('"id":"', 1)[1].split('"', 1)[0]
    deadline = time.monotonic() + 30
    while True:  # stored by the stream's end, which runs when the server notices the client went away
        try:
            got = oai.responses.retrieve(response_id)
            break
        except openai.NotFoundError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert got.status == "cancelled" and got.output[0].status == "incomplete"
    assert got.output[0].content[0].text and got.usage is None


def test_past_the_count_bound_the_oldest_responses_go(engine: Engine, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES", str(tmp_path / "bounded.sqlite"))
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES_MAX", "2")
    with BackgroundServer(engine, port=0) as srv:
        client = _client(srv.url)
        made = [client.responses.create(model=SMOL, input=f"Say {n}", max_output_tokens=2) for n in range(3)]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(made[0].id)
        assert [client.responses.retrieve(r.id).id for r in made[1:]] == [r.id for r in made[1:]]
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model=SMOL, previous_response_id=made[0].id, input="Go on")


def test_past_the_age_bound_a_response_is_gone(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES", str(tmp_path / "aged.sqlite"))
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES_MAX_AGE", "1500ms")
    with BackgroundServer(engine, port=0) as srv:
        client = _client(srv.url)
        made = client.responses.create(model=SMOL, input="Hi", max_output_tokens=2)
        assert client.responses.retrieve(made.id).id == made.id
        time.sleep(2)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(made.id)
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model=SMOL, previous_response_id=made.id, input="Go on")


def test_a_chain_continues_across_a_server_restart(tmp_path: Path, clone_registered, serve_process) -> None:
    models = clone_registered(tmp_path / "models").root
    env = {"OLLAMA_MAGIC_RESPONSES": str(tmp_path / "responses.sqlite")}
    served = serve_process(models, **env)
    first = _client(served.url).responses.create(model=SMOL, input=TELL.format("cherry"), **GREEDY)
    served.proc.terminate()
    served.proc.communicate(timeout=60)

    again = serve_process(models, **env)
    client = _client(again.url)
    assert client.responses.retrieve(first.id).output_text == first.output_text
    second = client.responses.create(model=SMOL, previous_response_id=first.id, input=ASK, **GREEDY)
    assert "cherry" in second.output_text
    assert client.responses.retrieve(second.id).previous_response_id == first.id
