"""Current Ollama's API on the real model through the real clients: streamed tool calls, tool_choice,
thinking, token counting, ``_debug_render_only``, tags/version/status fields, ``Engine.create_blob``
and ``/v1/responses``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ollama
import openai
import pytest
import requests

from ollama_magic import Engine
from ollama_magic.engine.toolcalls import forced_call_schema
from ollama_magic.server import BackgroundServer

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
TOOLY = "tooly"
THINKER = "thinker"

#: A tools-capable template (renders .Tools and .ToolCalls, tool results by name), Gemma's turn markers.
TOOLS_TEMPLATE = """{{- if .Tools }}<start_of_turn>user
You can call these tools: {{ .Tools }}
Answer with {"name": ..., "arguments": {...}} to call one.<end_of_turn>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}{{ else }}{{ .Content }}{{ end }}<end_of_turn>
{{ else if eq .Role "tool" }}<start_of_turn>user
Result of {{ .ToolName }}: {{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
"""

#: A thinking template: the history's traces in <think> blocks, and a block opened when .Think is set,
#: so what the model generates next is its trace.
THINK_TEMPLATE = """{{- if .ThinkLevel }}<start_of_turn>user
Reasoning effort: {{ .ThinkLevel }}<end_of_turn>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
{{ if .Think }}<think>
{{ end }}"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
SHORT = {"temperature": 0, "seed": 1, "num_predict": 40}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, clone_registered):
    store = clone_registered(tmp_path_factory.mktemp("frontier") / "models")
    with Engine(store) as engine:
        engine.create(TOOLY, from_=GEMMA, template=TOOLS_TEMPLATE)
        engine.create(THINKER, from_=GEMMA, template=THINK_TEMPLATE)
        yield engine


@pytest.fixture(scope="module")
def server(engine: Engine):
    with BackgroundServer(engine, port=0) as srv:
        yield srv


def ndjson(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


# ---- tool calls ------------------------------------------------------------------------------------


def test_native_stream_with_tool_choice_required_sends_the_call_in_its_own_chunk(server: BackgroundServer) -> None:
    body = {"model": TOOLY, "messages": ASK, "tools": [WEATHER], "tool_choice": "required", "options": SHORT}
    chunks = ndjson(requests.post(f"{server.url}/api/chat", json=body, timeout=120))
    with_calls = [c for c in chunks if c["message"].get("tool_calls")]
    assert len(with_calls) == 1 and with_calls[0]["done"] is False
    call = with_calls[0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and isinstance(call["function"]["arguments"].get("city"), str)
    assert call["function"]["index"] == 0 and re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert with_calls[0]["message"]["content"] == ""
    assert not any("get_weather" in c["message"]["content"] for c in chunks)  # the JSON never leaks as content
    assert chunks[-1]["done"] is True and chunks[-1]["done_reason"] == "stop"


def test_ollama_client_stream_and_not_return_tool_calls(client: ollama.Client) -> None:
    """``ollama.Client`` cannot send tool_choice; a format schema of the call's shape forces it the same way."""
    schema = forced_call_schema([WEATHER])
    whole = client.chat(TOOLY, ASK, tools=[WEATHER], format=schema, options=SHORT)
    assert [c.function.name for c in whole.message.tool_calls] == ["get_weather"] and whole.message.content == ""
    chunks = list(client.chat(TOOLY, ASK, tools=[WEATHER], format=schema, options=SHORT, stream=True))
    calls = [c for chunk in chunks for c in (chunk.message.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert dict(calls[0].function.arguments) == dict(whole.message.tool_calls[0].function.arguments)
    assert "".join(c.message.content for c in chunks) == ""


def test_openai_stream_sends_delta_tool_calls_and_finish_reason_tool_calls(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=TOOLY, messages=ASK, tools=[WEATHER], tool_choice="required",
                                         stream=True, temperature=0, seed=1, max_tokens=40)
    chunks = list(stream)
    deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 1 and deltas[0].function.name == "get_weather" and deltas[0].index == 0
    assert deltas[0].id.startswith("call_") and "city" in json.loads(deltas[0].function.arguments)
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["tool_calls"]
    assert not any("get_weather" in (ch.choices[0].delta.content or "") for ch in chunks if ch.choices)
    whole = oai.chat.completions.create(model=TOOLY, messages=ASK, tools=[WEATHER], temperature=0, seed=1, max_tokens=40,
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert whole.choices[0].finish_reason == "tool_calls"
    assert whole.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_tool_choice_none_answers_in_prose_and_a_bad_name_is_a_400(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=TOOLY, messages=ASK, tools=[WEATHER], tool_choice="none",
                                        temperature=0, seed=1, max_tokens=8)
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="not one of the tools"):
        oai.chat.completions.create(model=TOOLY, messages=ASK, tools=[WEATHER],
                                    tool_choice={"type": "function", "function": {"name": "send_email"}})


def test_tool_result_named_only_by_tool_call_id_reaches_the_template(server: BackgroundServer) -> None:
    messages = [*ASK, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_abc12345", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny, 21C", "tool_call_id": "call_abc12345"}]
    body = {"model": TOOLY, "messages": messages, "tools": [WEATHER], "_debug_render_only": True, "stream": False}
    rendered = requests.post(f"{server.url}/api/chat", json=body, timeout=60).json()["_debug_info"]["rendered_template"]
    assert "Result of get_weather: sunny, 21C" in rendered
    assert '{"name": "get_weather", "arguments": {"city":"Paris"}}' in rendered


def test_langchain_ollama_bind_tools_invoke_and_stream_return_tool_calls(server: BackgroundServer) -> None:
    from langchain_core.tools import tool
    from langchain_ollama import ChatOllama

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    # langchain-ollama drops tool_choice (Ollama's client has no such argument): a format schema of the
    # call's shape forces the call, and the tool parser turns it into tool_calls.
    llm = ChatOllama(model=TOOLY, base_url=server.url, temperature=0, seed=1, num_predict=40,
                     format=forced_call_schema([WEATHER]))
    bound = llm.bind_tools([get_weather])
    message = bound.invoke("What is the weather in Paris?")
    assert [c["name"] for c in message.tool_calls] == ["get_weather"] and "city" in message.tool_calls[0]["args"]
    chunks = list(bound.stream("What is the weather in Paris?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert [c["name"] for c in merged.tool_calls] == ["get_weather"]
    assert merged.tool_calls[0]["args"] == message.tool_calls[0]["args"]


# ---- thinking --------------------------------------------------------------------------------------


def test_thinking_model_streams_its_trace_separately(client: ollama.Client) -> None:
    whole = client.chat(THINKER, [{"role": "user", "content": "What is 2+2?"}], think=True, options=SHORT)
    assert whole.message.thinking and "<think>" not in whole.message.thinking
    chunks = list(client.chat(THINKER, [{"role": "user", "content": "What is 2+2?"}], think=True, options=SHORT,
                              stream=True))
    assert "".join(c.message.thinking or "" for c in chunks) == whole.message.thinking
    assert "".join(c.message.content for c in chunks) == whole.message.content
    default = client.chat(THINKER, [{"role": "user", "content": "What is 2+2?"}], options=SHORT)
    assert default.message.thinking == whole.message.thinking  # a thinking model thinks unless told not to
    off = client.chat(THINKER, [{"role": "user", "content": "What is 2+2?"}], think=False, options=SHORT)
    assert off.message.thinking is None and off.message.content


def test_generate_with_think_returns_thinking(client: ollama.Client) -> None:
    r = client.generate(THINKER, "Why is the sky blue?", think="low", options=SHORT)
    assert r.thinking and r.response == ""


def test_think_on_a_model_without_the_capability_is_a_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(GEMMA, [{"role": "user", "content": "hi"}], think=True)
    assert info.value.status_code == 400 and info.value.error == '"gemma3:270m" does not support thinking'
    assert client.chat(GEMMA, [{"role": "user", "content": "hi"}], think=False, options={"num_predict": 2}).done
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(THINKER, [{"role": "user", "content": "hi"}], think="extreme")
    assert bad.value.status_code == 400


def test_history_thinking_and_level_reach_the_template(server: BackgroundServer) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "thinking": "Greet back."},
                {"role": "user", "content": "Bye"}]
    body = {"model": THINKER, "messages": messages, "think": "high", "_debug_render_only": True, "stream": False}
    rendered = requests.post(f"{server.url}/api/chat", json=body, timeout=60).json()["_debug_info"]["rendered_template"]
    assert "<think>Greet back.</think>Hello!" in rendered and "Reasoning effort: high" in rendered
    assert rendered.endswith("<start_of_turn>model\n<think>\n")


def test_capabilities_in_show_and_tags(client: ollama.Client, server: BackgroundServer) -> None:
    assert "thinking" in client.show(THINKER).capabilities and "tools" not in client.show(THINKER).capabilities
    assert "tools" in client.show(TOOLY).capabilities and "thinking" not in client.show(TOOLY).capabilities
    tags = {m["name"]: m for m in requests.get(f"{server.url}/api/tags", timeout=30).json()["models"]}
    assert tags[THINKER + ":latest"]["capabilities"] == ["completion", "thinking"]
    assert tags["all-minilm:latest"]["capabilities"] == ["embedding"]
    gemma = tags[GEMMA]["details"]
    assert gemma["context_length"] == 32768 and gemma["embedding_length"] == 640
    assert tags["all-minilm:latest"]["details"]["embedding_length"] == 384


def test_openai_reasoning_effort_in_reasoning_out(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model=THINKER, messages=[{"role": "user", "content": "What is 2+2?"}],
                                        reasoning_effort="low", temperature=0, seed=1, max_tokens=40)
    reasoning = whole.choices[0].message.model_extra["reasoning"]
    assert reasoning and "<think>" not in reasoning
    chunks = list(oai.chat.completions.create(model=THINKER, messages=[{"role": "user", "content": "What is 2+2?"}],
                                              reasoning_effort="low", temperature=0, seed=1, max_tokens=40, stream=True))
    streamed = "".join((c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks if c.choices)
    assert streamed == reasoning
    none = oai.chat.completions.create(model=THINKER, messages=[{"role": "user", "content": "What is 2+2?"}],
                                       reasoning_effort="none", temperature=0, seed=1, max_tokens=8)
    assert "reasoning" not in (none.choices[0].message.model_extra or {}) and none.choices[0].message.content


# ---- token counting --------------------------------------------------------------------------------


def test_tokenize_and_detokenize_round_trip_and_count_what_the_model_reads(server: BackgroundServer, engine: Engine) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    tokens = requests.post(f"{server.url}/api/tokenize", json={"model": GEMMA, "content": text}, timeout=60).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    back = requests.post(f"{server.url}/api/detokenize", json={"model": GEMMA, "tokens": tokens}, timeout=60).json()
    assert back["content"] == text
    assert engine.tokenize(GEMMA, text).tokens == tokens
    raw = engine.generate(GEMMA, text, raw=True, options={"num_predict": 1})
    assert raw.prompt_eval_count == len(tokens) + 1  # the model also reads its BOS token
    bad = requests.post(f"{server.url}/api/detokenize", json={"model": GEMMA, "tokens": [10**9]}, timeout=60)
    assert bad.status_code == 400 and "invalid token" in bad.json()["error"]


# ---- more of current Ollama ------------------------------------------------------------------------


def test_debug_render_only_returns_the_prompt_without_running_the_model(client: ollama.Client, server: BackgroundServer,
                                                                        engine: Engine) -> None:
    engine.unload(GEMMA)
    body = {"model": GEMMA, "prompt": "Hello", "_debug_render_only": True, "stream": False}
    r = requests.post(f"{server.url}/api/generate", json=body, timeout=60).json()
    assert r["_debug_info"]["rendered_template"] == "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"
    assert GEMMA not in {m.model for m in client.ps().models}  # nothing was loaded
    chat = engine.chat(GEMMA, [{"role": "user", "content": "Hi"}], debug_render_only=True)
    assert chat.debug_info.rendered_template.endswith("Hi<end_of_turn>\n<start_of_turn>model\n")


def test_version_is_ollama_compatible_and_ours_is_separate(server: BackgroundServer) -> None:
    from ollama_magic import __version__

    body = requests.get(f"{server.url}/api/version", timeout=10).json()
    major, minor, _ = (int(x) for x in body["version"].split("."))
    assert (major, minor) >= (0, 12) and body["ollama_magic_version"] == __version__
    assert requests.get(f"{server.url}/api/status", timeout=10).json()["cloud"]["disabled"] is True


def test_create_blob_has_ollama_clients_signature(engine: Engine, client: ollama.Client, tmp_path: Path,
                                                  gemma_blob: Path) -> None:
    digest = engine.create_blob(gemma_blob)
    assert digest == client.create_blob(gemma_blob) and digest.startswith("sha256:")
    assert engine.create("from-blob", files={"model.gguf": digest}).status == "success"
    assert engine.show("from-blob").details.family == "gemma3"


# ---- /v1/responses ---------------------------------------------------------------------------------


def test_openai_responses_create_stream_and_not(oai: openai.OpenAI) -> None:
    whole = oai.responses.create(model=GEMMA, input="Say hello.", instructions="Be brief.", max_output_tokens=8,
                                 temperature=0)
    assert whole.status == "completed" and whole.output_text and whole.usage.output_tokens == 8
    events = list(oai.responses.create(model=GEMMA, input="Say hello.", instructions="Be brief.", max_output_tokens=8,
                                       temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_openai_responses_reasoning_and_function_calls(oai: openai.OpenAI) -> None:
    reasoned = oai.responses.create(model=THINKER, input="What is 2+2?", reasoning={"effort": "low"},
                                    max_output_tokens=20, temperature=0)
    assert reasoned.output[0].type == "reasoning" and reasoned.output[0].summary[0].text
    tool = {"type": "function", "name": "get_weather", "description": "The weather in a city",
            "parameters": WEATHER["function"]["parameters"]}
    called = oai.responses.create(model=TOOLY, input="What is the weather in Paris?", tools=[tool],
                                  tool_choice="required", max_output_tokens=40, temperature=0)
    calls = [o for o in called.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)
    follow = oai.responses.create(model=TOOLY, tools=[tool], max_output_tokens=8, temperature=0, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}])
    assert follow.status == "completed"
    events = list(oai.responses.create(model=TOOLY, input="Weather in Paris?", tools=[tool], tool_choice="required",
                                       max_output_tokens=40, temperature=0, stream=True))
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.type for i in done] == ["function_call"] and done[0].name == "get_weather"


def test_langchain_openai_use_responses_api(server: BackgroundServer) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=GEMMA, base_url=f"{server.url}/v1", api_key="unused", use_responses_api=True,
                     temperature=0, max_tokens=8)
    message = llm.invoke("Say hello.")
    assert message.text
    streamed = "".join(chunk.text for chunk in llm.stream("Say hello."))
    assert streamed == message.text
