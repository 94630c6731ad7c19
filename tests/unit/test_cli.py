"""The CLI as a person uses it: tables on stdout, one ``Error:`` line and exit 1 on failure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ollama_magic.cli import main
from ollama_magic.defaults import DEFAULT_CHAT_MODEL


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
    assert run(capsys, "--models", root, "list")[1].splitlines()[0].strip() == "NAME    ID    SIZE    MODIFIED"


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


def test_setup_of_an_unknown_model_is_one_not_found_line(capsys, tmp_path: Path) -> None:
    import ollama_magic
    from ollama_magic.defaults import register
    from ollama_magic.store import ModelStore

    code, _, err = run(capsys, "--models", str(tmp_path / "m"), "setup", "nosuch")
    assert code == 1 and err.strip().startswith("Error: 'nosuch' is not an embedded model")
    with pytest.raises(ollama_magic.NotFound):  # our type (404 over HTTP), no longer a KeyError
        register(ModelStore(tmp_path / "m"), "nosuch")


def test_a_bug_raising_keyerror_is_not_disguised_as_an_error_line(capsys, monkeypatch, tmp_path: Path) -> None:
    from ollama_magic import cli

    def broken(store, args) -> None:  # noqa: ANN001
        raise KeyError("details")

    monkeypatch.setattr(cli, "cmd_list", broken)
    with pytest.raises(KeyError):
        main(["--models", str(tmp_path / "m"), "list"])


def test_every_exception_is_defined_in_errors_and_exported_by_the_package() -> None:
    import inspect

    import ollama_magic
    from ollama_magic import errors

    defined = {name for name, obj in vars(errors).items() if inspect.isclass(obj) and issubclass(obj, Exception)}
    assert {"EngineError", "TemplateError", "ServerError", "RemoteError", "HelpShown", "ServerBusy", "RowError"} <= defined
    listed = errors.__doc__ or ""  # the docstring's tree names every class (HelpShown aside, in its own line)
    assert all(name in listed for name in defined), sorted(name for name in defined if name not in listed)
    assert defined <= set(ollama_magic.__all__)
    assert all(getattr(ollama_magic, name) is getattr(errors, name) for name in defined)


def test_list_prints_the_shared_models_table(capsys, tmp_path: Path, tiny_gguf: Path) -> None:
    from ollama_magic.formatting import MODEL_COLUMNS, model_rows
    from ollama_magic.store import ModelStore

    root = tmp_path / "models"
    assert run(capsys, "--models", str(root), "create", "tiny", "--from", str(tiny_gguf))[0] == 0
    [row] = model_rows(ModelStore(root).list().models)  # what %ollama list and the models panel show too
    assert list(row) == MODEL_COLUMNS and row["family"] == "llama" and len(row["id"]) == 12
    _, out, _ = run(capsys, "--models", str(root), "list")
    assert re.split(" {4,}", out.splitlines()[1]) == [row["name"], row["id"], row["size"], row["modified"]]


def test_the_default_server_address_is_ollamas(monkeypatch) -> None:
    from ollama_magic.hosts import ollama_host, parse_host

    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert ollama_host() == "127.0.0.1:11434" and parse_host(None) == ("127.0.0.1", 11434)
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:9999")
    assert ollama_host() == "0.0.0.0:9999"


def test_run_with_a_question_where_the_model_goes_says_to_name_the_model_first(capsys, tmp_path: Path) -> None:
    """``ollama run`` needs the model first; ours defaults it only when nothing is given, so a question in
    its place is one line showing the right command, not a complaint about an invalid model name."""
    root = str(tmp_path / "models")
    code, out, err = run(capsys, "--models", root, "run", "why is the sky blue?")
    assert (code, out) == (1, "")
    assert err == ('Error: "why is the sky blue?" is not a model name: name the model first, '
                   f"e.g. ollama-magic run {DEFAULT_CHAT_MODEL} 'why is the sky blue?'\n")
    code, _, err = run(capsys, "--models", root, "run", "why", "is", "the", "sky", "blue")  # unquoted
    assert code == 1
    assert err == ('Error: model "why" not found: name the model first, '
                   f"e.g. ollama-magic run {DEFAULT_CHAT_MODEL} 'why is the sky blue'\n")
    assert not (tmp_path / "models" / "manifests").exists()  # nothing was registered or loaded


def test_list_in_a_fresh_store_says_how_to_get_a_model(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "--models", str(tmp_path / "models"), "list")
    header, hint = out.strip().splitlines()
    assert code == 0 and header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert hint == ("No models yet: ollama-magic setup registers the embedded ones, ollama-magic pull NAME downloads "
                    "one, ollama-magic create NAME --from PATH imports a GGUF.")
    from ollama_magic.cli import build_parser

    parser = build_parser()  # the verbs it names are this CLI's own
    for argv in (["setup"], ["pull", "NAME"], ["create", "NAME", "--from", "PATH"]):
        assert parser.parse_args(argv).command == argv[0]


@pytest.mark.parametrize("argv", [
    ["run", "smollm2:135m", "--num-predict", "8", "Why is the sky blue?"],
    ["run", "--num-predict", "8", "smollm2:135m", "Why is the sky blue?"],
    ["run", "smollm2:135m", "Why is the sky blue?", "--num-predict", "8"],
    ["run", "smollm2:135m", "--num-predict", "8", "Why", "is", "the", "sky", "blue?"],
    ["run", "smollm2:135m", "Why", "--num-predict", "8", "is", "the", "sky", "blue?"],
])
def test_run_takes_its_flags_anywhere_around_the_model_and_the_prompt(argv: list[str]) -> None:
    from ollama_magic.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.name, " ".join(args.prompt), args.num_predict) == ("smollm2:135m", "Why is the sky blue?", 8)


def test_run_still_refuses_a_flag_it_does_not_know(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "smollm2:135m", "--bogus", "hi"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_setup_models_is_one_loop_for_the_cli_and_the_notebook() -> None:
    """What each front end's ``setup`` reports per model, from the statuses its backend's pull sent."""
    from ollama_magic.defaults import EMBEDDED_MODELS, setup_models
    from ollama_magic.errors import NotFound
    from ollama_magic.formatting import ProgressBars
    from ollama_magic.types import ProgressResponse

    class Backend:
        def __init__(self) -> None:
            self.pulled: list[str] = []

        def pull(self, model: str, *, insecure: bool = False, stream: bool = False):  # noqa: ANN202
            self.pulled.append(model)
            status = {"smollm2:135m": f"registering {model} from its Python package",
                      "gemma3:270m": f"{model} is installed (embedded in the package)"}.get(model, "pulling manifest")
            return iter([ProgressResponse(status=status), ProgressResponse(status="success")])

    backend = Backend()
    outcomes = dict(setup_models(backend, [], lambda: ProgressBars(lines=False)))
    assert outcomes == {"smollm2:135m": "registered", "gemma3:270m": "already installed",
                        "all-minilm:latest": "pulled"} and backend.pulled == list(EMBEDDED_MODELS)
    with pytest.raises(NotFound):
        list(setup_models(backend, ["gemma3:270m", "no-such-model"], lambda: ProgressBars(lines=False)))
    assert backend.pulled == list(EMBEDDED_MODELS)  # nothing was pulled for a list with an unknown name
