"""What ``--context N`` and ``--vars a,b`` attach to a message, and the "sent with" line that shows it.

The context is the code of the last N cells with their text results (and errors), and a compact
summary of each named variable (a DataFrame's shape, dtypes and head; other values truncated). It
is fitted to the model's context with the model's own tokenizer: the oldest cells go first, then
variable summaries are cut short. The user sees exactly what left the notebook in a collapsed line.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import InvalidRequest
from .context_fit import guess_tokens, model_context_length

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..backends import Backend

#: The share of the model's context all attached material together may fill: ``--docs`` sources and
#: ``--context``/``--vars`` share it (the rest is for the thread, the message and the answer).
CONTEXT_SHARE = 0.5
#: With ``--context``/``--vars`` given too, the part of that one budget ``--docs`` sources may take; the
#: notebook context gets what the sources left (at least the other half).
DOCS_PART = 0.5
TEXT_LIMIT = 400
HEAD_ROWS = 5

TokenCounter = Callable[[str], int]


@dataclass
class NotebookContext:
    """The pieces attached to one message, kept apart so the "sent with" line can name them."""

    #: (cell number, its text block); the number is None for a cell run without history (nbval)
    cells: list[tuple[int | None, str]] = field(default_factory=list)
    variables: list[tuple[str, str]] = field(default_factory=list)  # (name, summary)
    tokens: int = 0

    def __bool__(self) -> bool:
        return bool(self.cells or self.variables)

    def text(self) -> str:
        parts = ["Context from the notebook:"]
        parts += [block for _, block in self.cells]
        if self.variables:
            parts.append("Variables:\n" + "\n".join(summary for _, summary in self.variables))
        return "\n\n".join(parts)

    def wrap(self, message: str) -> str:
        """The message as sent: the context first, then what the user wrote."""
        return f"{self.text()}\n\nMessage:\n{message}" if self else message

    def label(self) -> str:
        what = []
        if self.cells:
            numbers = [n for n, _ in self.cells]
            if None in numbers:  # run without history: the cells have no numbers to name
                what.append("the last cell" if len(numbers) == 1 else f"the last {len(numbers)} cells")
            else:
                what.append(f"cell {numbers[0]}" if len(numbers) == 1 else f"cells {numbers[0]}-{numbers[-1]}")
        if self.variables:
            what.append("vars " + ", ".join(name for name, _ in self.variables))
        return f"sent with: {'; '.join(what)} ({self.tokens} tokens)"


class SentWith:
    """The collapsed "sent with" line shown above a reply; expands to the exact text sent."""

    def __init__(self, context: NotebookContext) -> None:
        self.context = context

    def _repr_html_(self) -> str:
        return (f"<details><summary>{html.escape(self.context.label())}</summary>"
                f"<pre>{html.escape(self.context.text())}</pre></details>")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.context.label())


def truncate(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(name: str, value: Any, limit: int = TEXT_LIMIT) -> str:
    """A few lines that tell a model what ``value`` is without sending all of it."""
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        dtypes = ", ".join(f"{c}: {t}" for c, t in value.dtypes.astype(str).items())
        return (f"{name}: DataFrame, {value.shape[0]} rows x {value.shape[1]} columns\n"
                f"  dtypes: {truncate(dtypes, limit)}\n  head:\n{value.head(HEAD_ROWS).to_string(max_colwidth=40)}")
    if isinstance(value, pd.Series):
        return (f"{name}: Series {value.name!r}, {len(value)} rows, dtype {value.dtype}\n"
                f"  head:\n{value.head(HEAD_ROWS).to_string(max_rows=HEAD_ROWS)}")
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{name}: {type(value).__name__} shape {tuple(shape)} dtype {value.dtype}: {truncate(repr(value), limit)}"
    if isinstance(value, (str, bytes)):
        return f"{name}: {type(value).__name__} of length {len(value)}: {truncate(repr(value), limit)}"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"{name}: {type(value).__name__} of {len(value)} items: {truncate(repr(value), limit)}"
    return f"{name}: {type(value).__name__}: {truncate(repr(value), limit)}"


def _text_result(shell: InteractiveShell, value: Any) -> str:
    data, _ = shell.display_formatter.format(value)
    return str(data.get("text/plain", ""))


def cell_block(number: int | None, code: str, output: str | None, error: str | None) -> str:
    """One cell as the model reads it: its code, then its text result and its error, if any."""
    tag = "" if number is None else f" {number}"
    block = f"[cell{tag}]\n```python\n{code.strip()}\n```"
    if output is not None:
        block += f"\n[output{tag}]\n{truncate(output)}"
    if error is not None:
        block += f"\n[error{tag}]\n{truncate(error, 2 * TEXT_LIMIT)}"
    return block


def recent_cells(shell: InteractiveShell, count: int) -> list[tuple[int | None, str]]:
    """The last ``count`` cells before the running one: their code, text result and error.

    Read from the extension's own record of executed cells (cell_log.py), which holds cells run
    without history too (nbval, some frontends); IPython's ``In``/``Out`` only when that record is
    empty (cells run before the extension was loaded)."""
    from .cell_log import cell_log

    recorded = cell_log(shell).last(count)
    if recorded:
        return [(c.number, cell_block(c.number, c.code, c.output, c.error)) for c in recorded]
    return _cells_from_history(shell, count)


def _cells_from_history(shell: InteractiveShell, count: int) -> list[tuple[int | None, str]]:
    from .errorhelp import error_log

    ns = shell.user_ns
    inputs, outputs, errors = ns.get("In", []), ns.get("Out", {}), ns.get("Err", {})
    running = error_log(shell).running
    current = running if running is not None else shell.execution_count
    blocks: list[tuple[int | None, str]] = []
    for n in range(max(1, current - count), current):
        code = inputs[n] if n < len(inputs) else ""
        if not code.strip():
            continue
        output = _text_result(shell, outputs[n]) if n in outputs else None
        error = dict.__getitem__(errors, n) if n in errors else None
        blocks.append((n, cell_block(n, code, output, error)))
    return blocks


def build_context(shell: InteractiveShell, namespace: Mapping[str, Any], *, cells: int = 0, names: list[str] | None = None,
                  count_tokens: TokenCounter, budget: int) -> NotebookContext:
    """The context for ``--context cells --vars names``, within ``budget`` tokens."""
    if cells < 0:
        raise InvalidRequest("--context takes a number of cells (0 or more)")
    variables = []
    for name in names or []:
        if name not in namespace:
            raise InvalidRequest(f"--vars {name}: no variable named {name!r} in the notebook")
        variables.append((name, summarize(name, namespace[name])))
    context = NotebookContext(recent_cells(shell, cells) if cells else [], variables)
    context.tokens = count_tokens(context.text()) if context else 0
    while context.cells and context.tokens > budget:
        context.cells.pop(0)  # the oldest cell first
        context.tokens = count_tokens(context.text())
    limit = TEXT_LIMIT
    while context.variables and context.tokens > budget and limit > 20:
        limit //= 2
        context.variables = [(name, summarize(name, namespace[name], limit)[: limit * 4]) for name, _ in variables]
        context.tokens = count_tokens(context.text())
    return context


def context_budget(backend: Backend, model: str, options: Mapping[str, Any], *, spent: int = 0) -> int:
    """The tokens attached material may take (``--context``, ``--docs``): :data:`CONTEXT_SHARE` of the
    context a chat with ``options`` gets, less ``spent``, what other attached material already took
    (``--docs`` sources, when ``--context`` follows them: the two share one budget)."""
    return max(0, int(model_context_length(backend, model, options) * CONTEXT_SHARE) - spent)


def docs_budget(budget: int, *, with_context: bool) -> int:
    """What of ``budget`` the ``--docs`` sources may take: all of it alone, :data:`DOCS_PART` of it when
    ``--context``/``--vars`` share it (so neither can leave the other nothing)."""
    return int(budget * DOCS_PART) if with_context else budget


def token_counter(backend: Backend, model: str) -> TokenCounter:
    """The model's tokenizer through the Backend (``tokenize``: the in-kernel engine, an ollama-magic
    server), else the one pessimistic guess (a server without /api/tokenize)."""
    tokenize = getattr(backend, "tokenize", None)
    if callable(tokenize):
        try:
            _count_with(tokenize, model, "probe")
            return lambda text: _count_with(tokenize, model, text)
        except Exception:  # noqa: BLE001 - a server without the route (Ollama), another signature: guess
            pass
    return guess_tokens


def _count_with(tokenize: Callable[..., Any], model: str, text: str) -> int:
    result = tokenize(model, text)
    tokens = getattr(result, "tokens", None)
    if tokens is None and isinstance(result, Mapping):
        tokens = result.get("tokens")
    return len(tokens if tokens is not None else result)


__all__ = ["CONTEXT_SHARE", "DOCS_PART", "NotebookContext", "SentWith", "build_context", "cell_block", "context_budget",
           "docs_budget", "model_context_length",
           "recent_cells", "summarize", "token_counter"]
