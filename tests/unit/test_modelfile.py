"""The Modelfile parser and renderer: Ollama's grammar, typed parameters, errors that name the line."""

from __future__ import annotations

import logging

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ollama_magic.errors import InvalidRequest, ModelfileError
from ollama_magic.options import OPTION_TYPES
from ollama_magic.store.modelfile import Modelfile, create_fields, parse, quote


def parse_error(text: str) -> str:
    with pytest.raises(ModelfileError) as info:
        parse(text)
    return str(info.value)


# --- instructions and values --------------------------------------------------------------------


def test_minimal_modelfile_has_one_from() -> None:
    mf = parse("FROM gemma3:270m\n")
    assert mf == Modelfile(froms=["gemma3:270m"])


def test_instructions_are_case_insensitive() -> None:
    mf = parse("from llama3\nSystem be brief\nparameter Temperature 0.5\nMeSsAgE User hi\nLicense MIT\nadapter ./a.gguf\n")
    assert mf.froms == ["llama3"]
    assert mf.system == "be brief"
    assert mf.parameters == {"temperature": 0.5}
    assert mf.messages == [{"role": "user", "content": "hi"}]
    assert mf.licenses == ["MIT"]
    assert mf.adapters == ["./a.gguf"]


def test_comment_lines_and_blank_lines_are_ignored() -> None:
    mf = parse("# a comment\n\n   # an indented comment\nFROM x\n\n# SYSTEM not this\n")
    assert mf == Modelfile(froms=["x"])


def test_hash_inside_a_value_is_literal() -> None:
    mf = parse("FROM x\nSYSTEM answer # with a hash\nPARAMETER stop #end\n")
    assert mf.system == "answer # with a hash"
    assert mf.parameters["stop"] == ["#end"]


def test_hash_line_inside_triple_quoted_value_is_not_a_comment() -> None:
    mf = parse('FROM x\nTEMPLATE """line one\n# not a comment\nline three"""\n')
    assert mf.template == "line one\n# not a comment\nline three"


def test_triple_quoted_value_keeps_newlines_and_outer_spaces_exactly() -> None:
    mf = parse('FROM x\nTEMPLATE """  {{ .System }}\n\n{{ .Prompt }}  \n"""\n')
    assert mf.template == "  {{ .System }}\n\n{{ .Prompt }}  \n"


def test_double_quoted_value_keeps_newlines_and_outer_spaces_exactly() -> None:
    mf = parse('FROM x\nSYSTEM "  first\n  second  "\n')
    assert mf.system == "  first\n  second  "


def test_triple_quoted_value_may_hold_single_double_quotes() -> None:
    mf = parse('FROM x\nSYSTEM """say "hi" to them"""\n')
    assert mf.system == 'say "hi" to them'


def test_empty_quoted_values_are_empty_strings() -> None:
    mf = parse('FROM x\nSYSTEM ""\nTEMPLATE """"""\n')
    assert mf.system == ""
    assert mf.template == ""


def test_bare_values_are_trimmed() -> None:
    mf = parse("FROM    x   \nSYSTEM \t  be brief \t \n")
    assert mf.froms == ["x"]
    assert mf.system == "be brief"


def test_crlf_line_endings_parse_like_lf() -> None:
    mf = parse('FROM x\r\nSYSTEM """a\r\nb"""\r\nPARAMETER num_ctx 2048\r\n')
    assert mf.system == "a\nb"
    assert mf.parameters == {"num_ctx": 2048}


def test_later_template_and_system_replace_earlier_ones() -> None:
    mf = parse("FROM x\nSYSTEM one\nSYSTEM two\nTEMPLATE a\nTEMPLATE b\n")
    assert mf.system == "two"
    assert mf.template == "b"


def test_multiple_from_lines_are_kept_in_order() -> None:
    mf = parse("FROM ./model.gguf\nFROM ./mmproj.gguf\n")
    assert mf.froms == ["./model.gguf", "./mmproj.gguf"]


def test_multiple_adapters_and_licenses_are_kept_in_order() -> None:
    mf = parse('FROM x\nADAPTER a.gguf\nADAPTER b.gguf\nLICENSE """MIT\ntext"""\nLICENSE Apache-2.0\n')
    assert mf.adapters == ["a.gguf", "b.gguf"]
    assert mf.licenses == ["MIT\ntext", "Apache-2.0"]


# --- parameters ---------------------------------------------------------------------------------


def test_repeated_stop_parameters_build_a_list() -> None:
    mf = parse('FROM x\nPARAMETER stop "<|im_end|>"\nPARAMETER stop <end_of_turn>\nPARAMETER stop " "\n')
    assert mf.parameters == {"stop": ["<|im_end|>", "<end_of_turn>", " "]}


def test_single_stop_parameter_is_still_a_list() -> None:
    assert parse("FROM x\nPARAMETER stop END\n").parameters == {"stop": ["END"]}


def test_parameter_values_are_typed() -> None:
    mf = parse(
        "FROM x\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER top_p 1\n"
        "PARAMETER num_ctx 4096\n"
        "PARAMETER seed -1\n"
        "PARAMETER use_mmap false\n"
    )
    assert mf.parameters == {"temperature": 0.7, "top_p": 1.0, "num_ctx": 4096, "seed": -1, "use_mmap": False}
    assert type(mf.parameters["temperature"]) is float
    assert type(mf.parameters["top_p"]) is float
    assert type(mf.parameters["num_ctx"]) is int
    assert mf.parameters["use_mmap"] is False


@pytest.mark.parametrize("text", ["true", "True", "TRUE", "t", "T", "1"])
def test_bool_parameter_accepts_go_true_forms(text: str) -> None:
    assert parse(f"FROM x\nPARAMETER use_mmap {text}\n").parameters["use_mmap"] is True


def test_parameter_names_are_case_insensitive() -> None:
    assert parse("FROM x\nPARAMETER NUM_CTX 1024\n").parameters == {"num_ctx": 1024}


def test_last_value_of_a_repeated_scalar_parameter_wins() -> None:
    assert parse("FROM x\nPARAMETER num_ctx 1\nPARAMETER num_ctx 2\n").parameters == {"num_ctx": 2}


def test_deprecated_parameter_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        mf = parse("FROM x\nPARAMETER mirostat 1\nPARAMETER penalize_newline true\nPARAMETER num_ctx 8\n")
    assert mf.parameters == {"num_ctx": 8}
    assert "mirostat" in caplog.text
    assert "deprecated" in caplog.text


# --- messages -----------------------------------------------------------------------------------


def test_message_roles_are_kept_in_order() -> None:
    mf = parse(
        'FROM x\nMESSAGE system You are terse.\nMESSAGE user "Hi\nthere"\nMESSAGE ASSISTANT """Hello."""\n'
    )
    assert mf.messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi\nthere"},
        {"role": "assistant", "content": "Hello."},
    ]


# --- errors -------------------------------------------------------------------------------------


def test_unknown_instruction_names_the_line() -> None:
    message = parse_error("FROM x\n\nFORM y\n")
    assert message.startswith("line 3:")
    assert "unknown instruction" in message
    assert "FORM" in message


def test_unknown_parameter_names_the_line() -> None:
    message = parse_error("FROM x\nPARAMETER num_ctx 8\nPARAMETER bogus 1\n")
    assert message.startswith("line 3:")
    assert "unknown parameter" in message
    assert "bogus" in message


@pytest.mark.parametrize(
    "line, name",
    [
        pytest.param("PARAMETER num_ctx abc", "num_ctx", id="int-from-word"),
        pytest.param("PARAMETER temperature hot", "temperature", id="float-from-word"),
        pytest.param("PARAMETER seed 1.5", "seed", id="int-from-float"),
        pytest.param("PARAMETER use_mmap yes", "use_mmap", id="bool-from-yes"),
        pytest.param("PARAMETER temperature nan", "temperature", id="float-nan"),
        pytest.param("PARAMETER temperature inf", "temperature", id="float-inf"),
    ],
)
def test_wrong_typed_parameter_value_names_the_line(line: str, name: str) -> None:
    message = parse_error(f"FROM x\n# comment\n{line}\n")
    assert message.startswith("line 3:")
    assert name in message


def test_parameter_error_names_the_parameter_line_after_a_multiline_value() -> None:
    message = parse_error('FROM x\nSYSTEM """a\nb\nc"""\nPARAMETER num_ctx abc\n')
    assert message.startswith("line 5:")


def test_bad_message_role_names_the_line() -> None:
    message = parse_error("FROM x\nMESSAGE tool hi\n")
    assert message.startswith("line 2:")
    assert "role" in message
    assert "tool" in message


def test_unclosed_triple_quote_names_the_line_and_eof() -> None:
    message = parse_error('FROM x\nSYSTEM ok\nTEMPLATE """{{ .Prompt }}\nmore text\n')
    assert message.startswith("line 3:")
    assert "EOF" in message


def test_unclosed_double_quote_names_the_line_and_eof() -> None:
    message = parse_error('FROM x\nSYSTEM "never closed\n')
    assert message.startswith("line 2:")
    assert "EOF" in message


def test_instruction_without_value_names_the_line() -> None:
    assert parse_error("FROM x\nSYSTEM").startswith("line 2: missing value")
    assert parse_error("FROM x\nSYSTEM\nLICENSE MIT\n").startswith("line 2: missing value")
    assert parse_error("FROM x\nSYSTEM    \nLICENSE MIT\n").startswith("line 2: missing value")


def test_parameter_without_value_names_the_line() -> None:
    message = parse_error("FROM x\nPARAMETER temperature\n")
    assert message.startswith("line 2:")
    assert "missing value" in message


def test_text_after_closing_quote_names_the_line() -> None:
    message = parse_error('FROM x\nSYSTEM "hello" world\n')
    assert message.startswith("line 2:")
    assert "after the closing" in message


def test_text_after_closing_triple_quote_names_the_closing_line() -> None:
    message = parse_error('FROM x\nSYSTEM """a\nb""" trailing\n')
    assert message.startswith("line 3:")


def test_missing_from_is_an_error_without_a_line() -> None:
    with pytest.raises(ModelfileError) as info:
        parse("SYSTEM hi\nPARAMETER num_ctx 8\n")
    assert str(info.value) == "no FROM line"
    assert info.value.line is None


def test_empty_modelfile_has_no_from() -> None:
    assert parse_error("") == "no FROM line"
    assert parse_error("# only a comment\n") == "no FROM line"


def test_modelfile_error_is_a_400_with_the_line_attribute() -> None:
    with pytest.raises(ModelfileError) as info:
        parse("FROM x\nBOGUS y\n")
    assert info.value.line == 2
    assert info.value.status_code == 400
    assert isinstance(info.value, InvalidRequest)


# --- quote and render ---------------------------------------------------------------------------


def test_quote_leaves_plain_values_bare() -> None:
    assert quote("gemma3:270m") == "gemma3:270m"
    assert quote('say "hi"') == 'say "hi"'


def test_quote_uses_double_quotes_for_newlines_and_outer_spaces() -> None:
    assert quote("") == '""'
    assert quote("a\nb") == '"a\nb"'
    assert quote(" a") == '" a"'
    assert quote("a ") == '"a "'


def test_quote_uses_triple_quotes_when_value_holds_a_quote() -> None:
    assert quote('line "one"\nline two') == '"""line "one"\nline two"""'
    assert quote('"start') == '""""start"""'


@pytest.mark.parametrize("value", ['a\n"""b', '"quoted"', ' ends with "'])
def test_quote_refuses_values_the_format_cannot_hold(value: str) -> None:
    with pytest.raises(InvalidRequest):
        quote(value)


def test_render_uses_ollama_show_order() -> None:
    mf = Modelfile(
        froms=["base"],
        adapters=["a.gguf"],
        template="{{ .Prompt }}",
        system="be brief",
        parameters={"temperature": 0.7, "stop": ["<a>", "<b>"], "num_ctx": 4096, "use_mmap": True},
        licenses=["MIT"],
        messages=[{"role": "user", "content": "hi"}],
    )
    assert mf.render() == (
        "FROM base\n"
        "ADAPTER a.gguf\n"
        "TEMPLATE {{ .Prompt }}\n"
        "SYSTEM be brief\n"
        "PARAMETER num_ctx 4096\n"
        "PARAMETER stop <a>\n"
        "PARAMETER stop <b>\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER use_mmap true\n"
        "LICENSE MIT\n"
        "MESSAGE user hi\n"
    )


def test_render_header_comes_first_and_parses_as_a_comment() -> None:
    mf = Modelfile(froms=["base"], parameters={"top_p": 1.0})
    text = mf.render(header="# Modelfile generated by test")
    assert text.splitlines()[0] == "# Modelfile generated by test"
    assert "PARAMETER top_p 1\n" in text
    assert parse(text) == mf


def test_rendered_modelfile_parses_back_equal() -> None:
    mf = Modelfile(
        froms=["./model.gguf", "./mmproj.gguf"],
        adapters=["lora one.gguf"],
        template='{{ if .System }}<start>"system"\n{{ .System }}{{ end }}\n',
        system="  You are helpful.\n",
        parameters={"stop": ["<|end|>", " ", ""], "temperature": 0.25, "seed": 42, "use_mmap": False},
        licenses=["MIT License\n\nCopyright", "second"],
        messages=[{"role": "system", "content": ""}, {"role": "assistant", "content": 'He said "ok".'}],
    )
    assert parse(mf.render()) == mf


# --- round-trip property ------------------------------------------------------------------------

# Any text without '\r', plus text made mostly of the characters the grammar cares about.
_text = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\r", blacklist_categories=("Cs",)), max_size=30),
    st.text(alphabet=st.sampled_from(list(' \t\n"#a\x0b\x0c\xa0\u2028\u3000')), max_size=12),
)


def _quotable(value: str) -> bool:
    try:
        quote(value)
    except InvalidRequest:
        return False
    return True


_value = _text.filter(_quotable)

_FLOAT_NAMES = sorted(n for n, t in OPTION_TYPES.items() if t is float)
_INT_NAMES = sorted(n for n, t in OPTION_TYPES.items() if t is int)
_BOOL_NAMES = sorted(n for n, t in OPTION_TYPES.items() if t is bool)
_finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
_ints = st.integers(min_value=-(2**62), max_value=2**62)


@st.composite
def _parameters(draw: st.DrawFn) -> dict:
    params: dict = {}
    for name in draw(st.lists(st.sampled_from(_FLOAT_NAMES), max_size=3, unique=True)):
        params[name] = draw(_finite_floats)
    for name in draw(st.lists(st.sampled_from(_INT_NAMES), max_size=3, unique=True)):
        params[name] = draw(_ints)
    for name in draw(st.lists(st.sampled_from(_BOOL_NAMES), max_size=1, unique=True)):
        params[name] = draw(st.booleans())
    if draw(st.booleans()):
        params["stop"] = draw(st.lists(_value, min_size=1, max_size=3))
    return params


_modelfiles = st.builds(
    Modelfile,
    froms=st.lists(_value, min_size=1, max_size=3),
    adapters=st.lists(_value, max_size=2),
    template=st.one_of(st.none(), _value),
    system=st.one_of(st.none(), _value),
    parameters=_parameters(),
    licenses=st.lists(_value, max_size=2),
    messages=st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": _value}),
        max_size=3,
    ),
)


@settings(max_examples=200, deadline=None)
@given(_modelfiles)
def test_any_representable_modelfile_round_trips_through_render(mf: Modelfile) -> None:
    assert parse(mf.render()) == mf


@settings(max_examples=200, deadline=None)
@given(_text)
def test_any_single_value_either_is_refused_by_quote_or_reads_back_exactly(value: str) -> None:
    try:
        shown = quote(value)
    except InvalidRequest:
        assume(False)
        return
    assert parse(f"FROM x\nSYSTEM {shown}\n").system == value


# --- Modelfile -> create request (the one converter the CLI, the magic and the store use) ----------


def test_create_fields_keep_projector_from_lines_and_every_instruction(tmp_path) -> None:
    (tmp_path / "proj.gguf").write_bytes(b"GGUF")
    mf = parse(
        "FROM gemma3:270m\nFROM ./proj.gguf\nADAPTER /abs/lora.gguf\nTEMPLATE {{ .Prompt }}\nSYSTEM be brief\n"
        "PARAMETER stop <end>\nPARAMETER top_k 5\nLICENSE MIT\nMESSAGE user hi\n"
    )
    assert create_fields(mf, tmp_path) == {
        "from_": "gemma3:270m",
        "files": {"proj.gguf": str(tmp_path / "proj.gguf")},
        "adapters": {"lora.gguf": "/abs/lora.gguf"},
        "template": "{{ .Prompt }}",
        "system": "be brief",
        "parameters": {"stop": ["<end>"], "top_k": 5},
        "license": ["MIT"],
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_create_fields_without_a_base_dir_pass_values_on_as_written() -> None:
    fields = create_fields(parse("FROM ./model.gguf\nFROM ./a/p.gguf\nFROM ./b/p.gguf\n"))
    assert fields == {"from_": "./model.gguf", "files": {"p.gguf": "./a/p.gguf", "1-p.gguf": "./b/p.gguf"}}
