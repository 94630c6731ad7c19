"""The notebook's errors, kept for the model: ``Err[n]`` and ``%ollama fix [N]``.

Like jupyter-ai, every cell that raises leaves its traceback, without colour codes, in ``Err`` (a
dict keyed by the cell's number, next to IPython's own ``In`` and ``Out``), so ``{Err[3]}`` can be
written in a prompt. Unlike jupyter-ai we do not replace the shell's custom exception handler (that
would hide anyone else's): a ``post_run_cell`` event sees the result after IPython has shown it.
Frames inside IPython itself are left out, so the text starts at the user's code.

``%ollama fix`` sends the failing cell's code and traceback in a fresh thread ``fix`` (a follow-up
is ``%%chat -t fix``) and puts the corrected cell the model wrote into a new cell below.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import InvalidRequest
from .output_forms import insert_code_cell
from .session import per_shell
from .tracebacks import format_error
from .verbs import parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult, InteractiveShell

    from .session import NotebookSession

FIX_THREAD = "fix"
_FENCED = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class CellError:
    cell: int
    code: str
    traceback: str


class Errors(dict):
    """``Err``: cell number -> traceback text; a cell without an error is one clear message."""

    def __missing__(self, cell: Any) -> str:
        cells = ", ".join(str(n) for n in sorted(self)) or "none yet"
        raise InvalidRequest(f"Err[{cell}]: cell {cell} raised no error (cells with errors: {cells})")


class ErrorLog:
    """Watches the shell's cells and keeps each error as ``Err[n]`` in the user namespace."""

    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell
        self.errors: dict[int, CellError] = {}
        self.last: int | None = None
        #: The number of the cell running now (None between cells), for --context's "cells before this one".
        self.running: int | None = None
        self.err: dict[int, str] = shell.user_ns.setdefault("Err", Errors())

    def install(self) -> None:
        if self.record not in self.shell.events.callbacks["post_run_cell"]:
            self.shell.events.register("pre_run_cell", self.starting)
            self.shell.events.register("post_run_cell", self.record)

    def uninstall(self) -> None:
        if self.record in self.shell.events.callbacks["post_run_cell"]:
            self.shell.events.unregister("pre_run_cell", self.starting)
            self.shell.events.unregister("post_run_cell", self.record)

    def starting(self, info: ExecutionInfo) -> None:
        # IPython 9 counts the cell before pre_run_cell fires: the running cell is the one before.
        self.running = self.shell.execution_count - 1 if info.store_history and not info.silent else None

    def record(self, result: ExecutionResult) -> None:
        self.running = None
        error = result.error_before_exec or result.error_in_exec
        cell = result.execution_count or self.shell.execution_count
        if result.info is not None and result.info.store_history:
            # A cell run without history (nbval) carries the number the next numbered cell will get;
            # that cell's own outcome replaces whatever such a cell left under its number.
            self._forget(cell)
        if error is None or isinstance(error, (UsageError, KeyboardInterrupt)):
            return  # a magic's usage line is already one clear sentence; an interrupt is not a bug
        text = format_error(error)
        self.errors[cell] = CellError(cell, result.info.raw_cell if result.info else "", text)
        self.err = self.shell.user_ns.setdefault("Err", self.err)
        self.err[cell] = text
        self.last = cell

    def _forget(self, cell: int) -> None:
        if self.errors.pop(cell, None) is not None:
            self.err.pop(cell, None)
            if self.last == cell:
                self.last = max(self.errors) if self.errors else None

    def get(self, cell: int | None) -> CellError:
        if cell is None:
            if self.last is None:
                raise InvalidRequest("no cell has raised an error yet in this kernel")
            cell = self.last
        if cell not in self.errors:
            cells = ", ".join(str(n) for n in sorted(self.errors)) or "none"
            raise InvalidRequest(f"cell {cell} raised no error (cells with errors: {cells})")
        return self.errors[cell]


def fix_prompt(error: CellError) -> str:
    return (
        f"This Jupyter notebook cell (cell {error.cell}) failed.\n\n"
        f"The cell:\n```python\n{error.code.strip()}\n```\n\n"
        f"The error:\n```\n{error.traceback}\n```\n\n"
        "Explain the cause in one or two sentences, then give the whole corrected cell in one ```python code block."
    )


def corrected_code(answer: str) -> str | None:
    """The last fenced code block of the answer (a python one preferred), or None."""
    blocks = _FENCED.findall(answer)
    python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3", "ipython")]
    chosen = (python or [code for _, code in blocks])
    return chosen[-1].strip("\n") if chosen and chosen[-1].strip() else None


def error_log(shell: InteractiveShell) -> ErrorLog:
    """The shell's error log (one per shell, in the session registry; it outlives a ``%reload_ext``)."""
    return per_shell(shell, "error_log", lambda: ErrorLog(shell))


@verb("fix", "explain the last error (or cell N's) and insert a corrected cell below")
def fix(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Any:
    from .chat import ChatTurn, chat_turn

    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("cell", nargs="?", type=int, help="the failing cell's number (default: the last error)")
        p.add_argument("-m", "--model")
        p.add_argument("--seed", type=int)
        p.add_argument("--temperature", type=float)
        p.add_argument("--num-predict", type=int)

    args = parse("fix", argv, setup)
    error = error_log(shell).get(args.cell)
    options = {k: v for k, v in (("seed", args.seed), ("temperature", args.temperature),
                                 ("num_predict", args.num_predict)) if v is not None}
    turn = ChatTurn(text=fix_prompt(error), model=args.model or session.chat_model, thread=FIX_THREAD, new=True,
                    options=options)
    notice = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    reply = chat_turn(session, turn, notice=notice)
    code = corrected_code(str(reply))
    if code is None:
        notice("the answer has no code block: no cell inserted (follow up with %%chat -t fix)")
    else:
        insert_code_cell(shell, code, lambda _: notice(f"the corrected cell {error.cell} is in a new cell below"))
    return reply


__all__ = ["CellError", "ErrorLog", "corrected_code", "error_log", "fix_prompt", "format_error"]
