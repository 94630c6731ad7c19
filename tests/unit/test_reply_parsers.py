"""The reply parsers: tool calls and thinking traces found while a reply streams, as Ollama finds them."""

from __future__ import annotations

import re

import pytest

from ollama_magic.engine.gotemplate import Template
from ollama_magic.engine.reply import ReplyParser, join_parts
from ollama_magic.engine.prompt import prompt_template
from ollama_magic.engine.thinking import ThinkingParser, check_think, infer_tags
from ollama_magic.engine.toolcalls import (ToolCallParser, forced_call_schema, parse_tool_calls, resolve_tool_choice,
                                           tool_call_tag)
from ollama_magic.errors import InvalidRequest

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}},
]
QWEN_LIKE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{- if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
    "{{ if .ToolCalls }}<tool_call>\n{{ range .ToolCalls }}{\"name\": \"{{ .Function.Name }}\"}{{ end }}</tool_call>"
    "{{ else }}{{ .Content }}{{ end }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    "{{ if .Think }}<think>\n{{ end }}"
)


def feed(parser: ToolCallParser, text: str, size: int = 3) -> tuple[list, list[str]]:
    """Feed ``text`` a few characters at a time, as tokens arrive; collect calls and content pieces."""
    calls, content = [], []
    for i in range(0, len(text), size):
        got, shown = parser.add(text[i : i + size])
        calls += got
        if shown:
            content.append(shown)
    rest = parser.finish()
    if rest:
        content.append(rest)
    return calls, content


def test_a_streamed_call_never_leaks_its_json_and_each_call_has_an_id_and_index() -> None:
    parser = ToolCallParser(TOOLS, "<tool_call>")
    reply = ('Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
             '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>')
    calls, content = feed(parser, reply)
    assert "".join(content) == "Let me check. "
    assert not any("{" in piece or "<tool" in piece for piece in content)
    assert [(c.function.name, dict(c.function.arguments), c.function.index) for c in calls] == [
        ("get_weather", {"city": "Paris"}, 0), ("get_weather", {"city": "Rome"}, 1)]
    assert all(re.fullmatch(r"call_[a-z0-9]{8}", c.id) for c in calls) and calls[0].id != calls[1].id


def test_brace_tag_a_reply_starting_with_json_is_a_call_prose_first_is_content() -> None:
    calls, content = feed(ToolCallParser(TOOLS), '  {"name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert [c.function.name for c in calls] == ["get_weather"] and dict(calls[0].function.arguments) == {"city": "Oslo"}
    prose = 'Sure. {"name": "get_weather", "arguments": {"city": "Oslo"}}'
    calls, content = feed(ToolCallParser(TOOLS), prose)
    assert calls == [] and "".join(content) == prose


def test_json_that_is_not_a_known_tool_comes_back_as_content() -> None:
    text = '{"answer": 42}'
    calls, content = feed(ToolCallParser(TOOLS), text)
    assert calls == [] and "".join(content) == text


def test_a_longer_tool_name_is_not_cut_short_by_a_prefix_name() -> None:
    parser = ToolCallParser(TOOLS, "<tool_call>")
    calls, _ = feed(parser, '<tool_call>{"name": "get_weather", "arguments": {}}', size=1)
    assert [c.function.name for c in calls] == ["get_weather"]


def test_whole_reply_parsing_is_the_same_rule() -> None:
    calls, content = parse_tool_calls('{"name": "get", "arguments": "{\\"q\\": 1}"}', TOOLS)
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("get", {"q": 1})] and content == ""


def test_the_tag_is_read_from_the_template() -> None:
    assert tool_call_tag(Template(QWEN_LIKE)) == "<tool_call>"
    assert tool_call_tag(Template("{{ range .Messages }}{{ .Content }}{{ end }}")) == "{"
    llama = '{{ range .Messages }}{{ if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}"}{{ end }}{{ end }}{{ end }}'
    assert tool_call_tag(Template(llama)) == "{"


def test_tool_choice_values() -> None:
    assert resolve_tool_choice(None, TOOLS) == ("auto", TOOLS)
    assert resolve_tool_choice("none", TOOLS) == ("none", [])
    assert resolve_tool_choice("required", TOOLS)[0] == "required"
    mode, chosen = resolve_tool_choice({"type": "function", "function": {"name": "get"}}, TOOLS)
    assert mode == "required" and [t["function"]["name"] for t in chosen] == ["get"]
    with pytest.raises(InvalidRequest, match="not one of the tools"):
        resolve_tool_choice({"type": "function", "function": {"name": "nope"}}, TOOLS)
    with pytest.raises(InvalidRequest, match="needs tools"):
        resolve_tool_choice("required", None)
    assert forced_call_schema(TOOLS[:1])["properties"]["name"] == {"const": "get_weather"}


def test_thinking_tags_come_from_the_template() -> None:
    assert infer_tags(Template(QWEN_LIKE)) == ("<think>", "</think>")
    assert prompt_template(QWEN_LIKE, None).thinking_tags == ("<think>", "</think>")
    assert prompt_template("{{ range .Messages }}{{ .Content }}{{ end }}", None).thinking_tags == ("", "")
    # .Thinking outside range .Messages does not count (Ollama's rule)
    assert prompt_template("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", None).thinking_tags == ("", "")
    jinja = "{% for m in messages %}<think>{{ m.thinking }}</think>{% endfor %}"
    assert prompt_template(None, jinja).thinking_tags == ("<think>", "</think>")


def test_thinking_parser_splits_trace_and_answer_piece_by_piece() -> None:
    parser = ThinkingParser("<think>", "</think>")
    pieces = ["  <thi", "nk>\n", "Two plus", " two is four.</th", "ink>\n\n", "It is 4."]
    out = [parser.add(p) for p in pieces]
    assert "".join(t for t, _ in out) == "Two plus two is four."
    assert "".join(c for _, c in out) == "It is 4."
    assert not any("<" in t or "<" in c for t, c in out)
    plain = ThinkingParser("<think>", "</think>")
    assert plain.add("Hello <think>") == ("", "Hello <think>")


def test_a_prompt_that_opened_the_trace_starts_the_reply_inside_it() -> None:
    parser = ReplyParser(thinking=("<think>", "</think>"), started_thinking=True)
    parts = [parser.add("I should greet.</think>Hi!"), parser.finish()]
    whole = join_parts(parts)
    assert (whole.thinking, whole.content) == ("I should greet.", "Hi!")
    cut = ReplyParser(thinking=("<think>", "</think>"), started_thinking=True)
    assert join_parts([cut.add("still thinking</thi"), cut.finish()]).thinking == "still thinking</thi"


def test_think_values_are_checked_as_ollama_does() -> None:
    assert [check_think(v) for v in (None, True, False, "low", "max")] == [None, True, False, "low", "max"]
    with pytest.raises(InvalidRequest, match="invalid think value"):
        check_think("extreme")
