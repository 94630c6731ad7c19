"""Anthropic's Messages API through the official ``anthropic`` SDK, unchanged, against our server on the
real models: what a program written for Claude sees (messages, streams, stop reasons, usage, tools,
thinking, images, token counts, errors, the API key)."""

from __future__ import annotations

import base64
from typing import Iterator

import anthropic
import pytest

from ollama_magic import Engine
from ollama_magic.server import BackgroundServer
from ollama_magic.store import ModelStore
from ollama_magic.tiny_vision import TOKENS_PER_IMAGE

from .test_api_frontier import THINK_TEMPLATE, TOOLS_TEMPLATE
from .test_vision import RED

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
TOOLY = "tooly"
THINKER = "thinker"
VISION = "tiny-vision"
HELLO = [{"role": "user", "content": "Tell me about the sea."}]
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                            "required": ["city"]}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
#: SDK 2.x no longer has temperature/top_p/top_k arguments (Claude's newest models refuse them); older
#: clients send them, and so can this one, in the body
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def engine(vision_store: ModelStore) -> Iterator[Engine]:
    with Engine(vision_store) as engine:
        engine.create(TOOLY, from_=GEMMA, template=TOOLS_TEMPLATE)
        engine.create(THINKER, from_=GEMMA, template=THINK_TEMPLATE)
        yield engine


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[BackgroundServer]:
    with BackgroundServer(engine, port=0) as srv:
        yield srv


@pytest.fixture
def claude(server: BackgroundServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)


def test_create_and_stream_give_the_same_message(claude: anthropic.Anthropic) -> None:
    args = dict(model=GEMMA, max_tokens=12, extra_body=GREEDY, messages=HELLO)
    whole = claude.messages.create(**args)
    assert whole.type == "message" and whole.role == "assistant" and whole.model == GEMMA
    assert whole.id.startswith("msg_") and [b.type for b in whole.content] == ["text"] and whole.content[0].text
    assert whole.stop_reason in ("end_turn", "max_tokens") and whole.stop_sequence is None
    assert whole.usage.input_tokens > 0 and 0 < whole.usage.output_tokens <= 12
    with claude.messages.stream(**args) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == final.content[0].text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason and final.usage.model_dump() == whole.usage.model_dump()
    events = [e.type for e in claude.messages.create(**args, stream=True)]
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"]
    assert events.count("content_block_start") == events.count("content_block_stop") == 1


def test_system_prompt_reaches_the_model_as_a_string_or_text_blocks(claude: anthropic.Anthropic) -> None:
    bare = claude.messages.create(model=GEMMA, max_tokens=1, messages=HELLO)
    system = "You are a pirate. Answer in one short sentence."
    told = claude.messages.create(model=GEMMA, max_tokens=1, messages=HELLO, system=system)
    blocks = claude.messages.create(model=GEMMA, max_tokens=1, messages=HELLO,
                                    system=[{"type": "text", "text": "You are a pirate. "},
                                            {"type": "text", "text": "Answer in one short sentence."}])
    assert told.usage.input_tokens > bare.usage.input_tokens
    assert blocks.usage.input_tokens == told.usage.input_tokens
    counted = claude.messages.count_tokens(model=GEMMA, messages=HELLO, system=system)
    assert counted.input_tokens == told.usage.input_tokens


def test_max_tokens_ends_with_max_tokens_and_that_many_output_tokens(claude: anthropic.Anthropic) -> None:
    whole = claude.messages.create(model=GEMMA, max_tokens=3, extra_body=GREEDY, messages=HELLO)
    assert whole.stop_reason == "max_tokens" and whole.usage.output_tokens == 3
    with claude.messages.stream(model=GEMMA, max_tokens=3, extra_body=GREEDY, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 3


def test_stop_sequences_end_with_stop_sequence_named(claude: anthropic.Anthropic) -> None:
    free = claude.messages.create(model=GEMMA, max_tokens=24, extra_body=GREEDY, messages=HELLO).content[0].text
    words = [w for w in free.split() if len(w) > 3]
    assert len(words) >= 3, free
    stop = words[2]  # a word the greedy reply surely reaches, not at its start
    cut = claude.messages.create(model=GEMMA, max_tokens=24, extra_body=GREEDY, messages=HELLO, stop_sequences=[stop, "@@"])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].text == free[: free.index(stop)]
    with claude.messages.stream(model=GEMMA, max_tokens=24, extra_body=GREEDY, messages=HELLO,
                                stop_sequences=["@@", stop]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop
    assert final.content[0].text == cut.content[0].text
    unmet = claude.messages.create(model=GEMMA, max_tokens=24, extra_body=GREEDY, messages=HELLO, stop_sequences=["@@"])
    assert unmet.stop_reason != "stop_sequence" and unmet.stop_sequence is None


def test_a_modelfile_stop_ends_the_turn_and_a_request_stop_is_named(engine: Engine,
                                                                    claude: anthropic.Anthropic) -> None:
    """Anthropic names only the request's stop_sequences: a model's own PARAMETER stop that ends the reply
    is an end_turn (stop_sequence None), the same string sent as a stop_sequence is named."""
    free = claude.messages.create(model=GEMMA, max_tokens=24, extra_body=GREEDY, messages=HELLO).content[0].text
    words = [w for w in free.split() if len(w) > 3]
    assert len(words) >= 3, free
    stop = words[2]
    engine.create("stopper", from_=GEMMA, parameters={"stop": [stop]})
    own = claude.messages.create(model="stopper", max_tokens=24, extra_body=GREEDY, messages=HELLO)
    assert own.content[0].text == free[: free.index(stop)]  # the model's stop did end it
    assert own.stop_reason == "end_turn" and own.stop_sequence is None
    with claude.messages.stream(model="stopper", max_tokens=24, extra_body=GREEDY, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.stop_sequence is None
    asked = claude.messages.create(model="stopper", max_tokens=24, extra_body=GREEDY, messages=HELLO,
                                   stop_sequences=[stop])
    assert asked.stop_reason == "stop_sequence" and asked.stop_sequence == stop


def test_tool_use_then_tool_result(claude: anthropic.Anthropic) -> None:
    called = claude.messages.create(model=TOOLY, max_tokens=40, extra_body=GREEDY, messages=ASK, tools=[WEATHER],
                                    tool_choice={"type": "any"})
    uses = [b for b in called.content if b.type == "tool_use"]
    assert called.stop_reason == "tool_use" and len(uses) == 1
    assert uses[0].name == "get_weather" and isinstance(uses[0].input["city"], str) and uses[0].id
    with claude.messages.stream(model=TOOLY, max_tokens=40, extra_body=GREEDY, messages=ASK, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        final = stream.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and streamed[0].input == uses[0].input  # input_json_delta, parsed
    turn = [*ASK, {"role": "assistant", "content": called.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                          "content": "Sunny and 21 degrees, a light wind from the west."}]}]
    follow = claude.messages.create(model=TOOLY, max_tokens=8, extra_body=GREEDY, messages=turn, tools=[WEATHER])
    assert follow.stop_reason in ("end_turn", "max_tokens") and follow.content[0].type == "text"
    counted = claude.messages.count_tokens(model=TOOLY, messages=turn, tools=[WEATHER])
    assert counted.input_tokens == follow.usage.input_tokens > called.usage.input_tokens
    shorter = [*turn[:2], {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                         "content": "Sunny."}]}]
    assert claude.messages.count_tokens(model=TOOLY, messages=shorter, tools=[WEATHER]).input_tokens < counted.input_tokens
    none = claude.messages.create(model=TOOLY, max_tokens=8, extra_body=GREEDY, messages=ASK, tools=[WEATHER],
                                  tool_choice={"type": "none"})
    assert all(b.type != "tool_use" for b in none.content)


def test_thinking_blocks_for_a_thinking_model_and_none_for_others(claude: anthropic.Anthropic) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    whole = claude.messages.create(model=THINKER, max_tokens=30, extra_body=GREEDY, messages=ASK, thinking=thinking)
    assert whole.content[0].type == "thinking" and whole.content[0].thinking
    with claude.messages.stream(model=THINKER, max_tokens=30, extra_body=GREEDY, messages=ASK, thinking=thinking) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "thinking_delta" in deltas and final.content[0].thinking == whole.content[0].thinking
    off = claude.messages.create(model=THINKER, max_tokens=8, extra_body=GREEDY, messages=ASK,
                                 thinking={"type": "disabled"})
    assert all(b.type != "thinking" for b in off.content)
    plain = claude.messages.create(model=GEMMA, max_tokens=4, messages=ASK, thinking=thinking)  # as Claude Code asks
    assert plain.content and all(b.type != "thinking" for b in plain.content)


def test_image_blocks_for_a_vision_model_counted_in_input_tokens(claude: anthropic.Anthropic) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(RED).decode()}}
    messages = [{"role": "user", "content": [image, {"type": "text", "text": "What is in the picture?"}]}]
    seen = claude.messages.create(model=VISION, max_tokens=4, messages=messages)
    assert seen.usage.input_tokens > TOKENS_PER_IMAGE
    assert claude.messages.count_tokens(model=VISION, messages=messages).input_tokens == seen.usage.input_tokens
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    with pytest.raises(anthropic.BadRequestError, match="image URLs are not currently supported"):
        claude.messages.create(model=VISION, max_tokens=4, messages=[{"role": "user", "content": [url]}])


def test_errors_are_the_sdks_own_exceptions(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=HELLO)
    assert missing.value.body["type"] == "error" and missing.value.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in missing.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model=GEMMA, max_tokens=0, messages=HELLO)
    assert bad.value.body["error"]["type"] == "invalid_request_error" and "max_tokens" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        claude.messages.create(model=GEMMA, max_tokens=4, messages=[])
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="no-such-model", messages=HELLO)


def test_the_api_key_is_accepted_as_x_api_key_or_bearer(engine: Engine) -> None:
    with BackgroundServer(engine, port=0, api_key="sekret") as srv:
        keyed = anthropic.Anthropic(base_url=srv.url, api_key="sekret", max_retries=0)
        assert keyed.messages.create(model=GEMMA, max_tokens=1, messages=HELLO).usage.output_tokens == 1
        bearer = anthropic.Anthropic(base_url=srv.url, auth_token="sekret", max_retries=0)  # ANTHROPIC_AUTH_TOKEN
        assert bearer.messages.count_tokens(model=GEMMA, messages=HELLO).input_tokens > 0
        wrong = anthropic.Anthropic(base_url=srv.url, api_key="guess", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as refused:
            wrong.messages.create(model=GEMMA, max_tokens=1, messages=HELLO)
        assert refused.value.body["error"]["type"] == "authentication_error"
