"""The flags of ``%%chat``/``%embed`` are split off the line by the parser's own options."""

from __future__ import annotations

import pytest

from ollama_magic.notebook.arguments import UsageParser, leading_flags
from ollama_magic.notebook.magics import chat_parser, embed_parser


def test_a_flag_added_to_a_parser_is_a_flag_not_message_text() -> None:
    parser = chat_parser()
    parser.add_argument("--top-k", type=int)  # a new flag, written in the parser only
    parser.add_argument("--raw", action="store_true")
    assert leading_flags("--top-k 5 --raw -t main What's 2+2?", parser) == ("--top-k 5 --raw -t main", "What's 2+2?")


@pytest.mark.parametrize("make", [chat_parser, embed_parser])
def test_every_option_of_the_real_parsers_is_recognised(make) -> None:  # noqa: ANN001
    parser = make()
    for action in parser._actions:
        for option in action.option_strings:
            if action.nargs == "?" and action.choices:  # an optional value is taken only if it is a choice
                flag = f"{option} {str(list(action.choices)[-1]).lower()}"
            else:
                flag = option if action.nargs == 0 else f"{option} 'a value'"
            assert leading_flags(f"{flag} text (with 'quotes')", parser) == (flag, "text (with 'quotes')")


def test_message_text_that_looks_like_a_flag_later_is_kept() -> None:
    parser = UsageParser(prog="x", add_help=False)
    parser.add_argument("-m")
    assert leading_flags('-m="a b" tell me about -m flags', parser) == ('-m="a b"', "tell me about -m flags")
    assert leading_flags("--model x", parser) == ("", "--model x")  # not an option of this parser


def test_an_optional_value_is_taken_only_when_it_is_one_of_its_choices() -> None:
    parser = chat_parser()
    assert leading_flags("--think why is the sky blue?", parser) == ("--think", "why is the sky blue?")
    assert leading_flags("--think high why?", parser) == ("--think high", "why?")
    assert leading_flags("--think=nonsense why?", parser) == ("--think=nonsense", "why?")  # argparse says why
    assert parser.parse_args(["--think"]).think is True and parser.parse_args(["--think", "false"]).think is False
