"""One configuration module (``envconfig``): every variable declared once, read when used, and a bad
value is one warning and the default (Ollama's rule), never an error on every request."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ollama_magic import envconfig

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ollama_magic"


def warnings_about(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and name in r.getMessage()]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own first warning (the once-per-value memory is process-wide)."""
    monkeypatch.setattr(envconfig, "_warned", set())


def test_a_value_set_after_import_is_read_at_the_next_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_MAX_QUEUE", raising=False)
    assert envconfig.max_queue() == 512
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", " 7 ")
    assert envconfig.max_queue() == 7


@pytest.mark.parametrize("name, bad, default", [
    ("OLLAMA_MAX_QUEUE", "abc", 512), ("OLLAMA_NUM_PARALLEL", "0", 4), ("OLLAMA_CONTEXT_LENGTH", "8k", 4096),
    ("OLLAMA_MAX_LOADED_MODELS", "-1", 3), ("OLLAMA_KEEP_ALIVE", "five minutes", 300.0),
    ("OLLAMA_NOPRUNE", "perhaps", False), ("OLLAMA_MAGIC_MAX_BODY", "1e6", 100 << 20),
])
def test_a_bad_value_warns_once_and_the_default_is_used(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture,
                                                        name: str, bad: str, default: object) -> None:
    var = next(v for v in envconfig.VARS if v.name == name)
    monkeypatch.setenv(name, bad)
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        assert [var() for _ in range(5)] == [default] * 5
    [warning] = warnings_about(caplog, name)  # once per variable and value, not once per request
    assert repr(bad) in warning and "using the default" in warning
    monkeypatch.setenv(name, bad + "x")  # a different bad value is worth its own warning
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        var()
    assert len(warnings_about(caplog, name)) == 2


def test_durations_are_read_by_the_keep_alive_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    for text, seconds in (("1h30m", 5400.0), ("90", 90.0), ("-1", None), ("0", 0.0)):
        monkeypatch.setenv("OLLAMA_KEEP_ALIVE", text)
        assert envconfig.keep_alive() == seconds


def test_booleans_take_gos_words_and_yes_no(monkeypatch: pytest.MonkeyPatch) -> None:
    for text, value in (("1", True), ("TRUE", True), ("yes", True), ("0", False), ("false", False), ("", False)):
        monkeypatch.setenv("OLLAMA_NOPRUNE", text)
        assert envconfig.no_prune() is value


# ---- the readers: each was an error (or a silent default) before ----------------------------------

def test_max_loaded_models_abc_does_not_stop_the_scheduler(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from ollama_magic.engine.scheduler import Scheduler

    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "abc")
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        scheduler = Scheduler(budget=1 << 30)  # was: ValueError: invalid literal for int() with base 10: 'abc'
    try:
        assert scheduler.max_loaded == 3
    finally:
        scheduler.shutdown()
    assert len(warnings_about(caplog, "OLLAMA_MAX_LOADED_MODELS")) == 1


def test_max_loaded_models_abc_does_not_stop_the_engine(monkeypatch: pytest.MonkeyPatch, store) -> None:
    from ollama_magic.engine import Engine

    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "abc")
    with Engine(store) as engine:
        assert engine.scheduler.max_loaded == 3


def test_a_bad_keep_alive_setting_is_not_an_invalid_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from ollama_magic.engine.scheduler import env_keep_alive, parse_keep_alive

    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "abc")
    assert env_keep_alive() == 300.0  # was: InvalidRequest, a 400 for every request without keep_alive
    assert parse_keep_alive(None) == 300.0 and parse_keep_alive("2m") == 120.0
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "1h")
    assert parse_keep_alive(None) == 3600.0


def test_a_bad_max_body_setting_is_not_an_invalid_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from ollama_magic.server.bodies import max_body_from_env

    monkeypatch.setenv("OLLAMA_MAGIC_MAX_BODY", "100MB")
    assert max_body_from_env() == 100 << 20  # was: InvalidRequest (a 400 type) at create_app


def test_a_bad_max_images_setting_is_said_not_swallowed(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from ollama_magic.engine.images import max_images

    monkeypatch.setenv("OLLAMA_MAGIC_MAX_IMAGES", "lots")
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        assert max_images() == 16
    assert len(warnings_about(caplog, "OLLAMA_MAGIC_MAX_IMAGES")) == 1  # was: silently 16


def test_num_parallel_warns_once_not_per_load(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from ollama_magic.engine.runner import max_queue, num_parallel

    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "four")
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "9")
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        assert [num_parallel() for _ in range(3)] == [4, 4, 4] and max_queue() == 9
    assert len(warnings_about(caplog, "OLLAMA_NUM_PARALLEL")) == 1  # was: one per call


# ---- listings -----------------------------------------------------------------------------------

def test_the_listing_shows_each_value_and_never_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAGIC_API_KEY", "s3cret-key")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "1h")
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "abc")
    monkeypatch.delenv("OLLAMA_NUM_PARALLEL", raising=False)
    shown = envconfig.as_map()
    declared = [v for v in vars(envconfig).values() if isinstance(v, envconfig.Var)]
    assert len(set(envconfig.VARS)) == len(envconfig.VARS) and set(declared) == set(envconfig.VARS)  # none left out
    assert set(shown) == {v.name for v in envconfig.VARS}
    assert shown["OLLAMA_MAGIC_API_KEY"].value == "(set)"
    assert shown["OLLAMA_KEEP_ALIVE"].value == "1h"
    assert shown["OLLAMA_MAX_QUEUE"].value == "512 (ignoring 'abc')"
    assert shown["OLLAMA_NUM_PARALLEL"].value == "4"
    text = envconfig.listing()
    assert "s3cret" not in text
    for var in envconfig.VARS:
        assert var.name in text and var.meaning in text


def test_serve_help_lists_every_variable_with_its_value() -> None:
    env = {**os.environ, "OLLAMA_MAX_QUEUE": "77", "OLLAMA_MAGIC_API_KEY": "s3cret-key"}
    done = subprocess.run([sys.executable, "-m", "ollama_magic", "serve", "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for var in envconfig.VARS:
        assert var.name in done.stdout and var.meaning in done.stdout
    assert re.search(r"OLLAMA_MAX_QUEUE\s+77  \(default 512\)\n", done.stdout)
    assert "s3cret" not in done.stdout and "OLLAMA_MAGIC_API_KEY" in done.stdout


def test_the_readme_table_is_the_declared_variables() -> None:
    """Every declared variable is in the README with its default and meaning, and the table holds no
    other: regenerate it with ``python -m ollama_magic.envconfig``."""
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- envconfig table: python -m ollama_magic.envconfig -->\n", "\n<!-- end of envconfig table -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == envconfig.markdown_table()


def test_every_variable_the_package_reads_is_declared_and_read_here_only() -> None:
    """A literal name in ``os.environ[...]``, ``os.environ.get(...)`` or ``os.getenv(...)`` anywhere
    in the package must be a declared variable, and only envconfig reads ours (OLLAMA_*)."""
    declared = {v.name for v in envconfig.VARS}
    reads = re.compile(r"""(?:environ(?:\.get)?\s*[\[(]|getenv\()\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")
    undeclared, ad_hoc = [], []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "envconfig.py":
            continue
        for name in reads.findall(path.read_text()):
            where = f"{path.relative_to(ROOT)}: {name}"
            if name not in declared:
                undeclared.append(where)
            if name.startswith("OLLAMA_"):
                ad_hoc.append(where)
    assert not undeclared, "declare these in ollama_magic/envconfig.py"
    assert not ad_hoc, "read these through ollama_magic/envconfig.py"
