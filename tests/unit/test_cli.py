"""The CLI as a person uses it: tables on stdout, one ``Error:`` line and exit 1 on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_magic.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_show_cp_rm_round_trip(capsys, tmp_path: Path, tiny_gguf: Path) -> None:
    root = str(tmp_path / "models")
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {tiny_gguf.name}\nSYSTEM Answer briefly.\nPARAMETER temperature 0.3\n")

    code, _, err = run(capsys, "--models", root, "create", "brief", "-f", str(modelfile))
    assert code == 0 and err.rstrip().endswith("success")

    code, out, _ = run(capsys, "--models", root, "list")
    header, row = out.strip().splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert row.startswith("brief:latest") and len(row.split()[1]) == 12

    code, out, _ = run(capsys, "--models", root, "show", "brief")
    assert "architecture        llama" in out and "Answer briefly." in out
    code, out, _ = run(capsys, "--models", root, "show", "brief", "--parameters")
    assert out.strip() == "temperature                    0.3"
    code, out, _ = run(capsys, "--models", root, "show", "brief", "--system")
    assert out.strip() == "Answer briefly."

    assert run(capsys, "--models", root, "cp", "brief", "brief2")[0] == 0
    code, out, _ = run(capsys, "--models", root, "rm", "brief", "brief2")
    assert code == 0 and "deleted 'brief2'" in out
    assert run(capsys, "--models", root, "list")[1].strip() == "NAME    ID    SIZE    MODIFIED"


def test_errors_are_one_line_with_exit_code_1(capsys, tmp_path: Path) -> None:
    root = str(tmp_path / "models")
    code, out, err = run(capsys, "--models", root, "show", "ghost")
    assert code == 1 and err == 'Error: model "ghost" not found\n'

    bad = tmp_path / "Modelfile"
    bad.write_text("FROM x\nPARAMETER num_ctx lots\n")
    code, _, err = run(capsys, "--models", root, "create", "m", "-f", str(bad))
    assert code == 1 and err.startswith("Error: line 2:") and err.count("\n") == 1

    code, _, err = run(capsys, "--models", root, "create", "m", "-f", str(tmp_path / "missing"))
    assert code == 1 and err.startswith("Error: cannot read Modelfile")

    code, _, err = run(capsys, "--models", root, "cp", "ghost", "../escape")
    assert code == 1 and "invalid model name" in err


def test_create_from_gguf_shows_import_progress(capsys, tmp_path: Path, tiny_gguf: Path) -> None:
    code, _, err = run(capsys, "--models", str(tmp_path / "m"), "create", "t", "--from", str(tiny_gguf))
    assert code == 0
    assert "importing" in err and "100%" in err
