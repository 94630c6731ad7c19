"""Ollama (Go text/template) chat templates rendered to the exact prompt strings the models expect."""

from __future__ import annotations

import pytest

from ollama_magic.defaults import GEMMA3_TEMPLATE, SMOLLM2_TEMPLATE
from ollama_magic.engine.gotemplate import Template, TemplateError
from ollama_magic.engine.prompt import GoPrompt, JinjaPrompt, prompt_template

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Why is the sky blue?"},
]

LLAMA3 = """{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

Cutting Knowledge Date: December 2023

When you receive a tool call response, use the output to format an answer to the orginal user question.

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.

{{ range $.Tools }}
{{- . }}
{{ end }}
{{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

MISTRAL = """{{- range $index, $_ := .Messages }}
{{- if eq .Role "system" }}[SYSTEM_PROMPT]{{ .Content }}[/SYSTEM_PROMPT]
{{- else if eq .Role "user" }}
{{- if and (le (len (slice $.Messages $index)) 2) $.Tools }}[AVAILABLE_TOOLS]{{ $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST]{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }}{{ .Content }}
{{- if not (eq (len (slice $.Messages $index)) 1) }}</s>
{{- end }}
{{- else if .ToolCalls }}[TOOL_CALLS][
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}]</s>
{{- end }}
{{- else if eq .Role "tool" }}[TOOL_RESULTS]{"content": {{ .Content }}}[/TOOL_RESULTS]
{{- end }}
{{- end }}"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
    },
}


def test_gemma3_template_renders_turns_and_opens_the_model_turn() -> None:
    prompt = GoPrompt(GEMMA3_TEMPLATE).render_chat(CHAT)
    assert prompt == (
        "<start_of_turn>user\nBe brief.<end_of_turn>\n"
        "<start_of_turn>user\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_smollm2_template_renders_chatml_as_ollama_does() -> None:
    # Ollama's template writes a plain system message without <|im_end|>; ours renders it the same way.
    prompt = GoPrompt(SMOLLM2_TEMPLATE).render_chat(CHAT)
    assert prompt == (
        "<|im_start|>system\nBe brief.\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_template_with_tools_and_tool_calls() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "20C"},
    ]
    prompt = GoPrompt(SMOLLM2_TEMPLATE).render_chat(messages, [WEATHER_TOOL])
    assert prompt.startswith("<|im_start|>system\nYou are an expert in composing functions.")
    assert '<tools>[{"type":"function","function":{"name":"get_weather"' in prompt
    assert '<|im_start|>assistant\n<tool_call>[\n{"name": "get_weather", "arguments": {"city":"Paris"}}\n]</tool_call><|im_end|>\n' in prompt
    assert prompt.endswith("<|im_start|>user\n<tool_response>\n20C\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_template_with_one_user_message_opens_the_assistant_turn() -> None:
    assert GoPrompt(SMOLLM2_TEMPLATE).render_chat([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_llama3_template_with_system() -> None:
    prompt = GoPrompt(LLAMA3).render_chat(CHAT)
    assert prompt == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhy is the sky blue?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama3_template_with_tools_and_tool_calls() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "20C"},
    ]
    prompt = GoPrompt(LLAMA3).render_chat(messages, [WEATHER_TOOL])
    assert prompt.startswith("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date")
    assert '{"name": "get_weather", "parameters": {"city":"Paris"}}<|eot_id|>' in prompt
    assert prompt.endswith("<|start_header_id|>ipython<|end_header_id|>\n\n20C<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    # the user turn is the last user turn but not the last message: no tool list there
    assert "Given the following functions" not in prompt


def test_llama3_prints_tools_as_json_in_the_last_user_turn() -> None:
    prompt = GoPrompt(LLAMA3).render_chat([{"role": "user", "content": "Weather?"}], [WEATHER_TOOL])
    assert '{"type":"function","function":{"name":"get_weather"' in prompt
    assert prompt.endswith("Weather?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_chatml_template() -> None:
    prompt = GoPrompt(CHATML).render_chat(CHAT)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhy is the sky blue?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_mistral_template_with_tools() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Weather?"}]
    prompt = GoPrompt(MISTRAL).render_chat(messages, [WEATHER_TOOL])
    assert prompt.startswith("[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{")
    assert prompt.endswith('}][/AVAILABLE_TOOLS][INST]Weather?[/INST]')
    calls = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}, {"role": "tool", "content": "1"}]
    assert GoPrompt(MISTRAL).render_chat(calls) == '[INST]Q[/INST][TOOL_CALLS][{"name": "f", "arguments": {"a":1}}]</s>[TOOL_RESULTS]{"content": 1}[/TOOL_RESULTS]'


def test_legacy_per_turn_template_cuts_at_the_response() -> None:
    legacy = "{{ if .System }}<<SYS>>{{ .System }}<</SYS>>{{ end }}[INST] {{ .Prompt }} [/INST] {{ .Response }}</s>"
    prompt = GoPrompt(legacy).render_chat(CHAT)
    assert prompt == "<<SYS>>Be brief.<</SYS>>[INST] Hi [/INST] Hello!</s>[INST] Why is the sky blue? [/INST] "


def test_default_template_is_the_prompt_itself() -> None:
    tmpl = prompt_template(None, None)
    assert tmpl.render_generate("complete this", "") == "complete this"


def test_generate_with_system_goes_through_the_chat_template() -> None:
    assert GoPrompt(CHATML).render_generate("Hi", "Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_suffix_needs_a_template_with_suffix() -> None:
    fim = GoPrompt("<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>")
    assert fim.render_generate("def f(", "", suffix="):\n    pass") == "<PRE> def f( <SUF>):\n    pass <MID>"
    with pytest.raises(Exception, match="does not support insert"):
        GoPrompt(CHATML).render_generate("x", "", suffix="y")


def test_jinja_chat_template_from_gguf() -> None:
    jinja = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    assert JinjaPrompt(jinja).render_chat(CHAT[1:2]) == "<user>Hi\n<assistant>"


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        ("{{ .A }}-{{ .B }}", {"A": 1, "B": "x"}, "1-x"),
        ("a  {{- .A -}}  b", {"A": "X"}, "aXb"),
        ("{{/* a comment */}}x", {}, "x"),
        ("{{ if eq .A 1 2 3 }}yes{{ else }}no{{ end }}", {"A": 3}, "yes"),
        ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"A": "", "B": [1]}, "b"),
        ("{{ with .A }}[{{ . }}]{{ else }}none{{ end }}", {"A": ""}, "none"),
        ("{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ else }}empty{{ end }}", {"L": ["a", "b"]}, "0=a;1=b;"),
        ("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
        ("{{ range .L }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}", {"L": [1, 2, 3]}, "1"),
        ("{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ . }}{{ end }}", {"L": [1, 2, 3]}, "13"),
        ("{{ $x := 1 }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}", {"L": [5, 6]}, "6"),
        ("{{ len .L }} {{ index .L 1 }} {{ slice .L 1 }}", {"L": [1, 2, 3]}, "3 2 [2 3]"),
        ("{{ .A | printf \"%s!\" }}", {"A": "hi"}, "hi!"),
        ("{{ printf \"%d-%q\" 3 .A }}", {"A": "x"}, '3-"x"'),
        ("{{ json .M }}", {"M": {"k": [1, "v"]}}, '{"k":[1,"v"]}'),
        ("{{ and .A .B }}|{{ or .A .B }}|{{ not .A }}", {"A": 0, "B": "b"}, "0|b|true"),
        ("{{ (index .L 0).Name }}", {"L": [{"Name": "n"}]}, "n"),
        ("{{ lt 1 2 }}{{ ge 2 2 }}{{ ne .A \"x\" }}", {"A": "x"}, "truetruefalse"),
        ("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", {"M": {"b": 2, "a": 1}}, "a1b2"),
        ("{{ $.A }}{{ with .B }}{{ $.A }}{{ .C }}{{ end }}", {"A": "r", "B": {"C": "c"}}, "rrc"),
    ],
)
def test_go_template_constructs(source: str, data: dict, expected: str) -> None:
    assert Template(source).render(data) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{{ define "x" }}y{{ end }}', "not supported"),
        ('{{ template "x" }}', "not supported"),
        ("{{ frobnicate .A }}", 'function "frobnicate" not defined'),
        ("{{ if .A }}never closed", "missing {{end}}"),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ .A ", "unclosed action"),
        ("{{ $undefined }}", "undefined variable"),
        ("{{ .Missing }}", "can't evaluate field Missing"),
    ],
)
def test_unsupported_or_broken_templates_give_a_clear_error(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match="template error") as excinfo:
        Template(source).render({"A": 1})
    assert message in str(excinfo.value)
