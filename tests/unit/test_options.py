"""The option table: typing PARAMETER text, checking JSON options, and printing values as Ollama does."""

from __future__ import annotations

import json
import logging

import pytest

from ollama_magic.errors import InvalidRequest
from ollama_magic.options import (
    DEPRECATED_OPTIONS,
    OPTION_TYPES,
    check_option_value,
    check_options,
    format_parameters,
    format_value,
    parse_parameter_text,
)

# --- parse_parameter_text -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_bool_text_true_forms_match_go_parsebool(text: str) -> None:
    assert parse_parameter_text("use_mmap", text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_bool_text_false_forms_match_go_parsebool(text: str) -> None:
    assert parse_parameter_text("use_mmap", text) is False


@pytest.mark.parametrize("text", ["yes", "no", "TrUe", "2", "on", ""])
def test_bool_text_other_forms_are_refused_naming_the_parameter(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_parameter_text("use_mmap", text)
    assert "use_mmap" in str(info.value)
    assert "boolean" in str(info.value)


def test_int_text_becomes_int() -> None:
    assert parse_parameter_text("num_ctx", "4096") == 4096
    assert type(parse_parameter_text("num_ctx", "4096")) is int
    assert parse_parameter_text("seed", "-1") == -1


def test_float_text_becomes_float() -> None:
    assert parse_parameter_text("temperature", "0.7") == 0.7
    value = parse_parameter_text("top_p", "1")
    assert value == 1.0 and type(value) is float


def test_stop_text_stays_a_single_string() -> None:
    assert parse_parameter_text("stop", "<|end|>") == "<|end|>"


@pytest.mark.parametrize(
    "name, text, kind",
    [
        ("num_ctx", "abc", "an integer"),
        ("seed", "1.5", "an integer"),
        ("temperature", "hot", "a number"),
        ("temperature", "nan", "a number"),
        ("temperature", "inf", "a number"),
        ("top_p", "-inf", "a number"),
    ],
)
def test_wrong_typed_text_is_refused_naming_parameter_type_and_value(name: str, text: str, kind: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_parameter_text(name, text)
    message = str(info.value)
    assert name in message
    assert kind in message
    assert repr(text) in message


def test_unknown_parameter_text_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_parameter_text("bogus", "1")
    assert str(info.value) == "unknown parameter 'bogus'"
    assert info.value.status_code == 400


# --- check_option_value -------------------------------------------------------------------------


def test_string_for_temperature_is_refused_naming_the_option() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_option_value("temperature", "hot")
    assert "temperature" in str(info.value)
    assert '"hot"' in str(info.value)


def test_bool_for_int_option_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_option_value("num_ctx", True)
    assert "num_ctx" in str(info.value)
    assert "integer" in str(info.value)


def test_bool_for_float_option_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        check_option_value("temperature", False)


def test_int_for_bool_option_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_option_value("use_mmap", 1)
    assert "use_mmap" in str(info.value)


def test_int_is_accepted_for_float_option() -> None:
    assert check_option_value("temperature", 1) == 1
    assert check_option_value("top_p", 0) == 0


def test_float_is_accepted_for_float_option() -> None:
    assert check_option_value("temperature", 0.25) == 0.25


def test_integral_float_is_accepted_for_int_option_as_int() -> None:
    value = check_option_value("num_ctx", 4096.0)
    assert value == 4096 and type(value) is int


def test_fractional_float_is_refused_for_int_option() -> None:
    with pytest.raises(InvalidRequest):
        check_option_value("num_ctx", 4096.5)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_is_refused_for_float_option(value: float) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_option_value("temperature", value)
    assert "temperature" in str(info.value)


def test_huge_int_for_float_option_is_refused_as_invalid_request() -> None:
    value = json.loads('{"temperature": 1' + "0" * 400 + "}")["temperature"]
    with pytest.raises(InvalidRequest):
        check_option_value("temperature", value)


def test_stop_as_string_becomes_a_one_item_list() -> None:
    assert check_option_value("stop", "<end>") == ["<end>"]


def test_stop_as_list_of_strings_is_kept() -> None:
    stops = ["a", "b"]
    assert check_option_value("stop", stops) == ["a", "b"]


@pytest.mark.parametrize("value", [["a", 1], 5, {"a": 1}])
def test_stop_other_than_strings_is_refused(value) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_option_value("stop", value)
    assert "stop" in str(info.value)


# --- check_options ------------------------------------------------------------------------------


def test_check_options_none_gives_empty_dict() -> None:
    assert check_options(None, strict=True) == {}
    assert check_options(None, strict=False) == {}


def test_check_options_refuses_non_mapping() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_options(["temperature"], strict=False)  # type: ignore[arg-type]
    assert "JSON object" in str(info.value)


def test_strict_check_refuses_unknown_option() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_options({"temperature": 0.5, "bogus": 1}, strict=True)
    assert str(info.value).startswith("unknown parameter")
    assert "bogus" in str(info.value)


def test_non_strict_check_drops_unknown_option_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        checked = check_options({"temperature": 0.5, "bogus": 1}, strict=False)
    assert checked == {"temperature": 0.5}
    assert any("bogus" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("strict", [True, False])
def test_deprecated_options_are_dropped_with_warning(strict: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        checked = check_options({"mirostat": 1, "low_vram": True, "num_ctx": 2048}, strict=strict)
    assert checked == {"num_ctx": 2048}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "mirostat" in messages and "low_vram" in messages
    assert "deprecated" in messages


def test_none_valued_options_are_dropped() -> None:
    assert check_options({"temperature": None, "seed": 3}, strict=True) == {"seed": 3}


def test_check_options_normalises_values() -> None:
    checked = check_options({"stop": "x", "num_ctx": 1024.0, "temperature": 1}, strict=True)
    assert checked == {"stop": ["x"], "num_ctx": 1024, "temperature": 1}
    assert type(checked["num_ctx"]) is int


def test_check_options_wrong_type_names_the_option() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_options({"temperature": "hot"}, strict=False)
    assert "temperature" in str(info.value)


def test_deprecated_and_known_names_do_not_overlap() -> None:
    assert not DEPRECATED_OPTIONS & set(OPTION_TYPES)


# --- format_value / format_parameters -----------------------------------------------------------


@pytest.mark.parametrize(
    "value, shown",
    [
        (1.0, "1"),
        (0.95, "0.95"),
        (-2.0, "-2"),
        (0.1, "0.1"),
        (True, "true"),
        (False, "false"),
        (4096, "4096"),
        (-1, "-1"),
    ],
)
def test_format_value_prints_like_go(value, shown: str) -> None:
    assert format_value(value) == shown


@pytest.mark.parametrize("value, shown", [(1e6, "1e+06"), (1234567.0, "1.234567e+06")])
def test_format_value_uses_go_exponent_form_for_large_floats(value: float, shown: str) -> None:
    assert format_value(value) == shown


def test_format_parameters_pads_keys_and_go_quotes_each_stop_line() -> None:
    text = format_parameters({"stop": ["<a>", "<b>"], "temperature": 1})
    assert text.splitlines() == [
        "stop" + " " * 26 + ' "<a>"',
        "stop" + " " * 26 + ' "<b>"',
        "temperature" + " " * 19 + " 1",
    ]


def test_format_parameters_sorts_keys_and_formats_values() -> None:
    text = format_parameters({"use_mmap": False, "num_ctx": 4096, "temperature": 0.7})
    lines = text.splitlines()
    assert [line.split()[0] for line in lines] == ["num_ctx", "temperature", "use_mmap"]
    assert [line[31:] for line in lines] == ["4096", "0.7", "false"]
    assert all(line[30] == " " for line in lines)


def test_format_parameters_escapes_quotes_and_newlines_in_strings() -> None:
    text = format_parameters({"stop": ['say "x"\n']})
    assert text == "stop" + " " * 26 + ' "say \\"x\\"\\n"'


def test_format_parameters_go_quotes_control_characters() -> None:
    assert format_parameters({"stop": ["\x1b"]}) == "stop" + " " * 26 + ' "\\x1b"'


def test_format_parameters_of_nothing_is_empty() -> None:
    assert format_parameters({}) == ""


@pytest.mark.parametrize("name, text", [
    ("num_ctx", "1_000"), ("num_ctx", " 5"), ("num_ctx", "٣"), ("num_ctx", "9" * 30),
    ("temperature", "1_0.5"), ("temperature", "0.5 "), ("temperature", "١.٥"), ("temperature", "inf"),
])
def test_parameter_text_is_read_as_go_reads_it(name: str, text: str) -> None:
    with pytest.raises(InvalidRequest, match=f"parameter '{name}'"):
        parse_parameter_text(name, text)


@pytest.mark.parametrize("name, text, value", [
    ("num_ctx", "+8", 8), ("num_ctx", "-1", -1), ("temperature", ".5", 0.5), ("temperature", "1e-3", 0.001),
    ("temperature", "2.", 2.0),
])
def test_parameter_text_accepts_go_number_forms(name: str, text: str, value: object) -> None:
    assert parse_parameter_text(name, text) == value
