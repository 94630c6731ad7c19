"""``store/sqlite_file.SQLiteFile``: several processes opening one new file at once (two kernels starting a
cached column together) all get it; before, switching the new file to WAL answered "database is locked"
to some of them at once, and their column went on uncached."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import pytest

from ollama_magic.store.sqlite_file import SQLiteFile

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY);"


def _open_and_write(path: str, barrier, results) -> None:  # noqa: ANN001 - multiprocessing objects
    barrier.wait()
    try:
        file = SQLiteFile(Path(path), SCHEMA)
        with file.write() as db:
            db.execute("INSERT INTO t VALUES (?)", (str(multiprocessing.current_process().pid),))
        file.close()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - the test reports what failed
        results.put(repr(exc))


@pytest.mark.skipif(sys.platform != "linux", reason="forks three processes per round (cheap only with fork)")
def test_processes_opening_one_new_file_at_once_all_get_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(40):
        path = str(tmp_path / f"{round_}.sqlite")
        barrier, results = context.Barrier(3), context.Queue()
        workers = [context.Process(target=_open_and_write, args=(path, barrier, results)) for _ in range(3)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join()
        failures += [o for o in outcomes if o != "ok"]
    assert failures == []
