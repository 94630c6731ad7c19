"""The wait loop every column job shares (``--over`` answers, ``--choices`` distributions): hand each
row's finished future to the caller as it ends and move the progress bar, which counts the rows from the
column cache and the rows asked. Ctrl-C propagates to the caller, whose rule for a stopped column differs."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Iterable


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


__all__ = ["drain"]
