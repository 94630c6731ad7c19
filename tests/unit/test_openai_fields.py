"""How Ollama's options and format become the fields of an OpenAI request (no server needed)."""

from __future__ import annotations

import pytest

from ollama_magic.backends import base_url
from ollama_magic.errors import InvalidRequest
from ollama_magic.openai_backend import request_fields

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}


def test_ollama_options_become_openai_fields() -> None:
    fields, extra = request_fields({"temperature": 0.2, "top_p": 0.9, "seed": 7, "num_predict": 64,
                                    "stop": "\n\n", "presence_penalty": 0.5, "frequency_penalty": 0.1})
    assert fields == {"temperature": 0.2, "top_p": 0.9, "seed": 7, "max_tokens": 64, "stop": ["\n\n"],
                      "presence_penalty": 0.5, "frequency_penalty": 0.1}
    assert extra == {}


def test_llama_cpp_sampling_options_travel_as_extra_body_fields() -> None:
    fields, extra = request_fields({"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1, "temperature": 0})
    assert fields == {"temperature": 0.0} and extra == {"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1}


def test_ollama_sentinels_mean_the_server_default_and_num_ctx_stays_in_the_notebook() -> None:
    assert request_fields({"num_predict": -1, "seed": -1, "num_ctx": 8192}) == ({}, {})


def test_load_time_options_and_bad_values_are_one_line_errors() -> None:
    with pytest.raises(InvalidRequest, match="num_gpu: set when an OpenAI-compatible server starts"):
        request_fields({"num_gpu": 0})
    with pytest.raises(InvalidRequest, match='option "temperature" must be a number'):
        request_fields({"temperature": "hot"})


def test_json_format_and_schemas_become_response_format() -> None:
    assert request_fields(None, "json")[0] == {"response_format": {"type": "json_object"}}
    assert request_fields(None, SCHEMA)[0] == {
        "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}}}
    assert request_fields(None, SCHEMA, schema_form="json_object")[0] == {
        "response_format": {"type": "json_object", "schema": SCHEMA}}
    with pytest.raises(InvalidRequest, match="invalid format 'yaml'"):
        request_fields(None, "yaml")


@pytest.mark.parametrize(("given", "expected"), [
    ("gpu-box", "http://gpu-box:11434"),
    ("gpu-box:8000", "http://gpu-box:8000"),
    ("http://gpu-box:8000/v1/", "http://gpu-box:8000/v1"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
])
def test_urls_get_a_scheme_and_ollamas_port_when_they_have_none(given: str, expected: str) -> None:
    assert base_url(given) == expected
