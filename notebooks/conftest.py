"""The notebooks run (under nbval) against a throwaway model store and conversation directory, so a
test run never touches the user's own models, chats or column cache. The kernel inherits this environment."""

from __future__ import annotations

import os
import shutil
import tempfile

_ROOT: list[str] = []


def pytest_configure(config) -> None:  # noqa: ANN001
    root = tempfile.mkdtemp(prefix="ollama-magic-notebooks-")
    _ROOT.append(root)
    os.environ["OLLAMA_MODELS"] = os.path.join(root, "models")
    os.environ["OLLAMA_MAGIC_CONVERSATIONS"] = os.path.join(root, "conversations")
    os.environ["OLLAMA_MAGIC_CACHE"] = os.path.join(root, "column-cache.sqlite")
    os.environ["OLLAMA_MAGIC_INDEXES"] = os.path.join(root, "indexes")


def pytest_unconfigure(config) -> None:  # noqa: ANN001
    for root in _ROOT:
        shutil.rmtree(root, ignore_errors=True)
