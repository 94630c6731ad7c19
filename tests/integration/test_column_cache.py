"""The column cache on real models: a re-run column is answered with no model loaded, a changed row,
prompt or model asks only what it changes, embeddings come back bit for bit, a kernel killed with
``kill -9`` mid-column resumes in a fresh kernel asking only the rows it had not kept, and two kernels
write one cache at once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest

from ollama_magic.engine import Engine
from ollama_magic.notebook.embeddings import embed_frame
from ollama_magic.notebook.over import chat_over
from ollama_magic.store import ModelStore

SMOL = "smollm2:135m"
GEMMA = "gemma3:270m"
EMBED = "all-minilm:latest"
QUICK = {"temperature": 0, "num_predict": 6}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory, clone_registered) -> Path:
    return clone_registered(tmp_path_factory.mktemp("column-cache") / "models").root


@pytest.fixture
def cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache.sqlite"
    monkeypatch.setenv("OLLAMA_MAGIC_CACHE", str(path))
    return path


@pytest.fixture
def engine(models_root: Path) -> Iterator[Engine]:
    with Engine(ModelStore(models_root)) as engine:
        yield engine


def loaded(engine: Engine) -> list[str]:
    return [m.name for m in engine.ps().models]


def test_a_rerun_column_is_answered_from_the_cache_with_no_model_loaded(models_root: Path, cache_file: Path) -> None:
    column = pd.Series([f"Item {i}" for i in range(5)] + ["Item 0"], index=list("abcdef"))
    with Engine(ModelStore(models_root)) as first_engine:
        first = chat_over(column, "Name a colour for: {text}", model=SMOL, backend=first_engine, options=QUICK,
                          progress=False)
    assert first.attrs["ollama_magic"]["asked"] == 5 and first.attrs["ollama_magic"]["cached"] == 0
    assert all(isinstance(v, str) and v for v in first)
    with Engine(ModelStore(models_root)) as engine:  # a new kernel: nothing loaded
        again = chat_over(column, "Name a colour for: {text}", model=SMOL, backend=engine, options=QUICK,
                          progress=False)
        assert loaded(engine) == []  # every row from the cache: the model was never loaded
    assert again.equals(first)
    assert again.attrs["ollama_magic"]["cached"] == 5 and again.attrs["ollama_magic"]["asked"] == 0


def test_a_rerun_choices_column_is_answered_from_the_cache_with_no_model_loaded(models_root: Path,
                                                                                 cache_file: Path) -> None:
    column = pd.Series(["I love it", "It broke at once", "It is fine"], index=[10, 20, 30])
    labels = ["positive", "negative"]
    with Engine(ModelStore(models_root)) as first_engine:
        first = chat_over(column, "Sentiment of: {text}", model=SMOL, backend=first_engine, choices=labels,
                          progress=False)
    assert first.attrs["ollama_magic"]["asked"] == 3
    with Engine(ModelStore(models_root)) as engine:
        again = chat_over(column, "Sentiment of: {text}", model=SMOL, backend=engine, choices=labels, progress=False)
        assert loaded(engine) == []
        other = chat_over(column, "Sentiment of: {text}", model=SMOL, backend=engine, choices=[*labels, "mixed"],
                          progress=False)
    assert again.attrs["ollama_magic"]["cached"] == 3 and again.attrs["ollama_magic"]["asked"] == 0
    assert list(again["label"]) == list(first["label"])
    # float32 log probabilities in the cache: the distribution agrees to float32's precision
    np.testing.assert_allclose(again[["p_positive", "p_negative", "entropy"]].to_numpy(dtype=float),
                               first[["p_positive", "p_negative", "entropy"]].to_numpy(dtype=float), atol=1e-6)
    assert other.attrs["ollama_magic"]["asked"] == 3  # other labels: another question


def test_a_changed_row_prompt_or_model_asks_only_what_it_changes(engine: Engine, cache_file: Path) -> None:
    rows = [f"City {i}" for i in range(4)]
    base = chat_over(rows, "Country of {text}?", model=SMOL, backend=engine, options=QUICK, progress=False)
    assert all(isinstance(v, str) for v in base)
    changed_row = chat_over(rows[:3] + ["Town 9"], "Country of {text}?", model=SMOL, backend=engine, options=QUICK,
                            progress=False)
    assert (changed_row.attrs["ollama_magic"]["cached"], changed_row.attrs["ollama_magic"]["asked"]) == (3, 1)
    assert list(changed_row[:3]) == list(base[:3])
    for kwargs in ({"prompt": "Capital near {text}?"}, {"model": GEMMA}, {"options": {**QUICK, "num_predict": 5}},
                   {"system": "Answer in French."}):
        call = {"prompt": "Country of {text}?", "model": SMOL, "options": QUICK, **kwargs}
        prompt = call.pop("prompt")
        result = chat_over(rows[:2], prompt, backend=engine, progress=False, **call)
        assert (result.attrs["ollama_magic"]["cached"], result.attrs["ollama_magic"]["asked"]) == (0, 2), kwargs


def test_no_cache_neither_reads_nor_writes_and_refresh_asks_again(engine: Engine, cache_file: Path) -> None:
    rows = ["alpha", "beta"]
    off = chat_over(rows, "Rhyme with {text}", model=SMOL, backend=engine, options=QUICK, progress=False, cache=False)
    assert off.attrs["ollama_magic"]["asked"] == 2
    first = chat_over(rows, "Rhyme with {text}", model=SMOL, backend=engine, options=QUICK, progress=False)
    assert first.attrs["ollama_magic"]["asked"] == 2  # --no-cache wrote nothing
    refreshed = chat_over(rows, "Rhyme with {text}", model=SMOL, backend=engine, options=QUICK, progress=False,
                          refresh=True)
    assert refreshed.attrs["ollama_magic"]["asked"] == 2 and refreshed.attrs["ollama_magic"]["cached"] == 0
    with sqlite3.connect(cache_file) as db:
        assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 2  # overwritten, not added


def test_failed_rows_are_not_cached(engine: Engine, cache_file: Path) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.fail = True

        def list(self):  # noqa: ANN202
            return engine.list()

        def chat(self, model, messages, **kwargs):  # noqa: ANN001, ANN003, ANN202
            if self.fail and "bad" in messages[-1]["content"]:
                raise ConnectionError("reset")
            return engine.chat(model, messages, **kwargs)

    flaky = Flaky()
    first = chat_over(["good", "bad"], "Say {text}", model=SMOL, backend=flaky, options=QUICK, progress=False)
    assert first.attrs["ollama_magic"]["failed"] == 1
    flaky.fail = False
    again = chat_over(["good", "bad"], "Say {text}", model=SMOL, backend=flaky, options=QUICK, progress=False)
    assert (again.attrs["ollama_magic"]["cached"], again.attrs["ollama_magic"]["asked"]) == (1, 1)
    assert isinstance(again[1], str)


def test_embeddings_are_cached_as_float32_and_only_new_texts_are_embedded(models_root: Path,
                                                                          cache_file: Path) -> None:
    texts = ["a cat sat", "a dog ran", "the sea", "a cat sat"]
    with Engine(ModelStore(models_root)) as engine:
        first = embed_frame(engine, texts, model=EMBED)
    assert first.attrs["ollama_magic"]["asked"] == 3
    with Engine(ModelStore(models_root)) as engine:
        again = embed_frame(engine, texts, model=EMBED)
        assert loaded(engine) == []
        more = embed_frame(engine, texts + ["a new line"], model=EMBED)
    assert (again.attrs["ollama_magic"]["cached"], again.attrs["ollama_magic"]["asked"]) == (3, 0)
    assert (more.attrs["ollama_magic"]["cached"], more.attrs["ollama_magic"]["asked"]) == (3, 1)
    for a, b in zip(first.embedding, again.embedding):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    with sqlite3.connect(cache_file) as db:
        assert {row[0] for row in db.execute("SELECT dim FROM entries")} == {len(first.embedding[0])}


def test_ollama_cache_verb_shows_counts_and_clears_one_model(models_root: Path, cache_file: Path, notebook_shell) -> None:
    ip = notebook_shell(models_root)
    ip.user_ns["rows"] = pd.Series(["one", "two"])
    ip.run_line_magic("chat", f'--over rows -m {SMOL} --temperature 0 --num-predict 4 "Echo {{text}}"')
    ip.run_line_magic("chat", f'--over rows -m {SMOL} --temperature 0 --num-predict 4 "Echo {{text}}"')
    ip.run_line_magic("embed", "rows")
    stats = ip.run_line_magic("ollama", "cache").set_index("model")
    assert stats.loc[SMOL, ["entries", "hits", "misses"]].tolist() == [2, 2, 2]
    assert stats.loc[EMBED, "entries"] == 2
    assert "2 cached entries of smollm2:135m" in ip.run_line_magic("ollama", f"cache clear {SMOL}")
    assert list(ip.run_line_magic("ollama", "cache").model) == [EMBED]
    refreshed = ip.run_line_magic("chat", f'--over rows -m {SMOL} --refresh --temperature 0 --num-predict 4 "E {{text}}"')
    assert refreshed.attrs["ollama_magic"]["asked"] == 2
    uncached = ip.run_line_magic("chat", f'--over rows -m {SMOL} --no-cache --temperature 0 --num-predict 4 "E {{text}}"')
    assert uncached.attrs["ollama_magic"]["asked"] == 2 and uncached.attrs["ollama_magic"]["cached"] == 0


# ---- real kernels ----------------------------------------------------------------------------------


class Kernel:
    """A real IPython kernel (jupyter_client) of this interpreter, with the extension loaded."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        from jupyter_client import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.kernel_spec  # noqa: B018 - resolves the native spec
        self.manager.kernel_spec.argv[0] = sys.executable
        self.manager.start_kernel(env={**os.environ, **env}, cwd=str(tmp))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)
        self.run("%load_ext ollama_magic")

    def start(self, code: str) -> str:
        return self.client.execute(code)

    def wait(self, msg_id: str, timeout: float = 600) -> str:
        """The cell's stdout once it finished; an error in the cell fails the test."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                raise AssertionError("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)

    def run(self, code: str, timeout: float = 600) -> str:
        return self.wait(self.start(code), timeout)

    def kill_9(self) -> None:
        os.kill(self.manager.provisioner.pid, signal.SIGKILL)
        self.manager.provisioner.process.wait(30)

    def close(self) -> None:
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=True)
        self.manager.cleanup_resources()


@pytest.fixture
def kernels(models_root: Path, tmp_path: Path, cache_file: Path) -> Iterator:
    env = {"OLLAMA_MODELS": str(models_root), "OLLAMA_MAGIC_CACHE": str(cache_file),
           "OLLAMA_MAGIC_CONVERSATIONS": str(tmp_path / "conversations"), "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started: list[Kernel] = []

    def start() -> Kernel:
        started.append(Kernel(tmp_path, env))
        return started[-1]

    yield start
    for kernel in started:
        kernel.close()


def over_cell(rows: range) -> str:
    return (f"rows = [f'Product number {{i}}' for i in {list(rows)}]\n"
            f"r = %chat --over rows -m {SMOL} --temperature 0 --num-predict 12 \"Slogan for {{text}}\"\n"
            "import json; print(json.dumps({k: r.attrs['ollama_magic'][k] for k in ('cached', 'asked', 'distinct')}))")


def entries(cache_file: Path) -> int:
    with sqlite3.connect(cache_file, timeout=30) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0


def test_a_kernel_killed_mid_column_resumes_asking_only_the_rows_not_kept(kernels, cache_file: Path) -> None:
    rows = range(40)
    doomed = kernels()
    doomed.start(over_cell(rows))
    deadline = time.monotonic() + 300
    while entries(cache_file) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    doomed.kill_9()
    kept = entries(cache_file)
    assert 4 <= kept < len(rows)  # killed mid-column, with some rows already kept
    fresh = kernels()
    meta = json.loads(fresh.run(over_cell(rows)).strip().splitlines()[-1])
    assert meta == {"cached": kept, "asked": len(rows) - kept, "distinct": len(rows)}
    assert entries(cache_file) == len(rows)


def test_two_kernels_write_one_cache_at_once(kernels, cache_file: Path) -> None:
    first, second = kernels(), kernels()
    a, b = first.start(over_cell(range(0, 12))), second.start(over_cell(range(6, 18)))
    first.wait(a)
    second.wait(b)
    assert entries(cache_file) == 18
    meta = json.loads(second.run(over_cell(range(18))).strip().splitlines()[-1])
    assert meta == {"cached": 18, "asked": 0, "distinct": 18}
