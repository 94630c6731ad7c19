"""Random option dictionaries, load-time options included, against the real small models: whatever a
user sends, the process survives and every answer is a result or one of our errors.

Values are bounded so that reloads stay cheap (num_ctx at most 256, a few tokens per reply), and each
example sends several requests at once with the same options, so small batches meet concurrent
streams (review §6 B1)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import ollama
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ollama_magic import Engine
from ollama_magic.errors import OllamaMagicError
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
SMOLLM2 = "smollm2:135m"

#: odd values on purpose: zero, negative, tiny, one past a bound, the wrong type
LOAD_TIME = {
    "num_batch": st.sampled_from([-3, 0, 1, 2, 3, 7, 64, 512]),
    "num_ctx": st.sampled_from([-1, 0, 1, 4, 16, 64, 256]),
    "num_thread": st.sampled_from([-1, 0, 1, 2, 3]),
    "num_gpu": st.sampled_from([-1, 0, 1, 999]),
}
PER_REQUEST = {
    "num_keep": st.sampled_from([-5, -1, 0, 1, 4, 100000]),
    "num_predict": st.sampled_from([-2, -1, 0, 1, 3, 6]),
    "temperature": st.sampled_from([-1.0, 0.0, 0.7, 2.0, 1e6]),
    "top_k": st.sampled_from([-5, 0, 1, 40, 10**9]),
    "top_p": st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]),
    "min_p": st.sampled_from([-1.0, 0.0, 0.5, 1.0]),
    "typical_p": st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    "repeat_penalty": st.sampled_from([-1.0, 0.0, 1.0, 1.5]),
    "repeat_last_n": st.sampled_from([-2, -1, 0, 64, 10**6]),
    "presence_penalty": st.sampled_from([-2.0, 0.0, 1.5]),
    "seed": st.sampled_from([-1, 0, 42]),
    "stop": st.sampled_from([[], ["a"], ["", "\n"]]),
}
#: now and then one option of the wrong type (a refusal, never a crash)
WRONG_TYPE = st.sampled_from([None] * 5 + [("num_batch", "many"), ("num_ctx", 2.5), ("top_k", "x"), ("stop", 3)])


def option_dicts(keys: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=keys)


@pytest.fixture(scope="module")
def engine(registered: ModelStore) -> Iterator[Engine]:
    with Engine(registered) as engine:
        yield engine


def outcome(call: Any) -> Any:
    """The call's result, or the error if it is one of ours; anything else fails the test."""
    try:
        return call()
    except OllamaMagicError as exc:
        return exc


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(load=option_dicts(LOAD_TIME), request=option_dicts(PER_REQUEST), streams=st.integers(1, 3), wrong=WRONG_TYPE)
def test_generate_with_random_options_answers_or_refuses(engine: Engine, load: dict[str, Any],
                                                         request: dict[str, Any], streams: int,
                                                         wrong: tuple[str, Any] | None) -> None:
    options = {"num_predict": 4, **load, **request}  # the default (-1) decodes up to a full context
    if options["num_predict"] < 0 and not 0 < options.get("num_ctx", 4096) <= 64:
        options["num_ctx"] = 64  # so do -1 and -2: keep that context short
    if wrong is not None:
        options[wrong[0]] = wrong[1]

    def ask(i: int) -> Any:
        return outcome(lambda: engine.generate(SMOLLM2, f"Say {i}.", options=options))

    with ThreadPoolExecutor(streams) as pool:
        answers = list(pool.map(ask, range(streams)))
    for answer in answers:
        assert isinstance(answer, (ollama.GenerateResponse, OllamaMagicError)), answer
        if isinstance(answer, ollama.GenerateResponse):
            assert answer.done


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(load=option_dicts({"num_ctx": LOAD_TIME["num_ctx"], "num_batch": LOAD_TIME["num_batch"],
                          "num_thread": LOAD_TIME["num_thread"]}),
       lengths=st.lists(st.integers(0, 90), min_size=1, max_size=5), truncate=st.booleans())
def test_embed_with_random_options_answers_or_refuses(engine: Engine, load: dict[str, Any], lengths: list[int],
                                                      truncate: bool) -> None:
    texts = [" ".join(f"w{k}" for k in range(n)) or "x" for n in lengths]

    def ask(part: list[str]) -> Any:
        return outcome(lambda: engine.embed("all-minilm", part, truncate=truncate, options=load))

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(ask, [texts, texts[::-1]]))
    for answer in answers:
        assert isinstance(answer, (ollama.EmbedResponse, OllamaMagicError)), answer
        if isinstance(answer, ollama.EmbedResponse):
            assert len(answer.embeddings) == len(texts)
