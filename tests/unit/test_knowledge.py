"""``%ollama learn`` / search / ``--docs`` without a model: a backend whose vectors are bags of hashed
words and whose tokens are words, so the chunking, the incremental rules, the index and the sources
list are checked exactly; tests/integration/test_knowledge.py runs them on all-minilm and SmolLM2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ollama_magic.errors import InvalidRequest, NotFound
from ollama_magic.knowledge import Index, delete_index, learn, list_indexes, search
from ollama_magic.knowledge.ask import fit_sources
from ollama_magic.knowledge.chunking import chunk_text
from ollama_magic.knowledge.sources import expand, from_cells, from_column, read_file
from ollama_magic.notebook.display import ChatReply

DIM = 64


class WordBackend:
    """Embeds a text as the unit sum of its words' hashed one-hot vectors; counts what it embeds."""

    def __init__(self, digest: str = "sha256:" + "a" * 64) -> None:
        self.digest = digest
        self.embedded: list[str] = []

    def list(self) -> dict:
        return {"models": [{"model": "all-minilm:latest", "digest": self.digest}]}

    def tokenize(self, model: str, text: str) -> dict:
        return {"tokens": text.split()}

    def embed(self, model: str, input: list[str], **_: object) -> dict:
        self.embedded.extend(input)
        vectors = []
        for text in input:
            v = np.zeros(DIM)
            for word in text.lower().split():
                v[int(hashlib.md5(word.strip(".,").encode()).hexdigest(), 16) % DIM] += 1
            vectors.append((v / (np.linalg.norm(v) or 1)).tolist())
        return {"embeddings": vectors}


def words(text: str) -> int:
    return len(text.split())


def test_chunks_hold_at_most_size_tokens_overlap_and_name_their_lines() -> None:
    text = "\n".join(f"line {i} has five words" for i in range(1, 41))  # 5 tokens a line
    chunks = chunk_text(text, words, size=50, overlap=10)
    assert all(c.tokens <= 50 for c in chunks)
    assert (chunks[0].first_line, chunks[0].last_line) == (1, 10)
    assert (chunks[1].first_line, chunks[1].last_line) == (9, 18)  # two lines (10 tokens) repeated
    assert chunks[-1].last_line == 40


def test_a_line_longer_than_a_chunk_is_cut_between_sentences() -> None:
    line = " ".join(f"Sentence {i} is here." for i in range(30))  # 4 words each
    chunks = chunk_text(line, words, size=20, overlap=0)
    assert all(c.tokens <= 20 for c in chunks) and len(chunks) >= 6
    assert all(c.text.endswith(".") for c in chunks)  # no sentence cut in two
    assert " ".join(c.text for c in chunks).split() == line.split()


def test_bad_sizes_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x", words, size=16, overlap=16)


def _docs(tmp_path: Path) -> Path:
    (tmp_path / "a.md").write_text("# Alpha\n\nThe alpha reactor runs on blue salt.\n")
    (tmp_path / "b.py").write_text("def beta():\n    return 'the beta pump is green'\n")
    notebook = {"cells": [
        {"cell_type": "markdown", "source": ["Notes"]},
        {"cell_type": "code", "source": ["x = 1"],
         "outputs": [{"output_type": "stream", "text": ["gamma is purple\n"]}]},
    ]}
    (tmp_path / "n.ipynb").write_text(json.dumps(notebook))
    pd.DataFrame({"q": ["delta is orange", "epsilon is teal"], "n": [1, 2]}).to_csv(tmp_path / "t.csv", index=False)
    return tmp_path


def test_learn_is_incremental_by_source_and_search_finds_the_fact(tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    backend = WordBackend()
    files = lambda: [read_file(p) for p in expand([str(docs / "*")])]  # noqa: E731
    first = learn(backend, "kb", files())
    assert len(first.learned) == 4 and first.chunks_added == 6 and first.embedded == 6
    hits = search(backend, "kb", "gamma purple", k=2)
    assert hits.iloc[0].cite.endswith("n.ipynb cell 2") and "gamma is purple" in hits.iloc[0].text
    assert search(backend, "kb", "epsilon", k=1).iloc[0].cite.endswith("t.csv row 1")

    again = learn(backend, "kb", files())
    assert again.learned == [] and len(again.unchanged) == 4 and again.embedded == 0

    (docs / "a.md").write_text("# Alpha\n\nThe alpha reactor runs on red salt.\n\nNew line here.\n")
    changed = learn(backend, "kb", files())
    assert changed.learned == [str(docs / "a.md")] and changed.chunks_removed == 1
    assert changed.embedded == 1 and changed.cached == 0
    assert "red salt" in search(backend, "kb", "alpha reactor salt", k=1).iloc[0].text
    assert Index.open("kb").count() == 6  # the old chunk of a.md is gone, no duplicate

    (docs / "b.py").unlink()
    kept = learn(backend, "kb", [read_file(p) for p in expand([str(docs / "*")])])
    assert Index.open("kb").count() == 6  # without --prune a removed file's chunks stay
    pruned = learn(backend, "kb", [], prune=True)
    assert pruned.pruned == [str(docs / "b.py")] and pruned.chunks_removed == 1 and kept.embedded == 0
    assert "beta" not in " ".join(Index.open("kb").sources().source)


def test_a_column_and_cells_are_sources_named_by_index_and_cell(tmp_path: Path) -> None:
    backend = WordBackend()
    reviews = pd.Series(["the zeta lamp flickers", "the eta fan hums"], index=["r7", "r9"])
    learn(backend, "mix", [from_column("reviews", reviews), from_cells("cells", [(3, "theta = 'crimson'")])])
    assert search(backend, "mix", "eta fan", k=1).iloc[0].cite == "reviews[r9]"
    assert search(backend, "mix", "theta crimson", k=1).iloc[0].cite == "cell 3"


def test_a_pdf_is_learned_page_by_page_and_columns_choose_a_table_s_text(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    plt.rcParams["pdf.fonttype"] = 42  # TrueType text, which pypdf extracts
    with PdfPages(tmp_path / "manual.pdf") as pdf:
        for text in ["The lighthouse Pellam stands on granite.", "Page two says the kettle is cobalt."]:
            figure = plt.figure()
            figure.text(0.1, 0.5, text)
            pdf.savefig(figure)
            plt.close(figure)
    pd.DataFrame({"id": ["a1", "b2"], "title": ["iota lamp", "kappa drum"],
                  "body": ["the iota lamp glows", "the kappa drum booms"]}).to_csv(tmp_path / "t.csv", index=False)
    backend = WordBackend()
    learn(backend, "pdf", [read_file(tmp_path / "manual.pdf"), read_file(tmp_path / "t.csv", columns=["body"])])
    assert search(backend, "pdf", "kettle cobalt", k=1).iloc[0].cite.endswith("manual.pdf p. 2")
    hit = search(backend, "pdf", "kappa drum booms", k=1).iloc[0]
    assert hit.cite.endswith("t.csv row 1") and "title" not in hit.text and "booms" in hit.text
    with pytest.raises(InvalidRequest, match="no column 'nope'"):
        read_file(tmp_path / "t.csv", columns=["nope"])
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    with pytest.raises(InvalidRequest, match="broken.pdf: cannot read this PDF"):
        read_file(tmp_path / "broken.pdf")


def test_list_show_delete_and_another_model_is_refused(tmp_path: Path) -> None:
    backend = WordBackend()
    learn(backend, "one", [from_column("s", pd.Series(["iota is gold"]))])
    listed = list_indexes()
    assert listed.set_index("name").loc["one", ["model", "chunks", "sources"]].tolist() == ["all-minilm:latest", 1, 1]
    assert Index.open("one").sources().source.tolist() == ["s"]
    other = WordBackend(digest="sha256:" + "b" * 64)  # the same name, other weights
    with pytest.raises(InvalidRequest, match="--rebuild"):
        search(other, "one", "iota", k=1)
    with pytest.raises(InvalidRequest, match="--rebuild"):
        learn(other, "one", [from_column("s", pd.Series(["iota is gold"]))])
    assert learn(other, "one", [from_column("s", pd.Series(["iota is gold"]))], rebuild=True).chunks_added == 1
    delete_index("one")
    with pytest.raises(NotFound, match="no index named 'one'"):
        search(backend, "one", "iota", k=1)
    with pytest.raises(InvalidRequest, match="index name"):
        learn(backend, "../x", [])


def test_sources_that_do_not_fit_go_lowest_ranked_first() -> None:
    hits = pd.DataFrame({"cite": ["a:1", "b:2", "c:3"], "text": ["w " * 10, "w " * 10, "w " * 10],
                         "score": [0.9, 0.8, 0.7], "source": ["a", "b", "c"], "position": ["1", "2", "3"]})
    text, kept = fit_sources("question?", hits, words, budget=55)  # 26 + 12 a source
    assert kept.cite.tolist() == ["a:1", "b:2"] and kept.n.tolist() == [1, 2]
    assert "[1] a:1" in text and "[2] b:2" in text and "c:3" not in text and text.endswith("question?")


def test_a_reply_with_sources_shows_them_collapsed_and_as_text() -> None:
    reply = ChatReply("It is blue [1].", model="m", thread="main")
    reply.sources = pd.DataFrame({"n": [1], "cite": ["README.md:3-9"]})
    assert "<details><summary>sources (1)</summary>" in reply._repr_markdown_()
    assert "README.md:3-9" in reply._repr_markdown_()
    text = ChatReply("plain [1]", model="m", thread="main", fmt="text")
    text.sources = reply.sources
    printed: list[str] = []
    text._repr_pretty_(type("P", (), {"text": lambda self, s: printed.append(s)})(), False)
    assert printed == ["plain [1]\n\nsources:\n[1] README.md:3-9"]


class FailingBackend(WordBackend):
    """A backend whose embed fails, as a typo'd or unreachable -m model does."""

    def embed(self, model: str, input: list[str], **_: object) -> dict:
        raise ConnectionError(f"model {model!r} not found")


def test_a_rebuild_whose_embedding_fails_keeps_the_old_index_searchable(tmp_path: Path) -> None:
    backend = WordBackend()
    learn(backend, "kb", [from_column("s", pd.Series(["iota is gold", "kappa is silver"]))])
    with pytest.raises(Exception, match="not found"):
        learn(FailingBackend(), "kb", [from_column("s", pd.Series(["lambda is lead"]))], model="typo", rebuild=True)
    assert Index.open("kb").count() == 2 and Index.open("kb").info.model == "all-minilm:latest"
    assert "iota is gold" in search(backend, "kb", "iota gold", k=1).iloc[0].text


def test_a_rebuild_with_no_sources_is_refused_and_the_index_kept(tmp_path: Path) -> None:
    backend = WordBackend()
    learn(backend, "kb", [from_column("s", pd.Series(["iota is gold"]))])
    with pytest.raises(InvalidRequest, match="--rebuild"):
        learn(backend, "kb", [], rebuild=True, prune=True)
    assert Index.open("kb").count() == 1


def test_a_changed_source_whose_write_fails_keeps_its_old_chunks(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    backend = WordBackend()
    learn(backend, "kb", [from_column("s", pd.Series(["iota is gold", "kappa is silver"]))])

    def broken_add(self: Index, rows: object, vectors: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(Index, "add", broken_add)
        learn(backend, "kb", [from_column("s", pd.Series(["iota is lead", "kappa is tin"]))])
    assert Index.open("kb").count() == 2
    assert "iota is gold" in search(backend, "kb", "iota", k=1).iloc[0].text
    learn(backend, "kb", [from_column("s", pd.Series(["iota is lead", "kappa is tin"]))])
    assert sorted(Index.open("kb").table.to_pandas().text) == ["iota is lead", "kappa is tin"]


def test_a_replace_cut_off_after_its_add_is_finished_by_the_next_learn(tmp_path: Path) -> None:
    backend = WordBackend()
    old = [from_column("s", pd.Series(["iota is gold"]))]
    learn(backend, "kb", old)
    index = Index.open("kb")
    # what a kernel killed between the new rows' append and the old rows' delete leaves: both
    fresh = from_column("s", pd.Series(["iota is lead"]))
    index.add({"id": ["x"], "source": ["s"], "kind": [fresh.kind], "position": ["0"], "first_line": [1],
               "last_line": [1], "text": ["iota is lead"], "digest": ["half-done"]},
              np.ones((1, DIM), dtype=np.float32) / 8)
    learn(backend, "kb", old)  # the same content as before: still not "unchanged", the source holds two versions
    assert Index.open("kb").table.to_pandas().text.tolist() == ["iota is gold"]


def test_a_large_k_with_rerank_caps_the_pool_at_what_rerank_takes(tmp_path: Path) -> None:
    from ollama_magic.engine.rerank import MAX_DOCUMENTS

    backend = WordBackend()
    learn(backend, "big", [from_column("s", pd.Series([f"item {i} is here" for i in range(MAX_DOCUMENTS + 100)]))])
    asked: list[int] = []

    def rerank(query: str, texts: list[str]) -> list[float]:
        asked.append(len(texts))
        if len(texts) > MAX_DOCUMENTS:
            raise InvalidRequest(f"too many documents: {len(texts)}; at most {MAX_DOCUMENTS} per request")
        return [float(len(t)) for t in texts]

    found = search(backend, "big", "item here", k=251, rerank=rerank)
    assert len(found) == 251 and asked == [MAX_DOCUMENTS]
    learn(backend, "small", [from_column("t", pd.Series([f"item {i} is there" for i in range(300)]))])
    both = search(backend, ["big", "small"], "item here", k=100, rerank=rerank)  # 400 + 300 candidates
    assert len(both) == 100 and asked[-1] == 700
    search(backend, ["big", "small"], "item here", k=251, rerank=rerank)  # 1000 + 300: the best 1000
    assert asked[-1] == MAX_DOCUMENTS


def test_docs_whose_sources_do_not_fit_at_all_is_an_error_not_an_uncited_answer() -> None:
    hits = pd.DataFrame({"cite": ["a:1"], "text": ["w " * 100], "score": [0.9], "source": ["a"], "position": ["1"]})
    with pytest.raises(InvalidRequest, match="num_ctx"):
        fit_sources("question?", hits, words, budget=50)


def test_docs_and_context_together_share_one_budget(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ollama_magic.notebook.features.base import Cell
    from ollama_magic.notebook.features.docs import FEATURE as DOCS
    from ollama_magic.notebook.features.notebook_context import FEATURE as CONTEXT

    backend = WordBackend()
    learn(backend, "kb", [from_column("s", pd.Series([f"fact {i} " + "word " * 10 for i in range(6)]))])
    namespace = {f"v{i}": " ".join(["value"] * 200) for i in range(3)}
    session = SimpleNamespace(backend=backend, shell=None)
    cell = Cell(session, None, "fact?", "m", {"num_ctx": 200}, namespace)  # type: ignore[arg-type]
    args = __import__("argparse").Namespace(docs=["kb"], k=4, rerank=None, context=0, vars=list(namespace))
    turn = SimpleNamespace(text="fact?")
    DOCS.apply(turn, args, cell)  # type: ignore[arg-type]
    assert len(args.docs_sources) >= 1  # --docs kept some sources
    CONTEXT.apply(turn, args, cell)  # type: ignore[arg-type]
    assert "Variables:" in turn.text
    assert words(turn.text) - words("fact?") <= 100  # CONTEXT_SHARE of num_ctx, for both together
