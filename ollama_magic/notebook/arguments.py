"""Parsing magic arguments: a bad flag is one ``UsageError`` line, never a kernel that exits."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from typing import NoReturn

from IPython.core.error import UsageError

from ..errors import HelpShown


class UsageParser(argparse.ArgumentParser):
    """argparse whose errors raise UsageError (IPython prints it without a traceback) and whose
    --help returns to the caller (HelpShown) instead of calling sys.exit in the kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr)
        raise UsageError(self.format_help()) if status else HelpShown()


def split_line(line: str) -> list[str]:
    """Shell-like words of a magic's line; unbalanced quotes are a UsageError."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse the arguments: {exc}") from None


def leading_flags(line: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    """Split the flags at the start of ``line`` from the text after them, which keeps its own quotes
    and apostrophes (a Python expression for %embed, a message for %chat). The flags are read from
    ``parser``, so a flag added there is a flag here too, never the start of the message."""
    pattern = _flag_pattern(parser)
    position = 0
    while match := pattern.match(line, position):
        position = match.end()
    return line[:position], line[position:].strip()


def _flag_pattern(parser: argparse.ArgumentParser) -> re.Pattern[str]:
    switches = [o for a in parser._actions if a.nargs == 0 for o in a.option_strings]
    valued = [o for a in parser._actions if a.nargs not in (0, "?") for o in a.option_strings]

    def alternatives(options: list[str]) -> str:
        return "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True)) or "(?!)"

    value = r"""(?:(?:"[^"]*"|'[^']*'|[^\s"']+)+|\S+)"""  # a shell word: quoted and bare pieces, e.g. "a b",c
    # an option whose value is optional (``--think [LEVEL]``) takes the next word only if it is one of
    # its choices; otherwise that word starts the message
    optional = [rf"{alternatives(a.option_strings)}(?:={value}|\s+(?:{'|'.join(re.escape(str(c).lower()) for c in a.choices)}))?"
                if a.choices else rf"{alternatives(a.option_strings)}(?:={value})?"
                for a in parser._actions if a.nargs == "?" and a.option_strings]
    switch = "|".join([alternatives(switches), *optional])
    return re.compile(rf"\s*((?:{switch})|(?:{alternatives(valued)})(?:=|\s+){value})(?=\s|$)")
