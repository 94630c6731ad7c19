"""The cells this kernel ran, as ``--context N`` sends them: each cell's code, text result and error.

IPython's ``In`` and ``Out`` only hold cells run with ``store_history=True``. nbval, and any
frontend that runs cells without history, leaves them empty, so a context read from them finds no
cell. IPython's ``post_run_cell`` event fires for every cell that is not silent, with or without
history, and carries the cell's code and result, so the extension keeps its own record from it.
Silent executions (a frontend's variable inspector, completions) fire no event and are not cells.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .session import per_shell
from .tracebacks import format_error

if TYPE_CHECKING:
    from IPython.core.interactiveshell import ExecutionResult, InteractiveShell

#: Cells kept (the oldest are forgotten): far more than a model's context takes.
MAX_CELLS = 200
#: Characters kept of a result or an error: more than context.py sends, so fitting can still cut;
#: a cell's result can be megabytes of repr.
KEEP_CHARS = 4000


@dataclass(frozen=True)
class RanCell:
    """One executed cell; ``number`` is its execution count, None when it ran without history."""

    number: int | None
    code: str
    output: str | None = None
    error: str | None = None


def _text(value: Any) -> str:
    """The text/plain form of a cell's result (IPython's pretty printer, as ``Out`` shows it)."""
    from IPython.lib.pretty import pretty

    try:
        return pretty(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ is the user's; IPython already showed it
        return f"<{type(value).__name__}: repr failed with {type(exc).__name__}>"


def _error_text(error: BaseException) -> str:
    if isinstance(error, UsageError):
        return f"UsageError: {error}"  # a magic's one-line mistake: its traceback is IPython's, not the user's
    return format_error(error)


class CellLog:
    """Listens to the shell's ``post_run_cell`` and keeps the last :data:`MAX_CELLS` cells."""

    def __init__(self, shell: InteractiveShell, limit: int = MAX_CELLS) -> None:
        self.shell = shell
        self.cells: deque[RanCell] = deque(maxlen=limit)

    def install(self) -> None:
        if self.record not in self.shell.events.callbacks["post_run_cell"]:
            self.shell.events.register("post_run_cell", self.record)

    def uninstall(self) -> None:
        if self.record in self.shell.events.callbacks["post_run_cell"]:
            self.shell.events.unregister("post_run_cell", self.record)

    def record(self, result: ExecutionResult) -> None:
        info = getattr(result, "info", None)
        code = getattr(info, "raw_cell", None) or ""
        if not code.strip():
            return
        error = result.error_before_exec or result.error_in_exec
        if isinstance(error, KeyboardInterrupt):
            error_text = "KeyboardInterrupt (stopped by the user)"
        else:
            error_text = _error_text(error)[-KEEP_CHARS:] if error is not None else None
        output = _text(result.result)[:KEEP_CHARS] if result.result is not None else None
        # IPython gives every cell an execution count, but without history the counter does not move:
        # all such cells carry the same number, so they get none
        number = result.execution_count if getattr(info, "store_history", False) else None
        self.cells.append(RanCell(number, code, output, error_text))

    def last(self, count: int) -> list[RanCell]:
        return list(self.cells)[-count:] if count > 0 else []


def cell_log(shell: InteractiveShell) -> CellLog:
    """The shell's log (one per shell, in the session registry; it outlives a ``%reload_ext``, as ``In`` does)."""
    return per_shell(shell, "cell_log", lambda: CellLog(shell))


__all__ = ["MAX_CELLS", "CellLog", "RanCell", "cell_log"]
