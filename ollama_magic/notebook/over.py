"""One prompt over every row of a column: ``%chat --over df.review "Summarize: {text}"``.

Each distinct row is one request on the session's Backend, submitted from a small thread pool so
the engine sees them together: running them side by side is the engine's job (its parallel
sequences), never ours, so no model is loaded twice. Results come back aligned to the input's
index: a Series of answers, or with ``fmt="json"`` a DataFrame with one column per field.

What a column of prompts needs that a loop does not give: a failing row carries its error instead
of stopping the rest; Ctrl-C stops every row's generation at once and keeps every row that finished
(the rest hold RowInterrupted); a value repeated in the column is asked once; a seed makes the whole
column reproducible (at a price: the engine runs a seeded request alone, so a seeded column is not
batched); and none of these turns enters the notebook's conversation threads.

Every finished answer is kept in the column cache (``store/column_cache.py``) as it arrives, so a
re-run cell answers from it without loading the model and a column stopped by Ctrl-C, a crash or a
restart asks only the rows it had not finished. ``cache=False`` neither reads nor writes it;
``refresh=True`` asks every row again and overwrites. Errors and interrupted rows are never kept.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import pandas as pd

from ..errors import InvalidRequest, RowError, RowInterrupted  # they live in errors; importable from here as before
from ..store.column_cache import chat_key
from .display import strip_fence
from .memo import open_memo
from .rows import drain, row_error, row_messages

if TYPE_CHECKING:
    from ..backends import Backend

#: Where the row's text goes in the prompt; a prompt without it gets the text after a blank line.
ROW_FIELD = "{text}"
#: Requests in flight at once: the engine's parallel sequences per model (see the engine's scheduler).
DEFAULT_WORKERS = 4


def row_prompt(prompt: str, text: str) -> str:
    return prompt.replace(ROW_FIELD, text) if ROW_FIELD in prompt else f"{prompt}\n\n{text}"


def _as_series(values: Any) -> pd.Series:
    if isinstance(values, pd.Series):
        return values
    if isinstance(values, pd.DataFrame):
        if values.shape[1] != 1:
            raise InvalidRequest(f"--over needs one column, got a DataFrame with {values.shape[1]}: pick one (df.col)")
        return values.iloc[:, 0]
    if isinstance(values, str):
        return pd.Series([values])
    if isinstance(values, Iterable):
        return pd.Series(list(values))
    raise InvalidRequest(f"--over needs a column (a Series, list or other iterable), got {type(values).__name__}")


def _schema_columns(schema: Mapping[str, Any] | None) -> list[str] | None:
    if not schema:
        return None
    properties = schema.get("properties")
    return list(properties) if isinstance(properties, Mapping) else None


class _Cancelled(Exception):
    """A row's generation was stopped by Ctrl-C."""


class InFlight:
    """The rows' open streams, so Ctrl-C can stop every generation at once from the main thread.

    Each stream's ``cancel()`` (the Backend's stop: safe from any thread on the in-kernel engine)
    ends a running sequence at the engine's next step and drops a queued one before it is
    evaluated, so Ctrl-C does not wait for each row's next token, or, for rows queued behind a
    seeded one, for their whole prompt to be read first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self.stopped = False

    def add(self, stream: Any) -> bool:
        """Register a row's stream; False (and nothing registered) once the column was stopped."""
        with self._lock:
            if self.stopped:
                return False
            self._streams.append(stream)
            return True

    def discard(self, stream: Any) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)

    def cancel_all(self) -> None:
        with self._lock:
            self.stopped = True
            streams = list(self._streams)
        # newest first: the rows submitted last are the ones waiting for a slot; cancelled before the
        # running ones end, none of them is admitted into a freed slot
        for stream in reversed(streams):
            try:
                stream.cancel()
            except Exception:  # noqa: BLE001 - a remote stream that cannot stop from here stops at its next chunk
                pass


def _ask(backend: Backend, model: str, messages: list[dict[str, Any]], options: Mapping[str, Any] | None,
         format: Any, flight: InFlight) -> str:
    if flight.stopped:
        raise _Cancelled
    stream = backend.chat(model, messages, stream=True, options=dict(options) if options else None, format=format)
    parts: list[str] = []
    try:
        if not flight.add(stream):
            raise _Cancelled
        for chunk in stream:
            parts.append(chunk.message.content or "")
            if flight.stopped:
                raise _Cancelled
        if flight.stopped:  # the stream ended because it was cancelled: a partial answer is no answer
            raise _Cancelled
    except Exception:
        if flight.stopped:  # e.g. a remote stream closed from the main thread under our feet
            raise _Cancelled from None
        raise
    finally:
        flight.discard(stream)
        stream.close()  # hands the model back (and stops decoding, had we left early)
    return "".join(parts)


def chat_over(
    values: Any,
    prompt: str,
    *,
    model: str | None = None,
    backend: Backend | None = None,
    system: str | None = None,
    options: Mapping[str, Any] | None = None,
    fmt: str = "text",
    choices: str | Iterable[str] | None = None,
    schema: Mapping[str, Any] | None = None,
    workers: int = DEFAULT_WORKERS,
    progress: bool = True,
    cache: bool = True,
    refresh: bool = False,
) -> pd.Series | pd.DataFrame:
    """Ask ``prompt`` (``{text}`` marks the row) for every row of ``values`` concurrently (with ``choices``, labels
    or ``"a,b,c"``: each label's probability instead of an answer, see ``choices.py``).

    Returns a Series aligned to ``values``' index (answers as str; a failed row holds its
    :class:`RowError`; after Ctrl-C the rows that had not finished hold :class:`RowInterrupted`;
    missing inputs give NA), or for ``fmt="json"`` a DataFrame
    with one column per field (the ``schema``'s properties, in order, constrained by grammar; plus an
    ``error`` column when a row failed or was interrupted). ``backend``/``model`` default to the notebook session's.
    Rows already in the column cache are answered from it (``cache``/``refresh``: see the module
    docstring); ``attrs["ollama_magic"]`` counts them as ``cached`` and the rows the model answered
    as ``asked``."""
    if fmt not in ("text", "markdown", "json"):
        raise InvalidRequest(f"--over answers are text or json, not {fmt!r}")
    if workers < 1:
        raise InvalidRequest("workers must be at least 1")
    if backend is None or model is None:
        from .session import chat_backend

        backend, model = chat_backend(backend, model)
    column = _as_series(values)
    texts = [None if _missing(v) else str(v) for v in column]
    if choices is not None:
        from .choices import classify_rows

        return classify_rows(backend, model, [None if t is None else row_prompt(prompt, t) for t in texts], column.index,
                             choices, system=system, options=options, workers=workers, progress=progress,
                             cache=cache, refresh=refresh)
    distinct = list(dict.fromkeys(t for t in texts if t is not None))
    format = (dict(schema) if schema else "json") if fmt == "json" else None
    messages = {text: row_messages(system, row_prompt(prompt, text)) for text in distinct}

    from tqdm.auto import tqdm

    with open_memo(backend, model, cache=cache, refresh=refresh) as memo:
        keys = {text: chat_key(memo.identity, messages[text], options, format) for text in distinct} \
            if memo.active else {}
        answers: dict[str, str | RowError] = dict(memo.lookup(keys))
        cached = len(answers)
        to_ask = [text for text in distinct if text not in answers]
        flight = InFlight()
        interrupted = False
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ollama-magic-over") as pool, \
                tqdm(total=len(distinct), initial=cached, desc=f"{model} rows", unit="row", disable=not progress,
                     postfix={"cached": cached, "asked": 0}) as bar:
            futures: dict[Future[str], str] = {
                pool.submit(_ask, backend, model, messages[text], options, format, flight): text for text in to_ask
            }

            def finish(future: Future[str]) -> None:
                outcome = _outcome(future)
                if outcome is None:  # stopped by Ctrl-C: not an answer, not kept
                    return
                text = futures[future]
                answers[text] = outcome
                if text in keys and not isinstance(outcome, RowError):
                    memo.keep(keys[text], outcome)  # committed now: a kill -9 later loses nothing of it

            try:
                drain(futures, finish, bar, cached, lambda: len(answers) - cached)
            except KeyboardInterrupt:
                interrupted = True
                flight.cancel_all()  # every running and queued row at once
                unasked = [f for f, text in futures.items() if text not in answers]
                for future in unasked:
                    future.cancel()  # rows no worker has picked up yet
                for future in unasked:  # the running ones end within one decode step now
                    if not future.cancelled():
                        finish(future)  # kept when it finished (or failed) before the cancel reached it
    if interrupted:
        for text in distinct:
            answers.setdefault(text, RowInterrupted())
    results = [answers.get(t) if t is not None else None for t in texts]
    unfinished = sum(isinstance(a, RowInterrupted) for a in answers.values())
    failed = sum(isinstance(a, RowError) for a in answers.values()) - unfinished
    meta = {"model": model, "prompt": prompt, "asked": len(answers) - unfinished - cached, "cached": cached,
            "distinct": len(distinct), "failed": failed, "interrupted": interrupted, "unfinished": unfinished}
    if fmt == "json":
        out: pd.Series | pd.DataFrame = _frame(results, column.index, _schema_columns(schema))
    else:
        out = pd.Series(results, index=column.index, name=column.name, dtype=object)
    out.attrs["ollama_magic"] = meta
    if interrupted and progress:
        import sys

        print(f"interrupted: kept {len(distinct) - unfinished} of {len(distinct)} distinct rows; the other "
              f"{unfinished} hold RowInterrupted", file=sys.stderr)
    return out


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _outcome(future: Future[str]) -> str | RowError | None:
    """The row's answer or its error; None when Ctrl-C stopped it."""
    try:
        return future.result()
    except _Cancelled:
        return None
    except Exception as exc:  # noqa: BLE001 - one row's failure is that row's value
        return row_error(exc)


def _frame(results: list[Any], index: pd.Index, columns: list[str] | None) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    errors: list[str | None] = []
    for result in results:
        if result is None:
            rows.append({})
            errors.append(None)
            continue
        if isinstance(result, RowError):
            rows.append({})
            errors.append(str(result))
            continue
        try:
            value = json.loads(strip_fence(result))
        except json.JSONDecodeError as exc:
            rows.append({})
            errors.append(f"not JSON ({exc}): {result[:80]!r}")
            continue
        if not isinstance(value, dict):
            value = {"value": value}
        rows.append(value)
        errors.append(None)
    frame = pd.DataFrame(rows, index=index, columns=columns) if columns else pd.DataFrame(rows, index=index)
    if any(errors):
        frame["error"] = errors
    return frame


__all__ = ["DEFAULT_WORKERS", "InFlight", "RowError", "RowInterrupted", "chat_over", "row_prompt"]
