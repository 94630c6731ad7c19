"""What every column job shares (``--over`` answers, ``--choices`` distributions): a row's messages,
the error a failed row holds, and the wait loop that hands each row's finished future to the caller as it ends and move the progress bar, which counts the rows from the
column cache and the rows asked. Ctrl-C propagates to the caller, whose rule for a stopped column differs."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Iterable

from ..errors import RowError


def row_messages(system: str | None, text: str) -> list[dict[str, Any]]:
    """A row's chat: the system message (if any), then the row's rendered prompt as the user's."""
    return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": text}]


def row_error(exc: Exception) -> RowError:
    """What a row holds when asking it raised ``exc``: one row's failure is that row's value."""
    return exc if isinstance(exc, RowError) else RowError(f"{type(exc).__name__}: {exc}")


def drain(futures: Iterable[Future[Any]], finish: Callable[[Future[Any]], None], bar: Any, cached: int,
          asked: Callable[[], int]) -> None:
    """Wait for ``futures``, calling ``finish`` on each as it ends; ``bar`` (tqdm) shows ``cached`` and
    ``asked()`` beside its count. Woken every half second so Ctrl-C is seen promptly."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        for future in done:
            finish(future)
        if done:
            bar.set_postfix(cached=cached, asked=asked(), refresh=False)
            bar.update(len(done))


__all__ = ["drain", "row_error", "row_messages"]
