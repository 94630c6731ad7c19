"""The engine's request rules (``engine/requests.py``) and what it asks a loaded model once, without a model."""

from __future__ import annotations

import pytest

from ollama_magic.engine import requests
from ollama_magic.engine.engine import _bos, _check_grammar
from ollama_magic.errors import InvalidRequest


class FakeRunner:
    """Counts what the engine asks the model; a real Runner goes through its owner thread for each."""

    def __init__(self) -> None:
        self.tokenized: list[str] = []
        self.grammars: list[str] = []

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        self.tokenized.append(text)
        return [1] if add_bos else []

    def check_grammar(self, gbnf: str) -> None:
        self.grammars.append(gbnf)
        if "bad" in gbnf:
            raise InvalidRequest("the format schema could not be turned into a grammar")


def test_the_bos_tokens_are_asked_once_per_runner() -> None:
    runner, other = FakeRunner(), FakeRunner()
    assert _bos(runner) == [1] and _bos(runner) == [1] and _bos(other) == [1]
    _bos(runner).append(99)  # a caller's copy: the remembered tokens do not change
    assert _bos(runner) == [1]
    assert runner.tokenized == [""] and other.tokenized == [""]


def test_a_grammar_is_checked_once_per_runner_and_a_bad_one_every_time() -> None:
    runner = FakeRunner()
    _check_grammar(runner, 'root ::= "x"')
    _check_grammar(runner, 'root ::= "x"')
    for _ in range(2):
        with pytest.raises(InvalidRequest):
            _check_grammar(runner, "bad")
    assert runner.grammars == ['root ::= "x"', "bad", "bad"]


def test_a_tool_result_named_only_by_its_call_id_gets_the_call_name() -> None:
    messages = [{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": {"name": "add"}}]},
                {"role": "tool", "content": "3", "tool_call_id": "c1"}]
    assert requests.with_tool_names(messages)[1]["tool_name"] == "add"


@pytest.mark.parametrize("message, error", [({"role": "robot", "content": "x"}, "invalid message role"),
                                            ({"role": "user", "content": 3}, "content must be a string")])
def test_a_malformed_message_is_refused(message: dict, error: str) -> None:
    with pytest.raises(InvalidRequest, match=error):
        requests.message(message)


def test_a_message_without_content_gets_an_empty_string() -> None:
    assert requests.message({"role": "assistant"})["content"] == ""


@pytest.mark.parametrize("model", ["", "bad name!"])
def test_a_missing_or_malformed_model_name_is_the_callers_mistake(model: str) -> None:
    with pytest.raises(InvalidRequest):
        requests.check_model_name(model)


def test_format_must_be_json_or_a_schema() -> None:
    assert requests.grammar(None) is None and requests.grammar("") is None
    assert requests.grammar("json")
    with pytest.raises(InvalidRequest, match="invalid format"):
        requests.grammar("yaml")


def test_request_options_override_the_models_parameters_over_the_defaults() -> None:
    merged = requests.options({"temperature": 0.1, "top_k": 5}, {"temperature": 0.7})
    assert merged["temperature"] == 0.7 and merged["top_k"] == 5 and "num_ctx" in merged
