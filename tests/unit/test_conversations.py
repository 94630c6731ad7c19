"""Per-notebook conversations: identity, storage on disk and export (the context guard: test_context_window)."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ollama_magic.errors import InvalidRequest
from ollama_magic.notebook.conversations import ConversationStore, default_conversations_root, new_message, to_markdown
from ollama_magic.notebook.identity import NotebookIdentity, notebook_identity
from ollama_magic.files import TMP_PREFIX


class FakeShell:
    """Just what notebook_identity reads from an IPython shell."""

    def __init__(self, **user_ns: Any) -> None:
        self.user_ns = dict(user_ns)


@pytest.fixture(autouse=True)
def _no_front_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start outside any notebook front end, whatever the environment running them says."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("OLLAMA_MAGIC_CONVERSATIONS", raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)


@pytest.fixture
def convs(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path / "conversations")


@pytest.fixture
def nb() -> NotebookIdentity:
    return notebook_identity(FakeShell(__session__="work/analysis.ipynb"))


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str, model: str = "gemma3:270m", **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "model": model, **extra}


def roles_and_contents(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


# ---- identity -------------------------------------------------------------------------------------


def test_identity_from_jupyterlab_session_variable() -> None:
    identity = notebook_identity(FakeShell(__session__="work/analysis.ipynb"))
    assert identity.source == "path"
    assert identity.label == "work/analysis.ipynb"
    assert identity.key.startswith("analysis-")


def test_session_variable_wins_over_vscode_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "from-env.ipynb")
    shell = FakeShell(__session__="lab.ipynb", __vsc_ipynb_file__="/home/u/vscode.ipynb")
    assert notebook_identity(shell).label == "lab.ipynb"


def test_identity_from_vscode_variable_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "from-env.ipynb")
    identity = notebook_identity(FakeShell(__vsc_ipynb_file__="/home/u/vscode.ipynb"))
    assert (identity.label, identity.source) == ("/home/u/vscode.ipynb", "path")


def test_identity_from_env_without_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "reports/q3.ipynb")
    identity = notebook_identity(None)
    assert (identity.label, identity.source) == ("reports/q3.ipynb", "path")
    # ipykernel copies JPY_SESSION_NAME into __session__: both must name the same conversation
    assert identity == notebook_identity(FakeShell(__session__="reports/q3.ipynb"))


def test_blank_or_non_string_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "real.ipynb")
    assert notebook_identity(FakeShell(__session__="  ", __vsc_ipynb_file__=42)).label == "real.ipynb"


def test_identity_from_kernel_connection_file(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ipykernel = types.ModuleType("ipykernel")
    connection_file = "/run/user/1000/jupyter/runtime/kernel-4f2a-77.json"
    fake_ipykernel.get_connection_file = lambda: connection_file  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ipykernel", fake_ipykernel)
    identity = notebook_identity(FakeShell())
    assert identity.source == "session"
    assert identity.label == "kernel session 4f2a-77"


def test_identity_falls_back_to_the_process_outside_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ipykernel = types.ModuleType("ipykernel")

    def not_in_a_kernel() -> str:
        raise RuntimeError("app not specified, and not in a running Kernel")

    fake_ipykernel.get_connection_file = not_in_a_kernel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ipykernel", fake_ipykernel)
    identity = notebook_identity(None)
    assert identity.source == "fallback"
    assert str(os.getpid()) in identity.label
    assert identity == notebook_identity(FakeShell())


def test_identity_keys_are_filesystem_safe_and_distinct() -> None:
    paths = ["a/b.ipynb", "c/b.ipynb", "/tmp/we ird:na*me?.ipynb", "..hidden.ipynb", "/"]
    keys = [notebook_identity(FakeShell(__session__=p)).key for p in paths]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert key and not key.startswith(".") and "/" not in key
        assert all(ch.isalnum() or ch in "-_." for ch in key), key
        assert len(key) <= 64


# ---- storage --------------------------------------------------------------------------------------


def test_thread_survives_a_new_store_object(tmp_path: Path, nb: NotebookIdentity) -> None:
    ConversationStore(tmp_path).append(nb, "main", user("hi"), assistant("hello"))
    after_restart = ConversationStore(tmp_path)
    assert roles_and_contents(after_restart.thread(nb)) == [("user", "hi"), ("assistant", "hello")]
    assert after_restart.thread(nb)[1]["model"] == "gemma3:270m"


def test_two_notebooks_never_see_each_others_threads(convs: ConversationStore) -> None:
    first = notebook_identity(FakeShell(__session__="one.ipynb"))
    second = notebook_identity(FakeShell(__session__="two.ipynb"))
    convs.append(first, "main", user("only in one"))
    convs.append(second, "side", user("only in two"))
    assert convs.threads(first) == {"main": 1}
    assert convs.threads(second) == {"side": 1}
    assert convs.thread(second, "main") == []
    assert convs.path_for(first) != convs.path_for(second)


def test_unknown_thread_is_empty_and_thread_returns_a_copy(convs: ConversationStore, nb: NotebookIdentity) -> None:
    assert convs.thread(nb, "nothing-yet") == []
    convs.append(nb, "main", user("q"))
    copy = convs.thread(nb)
    copy[0]["content"] = "changed"
    copy.append(user("extra"))
    assert roles_and_contents(convs.thread(nb)) == [("user", "q")]


def test_append_fills_model_and_utc_timestamp(convs: ConversationStore, nb: NotebookIdentity) -> None:
    assert convs.append(nb, "main", user("q")) == 1
    stored = convs.thread(nb)[0]
    assert stored["model"] is None
    assert stored["created_at"].endswith("Z")
    assert pd.Timestamp(stored["created_at"]).tzinfo is not None


def test_append_rejects_bad_messages(convs: ConversationStore, nb: NotebookIdentity) -> None:
    with pytest.raises(InvalidRequest, match="role"):
        convs.append(nb, "main", {"role": "robot", "content": "x"})
    with pytest.raises(InvalidRequest, match="content"):
        convs.append(nb, "main", {"role": "user", "content": None})
    with pytest.raises(InvalidRequest, match="eval_count"):
        convs.append(nb, "main", assistant("x", eval_count="12"))
    with pytest.raises(InvalidRequest, match="set_system"):
        convs.append(nb, "main", {"role": "system", "content": "be terse"})
    assert convs.threads(nb) == {}


def test_system_message_is_first_and_replaced_not_duplicated(convs: ConversationStore, nb: NotebookIdentity) -> None:
    convs.append(nb, "main", user("q1"), assistant("a1"))
    convs.set_system(nb, "main", "Be terse.")
    convs.set_system(nb, "main", "Be verbose.")
    thread = convs.thread(nb)
    assert roles_and_contents(thread) == [("system", "Be verbose."), ("user", "q1"), ("assistant", "a1")]
    convs.set_system(nb, "main", None)
    assert [m["role"] for m in convs.thread(nb)] == ["user", "assistant"]


def test_system_message_alone_makes_a_thread(convs: ConversationStore, nb: NotebookIdentity) -> None:
    convs.set_system(nb, "poet", "Answer in verse.")
    assert convs.threads(nb) == {"poet": 1}
    convs.set_system(nb, "poet", None)
    assert convs.threads(nb) == {}


def test_reset_forgets_one_thread_and_reset_all_every_thread(convs: ConversationStore, nb: NotebookIdentity) -> None:
    convs.set_system(nb, "main", "sys")
    convs.append(nb, "main", user("q"), assistant("a"))
    convs.append(nb, "side", user("q2"))
    convs.append(nb, "third", user("q3"))
    assert convs.threads(nb) == {"main": 3, "side": 1, "third": 1}
    assert convs.reset(nb, "main") == 3
    assert convs.thread(nb, "main") == []
    assert convs.threads(nb) == {"side": 1, "third": 1}
    assert convs.reset(nb, "main") == 0
    assert convs.reset_all(nb) == 2
    assert convs.threads(nb) == {}
    assert ConversationStore(convs.root).threads(nb) == {}


@pytest.mark.parametrize("bad", ["", "a" * 65, "with space", "a/b", "../x", "naïve", "tab\t"])
def test_invalid_thread_names_are_refused_with_a_clear_message(
    convs: ConversationStore, nb: NotebookIdentity, bad: str
) -> None:
    with pytest.raises(InvalidRequest, match="invalid thread name.*letters, digits"):
        convs.append(nb, bad, user("q"))
    with pytest.raises(InvalidRequest):
        convs.thread(nb, bad)


def test_valid_thread_names_are_accepted(convs: ConversationStore, nb: NotebookIdentity) -> None:
    for name in ["t1", "a" * 64, "draft-2.v_3", "."]:
        convs.append(nb, name, user(name))
    assert set(convs.threads(nb)) == {"t1", "a" * 64, "draft-2.v_3", "."}


def test_concurrent_appends_from_threads_all_land(convs: ConversationStore, nb: NotebookIdentity) -> None:
    def writer(prefix: str) -> None:
        for index in range(20):
            convs.append(nb, "main", user(f"{prefix}{index}"))

    workers = [threading.Thread(target=writer, args=(prefix,)) for prefix in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    contents = [m["content"] for m in convs.thread(nb)]
    assert sorted(contents) == sorted([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)])


def test_file_on_disk_names_the_notebook_and_holds_the_threads(convs: ConversationStore, nb: NotebookIdentity) -> None:
    convs.append(nb, "main", user("q"))
    document = json.loads(convs.path_for(nb).read_text())
    assert document["notebook"] == "work/analysis.ipynb"
    assert document["threads"]["main"][0]["content"] == "q"
    assert convs.path_for(nb).parent == convs.root


def test_writes_leave_no_temp_files(convs: ConversationStore, nb: NotebookIdentity) -> None:
    for index in range(5):
        convs.append(nb, "main", user(f"q{index}"))
    convs.set_system(nb, "main", "s")
    convs.reset(nb, "main")
    leftovers = [p.name for p in convs.root.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert leftovers == []
    assert [p.name for p in convs.root.glob("*.json")] == [convs.path_for(nb).name]


def test_a_failed_write_keeps_the_old_file(
    convs: ConversationStore, nb: NotebookIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    convs.append(nb, "main", user("kept"))
    before = convs.path_for(nb).read_bytes()
    import ollama_magic.files as atomic

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(atomic.os, "replace", crash)
        with pytest.raises(OSError, match="disk full"):
            convs.append(nb, "main", user("lost"))
    assert convs.path_for(nb).read_bytes() == before
    assert [p for p in convs.root.iterdir() if p.name.startswith(TMP_PREFIX)] == []


@pytest.mark.parametrize(
    "garbage",
    [b'{"threads": {"main": [{"role": "us', b"\xff\xfe not utf-8", b"[1, 2, 3]", b'{"threads": {"main": "text"}}'],
)
def test_corrupt_file_is_moved_aside_and_not_lost(
    convs: ConversationStore, nb: NotebookIdentity, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    path = convs.path_for(nb)
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        assert convs.thread(nb) == []
        convs.append(nb, "main", user("fresh start"))
    aside = list(convs.root.glob(f"{nb.key}.corrupt-*.json"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == garbage
    assert "moved it to" in caplog.text and aside[0].name in caplog.text
    assert roles_and_contents(convs.thread(nb)) == [("user", "fresh start")]


def test_default_root_is_ours_and_never_the_ollama_models_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama-models"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_conversations_root() == tmp_path / "data" / "ollama-magic" / "conversations"
    assert ConversationStore().root == tmp_path / "data" / "ollama-magic" / "conversations"
    monkeypatch.setenv("OLLAMA_MAGIC_CONVERSATIONS", str(tmp_path / "mine"))
    assert default_conversations_root() == tmp_path / "mine"


# ---- history as a DataFrame -----------------------------------------------------------------------


def test_history_frame_columns_and_dtypes(convs: ConversationStore, nb: NotebookIdentity) -> None:
    convs.set_system(nb, "main", "sys")
    convs.append(
        nb, "main",
        user("q"),
        assistant("a", total_duration=1_500_000_000, eval_count=12, prompt_eval_count=7),
        assistant("part", interrupted=True),
    )
    frame = convs.history_frame(nb)
    assert list(frame.columns) == [
        "role", "content", "model", "created_at", "total_duration", "eval_count", "prompt_eval_count", "interrupted",
    ]
    assert list(frame["role"]) == ["system", "user", "assistant", "assistant"]
    assert str(frame["created_at"].dtype).startswith("datetime64") and str(frame["created_at"].dt.tz) == "UTC"
    assert pd.api.types.is_timedelta64_dtype(frame["total_duration"])
    assert frame["total_duration"].iloc[2] == pd.Timedelta(seconds=1.5)
    assert pd.isna(frame["total_duration"].iloc[1])
    assert str(frame["eval_count"].dtype) == "Int64" and frame["eval_count"].iloc[2] == 12
    assert pd.isna(frame["prompt_eval_count"].iloc[0])
    assert frame["interrupted"].dtype == bool and list(frame["interrupted"]) == [False, False, False, True]
    assert frame["model"].iloc[0] is None and frame["model"].iloc[2] == "gemma3:270m"


def test_history_frame_of_an_empty_thread_has_the_same_columns(convs: ConversationStore, nb: NotebookIdentity) -> None:
    frame = convs.history_frame(nb, "empty")
    assert len(frame) == 0
    assert "created_at" in frame.columns and "interrupted" in frame.columns


# ---- export ---------------------------------------------------------------------------------------


def test_markdown_transcript_reads_like_a_conversation() -> None:
    messages = [
        new_message("system", "Be terse."),
        new_message("user", "What is {x}?\n```py\nd = {'a': 1}\n```"),
        new_message("assistant", "A dict.", "gemma3:270m", eval_count=3),
        new_message("assistant", "Cut o", "gemma3:270m", interrupted=True),
    ]
    text = to_markdown(messages)
    assert "**system**\n\nBe terse." in text
    assert "**user**\n\nWhat is {x}?\n```py\nd = {'a': 1}\n```" in text
    assert "**assistant** (gemma3:270m)\n\nA dict." in text
    assert "**assistant** (gemma3:270m) *(interrupted)*\n\nCut o" in text
    assert text.index("**system**") < text.index("**user**") < text.index("A dict.")
    assert to_markdown([]) == ""


def test_export_markdown_inferred_from_suffix(convs: ConversationStore, nb: NotebookIdentity, tmp_path: Path) -> None:
    convs.append(nb, "main", user("q"), assistant("a"))
    written = convs.export(nb, "main", tmp_path / "out" / "chat.md")
    assert written == tmp_path / "out" / "chat.md"
    assert written.read_text() == to_markdown(convs.thread(nb))


def test_export_json_round_trips(convs: ConversationStore, nb: NotebookIdentity, tmp_path: Path) -> None:
    convs.set_system(nb, "main", "sys")
    convs.append(nb, "main", user("ünïcode ✓"), assistant("a", total_duration=5, eval_count=1, interrupted=True))
    written = convs.export(nb, "main", tmp_path / "chat.json")
    document = json.loads(written.read_text(encoding="utf-8"))
    assert document["notebook"] == nb.label and document["thread"] == "main"
    assert document["messages"] == convs.thread(nb)


def test_export_format_argument_overrides_the_suffix(
    convs: ConversationStore, nb: NotebookIdentity, tmp_path: Path
) -> None:
    convs.append(nb, "main", user("q"))
    written = convs.export(nb, "main", tmp_path / "chat.txt", fmt="json")
    assert json.loads(written.read_text())["messages"][0]["content"] == "q"
    with pytest.raises(InvalidRequest, match=r"\.md or \.json"):
        convs.export(nb, "main", tmp_path / "chat.txt")
    with pytest.raises(InvalidRequest, match="unknown export format"):
        convs.export(nb, "main", tmp_path / "chat.md", fmt="html")  # type: ignore[arg-type]
