"""Parsing magic arguments: a bad flag is one ``UsageError`` line, never a kernel that exits."""

from __future__ import annotations

import argparse
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
