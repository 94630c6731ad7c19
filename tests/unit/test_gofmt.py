"""One Go formatting module: templates, show's parameters and the blobs print values as Go does."""

from __future__ import annotations

import pytest

from ollama_magic.engine.gotemplate import Template
from ollama_magic.engine.prompt import GoPrompt
from ollama_magic.gofmt import go_json, go_sprint
from ollama_magic.options import format_value
from ollama_magic.store.manifests import go_json as go_json_line


@pytest.mark.parametrize(
    ("value", "printed"),
    [(1e6, "1e+06"), (1234567.5, "1.2345675e+06"), (0.5, "0.5"), (2.0, "2"), (1.5e-05, "1.5e-05"), (123456.0, "123456")],
)
def test_a_float_prints_the_same_in_a_template_and_in_show(value: float, printed: str) -> None:
    assert Template("{{ .X }}").render({"X": value}) == printed  # fmt.Sprint; the old template printed 1000000
    assert Template('{{ printf "%v" .X }}').render({"X": value}) == printed
    assert format_value(value) == printed  # /api/show parameters and the Modelfile


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ({"q": "a<b && c>d"}, '{"q":"a\\u003cb \\u0026\\u0026 c\\u003ed"}'),
        ([1e6, 1e21, 1e-7, 0.000001, 2.5, True, None], "[1000000,1e+21,1e-7,0.000001,2.5,true,null]"),
        ("line\u2028sep", '"line\\u2028sep"'),
    ],
)
def test_go_json_is_encoding_json_marshal(value: object, encoded: str) -> None:
    assert go_json(value) == encoded
    assert go_json_line(value) == (encoded + "\n").encode()  # what manifests and params blobs hold


def test_tools_and_the_json_function_in_templates_escape_html_as_go_does() -> None:
    tool = {"type": "function", "function": {"name": "lt", "description": "is a < b & b > c?", "parameters": {}}}
    prompt = GoPrompt("{{ .Tools }}|{{ range .Messages }}{{ json .Content }}{{ end }}").render_chat(
        [{"role": "user", "content": "<b>"}], [tool]
    )
    assert prompt == (
        '[{"type":"function","function":{"name":"lt","description":"is a \\u003c b \\u0026 b \\u003e c?",'
        '"parameters":{}}}]|"\\u003cb\\u003e"'
    )


def test_q_verb_quotes_like_strconv_quote() -> None:
    assert Template('{{ printf "%q" .A }}').render({"A": "tab\there\x1b"}) == '"tab\\there\\x1b"'


def test_sprint_of_containers() -> None:
    assert go_sprint({"b": 1e6, "a": [True, None]}) == "map[a:[true <nil>] b:1e+06]"
