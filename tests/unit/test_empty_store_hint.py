"""A fresh store's empty model list says in one line how to get a model (issue 23's papercut)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

HOW = ("%ollama setup", "%ollama pull NAME", "%ollama create NAME --from PATH")


def empty_session() -> SimpleNamespace:
    return SimpleNamespace(backend=SimpleNamespace(list=lambda: SimpleNamespace(models=[])))


def test_ollama_list_of_an_empty_store_says_how_to_get_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    from ollama_magic.notebook.manage import run

    frame = run(empty_session(), ["list"])
    out = capsys.readouterr().out
    assert frame.empty and len(out.strip().splitlines()) == 1
    assert all(way in out for way in HOW)


def test_the_models_panel_of_an_empty_store_says_how_to_get_a_model() -> None:
    pytest.importorskip("ipywidgets")
    from ollama_magic.notebook.widgets import ModelsPanel

    panel = ModelsPanel(empty_session())
    assert panel.rows() == []
    assert all(way in panel.empty_note.value for way in HOW)
