"""Long transfers as Ollama reports them: work in a thread, a progress message every 60 ms.

The work runs in a thread of its own so the caller's generator can yield progress while bytes move;
closing the generator (a client that went away, Ctrl-C in a cell) sets ``cancel``, the work stops
after its current chunk, and what it saved so far stays resumable.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator

from ..types import ProgressResponse

TICK = 0.06  # Ollama's ticker in blobDownload.Wait / blobUpload.Wait


def run_with_progress(work: Callable[[threading.Event], None], progress: Callable[[], ProgressResponse],
                      cancel: threading.Event, name: str) -> Iterator[ProgressResponse]:
    """Yield ``progress()`` every tick while ``work(cancel)`` runs, and once when it is done; its
    exception is raised here, in the consumer's thread."""
    done = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            work(cancel)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=target, name=f"ollama-magic: {name}", daemon=True)
    thread.start()
    try:
        while not done.wait(TICK):
            yield progress()
    finally:
        if not done.is_set():
            cancel.set()
            thread.join()
    if failure:
        raise failure[0]
    yield progress()
