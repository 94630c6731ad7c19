"""One per-shell registry holds a shell's session and its logs (review R9, §5 C3)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ollama_magic.notebook.cell_log import cell_log
from ollama_magic.notebook.session import forget, per_shell, session_for


def test_a_shell_has_one_session_and_its_logs_outlive_forgetting_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAGIC_CONVERSATIONS", str(tmp_path))
    shell, other = SimpleNamespace(user_ns={}), SimpleNamespace(user_ns={})
    # an entry made from another entry (the magics from the session) does not wait on itself
    made = per_shell(shell, "magics", lambda: ("magics", session_for(shell)))
    assert made[1] is session_for(shell) is not session_for(other)
    log = cell_log(shell)
    assert forget(shell, "session") is made[1]
    assert session_for(shell) is not made[1] and cell_log(shell) is log  # as In outlives %reload_ext
