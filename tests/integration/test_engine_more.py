"""More of Ollama's generate/chat semantics on the real model: raw, context, suffix, images, tools,
concurrency from several threads, and memory across load/unload cycles."""

from __future__ import annotations

import base64
import logging
import resource
from datetime import datetime, timedelta, timezone
import threading

import pytest

from ollama_magic import Engine
from ollama_magic.engine.toolcalls import parse_tool_calls
from ollama_magic.errors import InvalidRequest
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"


@pytest.fixture(scope="module")
def engine(registered: ModelStore) -> Engine:
    with Engine(registered) as engine:
        yield engine


def test_raw_bypasses_the_template(engine: Engine) -> None:
    templated = engine.generate(GEMMA, "Hello", options={"num_predict": 1})
    raw = engine.generate(GEMMA, "Hello", raw=True, options={"num_predict": 1})
    assert raw.prompt_eval_count < templated.prompt_eval_count
    assert raw.prompt_eval_count <= 3  # <bos> Hello


def test_context_continues_a_generation(engine: Engine) -> None:
    first = engine.generate(GEMMA, "Tell me a story.", options={"num_predict": 8, "seed": 1})
    second = engine.generate(GEMMA, "Go on.", context=first.context, options={"num_predict": 8, "seed": 1})
    assert second.prompt_eval_count > len(first.context)
    assert second.context[: len(first.context)] == first.context


def test_template_override_changes_the_prompt(engine: Engine) -> None:
    r = engine.generate(GEMMA, "Hi", template="Q: {{ .Prompt }}\nA:", options={"num_predict": 1})
    plain = engine.generate(GEMMA, "Hi", raw=True, options={"num_predict": 1})
    assert r.prompt_eval_count > plain.prompt_eval_count


def test_suffix_on_a_model_without_insert_support_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="does not support insert"):
        engine.generate(GEMMA, "def f(", suffix="    return 1")


def test_images_on_a_text_model_are_refused_clearly(engine: Engine) -> None:
    image = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    with pytest.raises(InvalidRequest, match="^this model is missing data required for image input$"):  # Ollama's
        engine.generate(GEMMA, "What is this?", images=[image])
    with pytest.raises(InvalidRequest, match="^this model is missing data required for image input$"):
        engine.chat(GEMMA, [{"role": "user", "content": "What is this?", "images": [image]}])


def test_bad_message_roles_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="invalid message role"):
        engine.chat(GEMMA, [{"role": "wizard", "content": "hi"}])


def test_unknown_option_is_ignored_with_a_warning(engine: Engine, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        assert engine.generate(GEMMA, "hi", options={"num_predict": 1, "not_an_option": 3}).done
    assert "not_an_option" in caplog.text


def test_modelfile_parameters_apply_and_requests_override_them(registered: ModelStore, tmp_path) -> None:
    list(registered.create("short-answers", "FROM gemma3:270m\nPARAMETER num_predict 3"))
    try:
        with Engine(registered) as engine:
            assert engine.generate("short-answers", "Tell me about cats.").eval_count == 3
            assert engine.generate("short-answers", "Tell me about cats.", options={"num_predict": 5}).eval_count == 5
    finally:
        registered.delete("short-answers")


def test_requests_from_several_threads_queue_on_one_model(engine: Engine) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            r = engine.chat(GEMMA, [{"role": "user", "content": f"Count to {i}."}], options={"num_predict": 12, "seed": i})
            results.append(r.message.content)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 4
    # the same seeded request alone gives the same text: nothing was mixed between requests
    alone = engine.chat(GEMMA, [{"role": "user", "content": "Count to 2."}], options={"num_predict": 12, "seed": 2}).message.content
    assert alone in results


def test_tool_calls_are_parsed_from_the_reply() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    calls, content = parse_tool_calls(' {"name": "get_weather", "parameters": {"city": "Paris"}}', tools)
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert content.strip() == ""  # the blank before the call is content, as in Ollama
    # as Ollama: with no tag in the template, a reply is a call only if it starts with one
    prose = 'Sure. {"name": "get_weather", "parameters": {"city": "Paris"}}'
    assert parse_tool_calls(prose, tools) == ([], prose)
    assert parse_tool_calls('{"name": "unknown_tool", "arguments": {}}', tools)[0] == []
    assert parse_tool_calls("no json here", tools) == ([], "no json here")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def test_memory_is_freed_across_load_unload_cycles(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        for _ in range(5):  # warm-up: allocator arenas and caches settle
            engine.generate(GEMMA, "hi", keep_alive=0, options={"num_predict": 1})
        baseline = _rss_mb()
        for _ in range(25):
            engine.generate(GEMMA, "hi", keep_alive=0, options={"num_predict": 1})
        assert engine.ps().models == []
        # Leaking the weights (~250 MB) or the KV cache (~75 MB) once per cycle would add 1.9 GB or
        # more; allocator noise after a long test session stays well under this bound.
        assert _rss_mb() - baseline < 150


def test_ps_shows_the_default_keep_alive_while_the_first_request_runs(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        stream = engine.generate(GEMMA, "Tell me a story.", stream=True, options={"num_predict": 64})
        next(stream)  # loaded and generating: the request has not ended yet
        [running] = engine.ps().models
        left = running.expires_at - datetime.now(timezone.utc)
        assert timedelta(minutes=4) < left <= timedelta(minutes=5)  # not "forever"
        stream.close()
