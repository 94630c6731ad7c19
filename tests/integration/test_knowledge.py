"""``%ollama learn``, ``%ollama search``, ``Engine.search`` and ``%%chat --docs`` on the real models
(all-minilm embeds, SmolLM2 answers), through the IPython shell a notebook uses (issue 27)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.formatters import DisplayFormatter
from IPython.utils.capture import capture_output

from ollama_magic.engine import Engine
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
SMOL = "smollm2:135m"
RERANKER = "tiny-reranker"
RICH = DisplayFormatter()


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory, clone_registered) -> Path:
    return clone_registered(tmp_path_factory.mktemp("knowledge") / "models").root


def _corpus(folder: Path) -> Path:
    folder.mkdir()
    (folder / "plants.md").write_text("# Plants\n\nThe greenhouse fern Veltra blooms only in December.\n\n"
                                      "Water it twice a week.\n")
    (folder / "boats.txt").write_text("Sailing notes.\nThe harbour ferry Osprey leaves at 7:40 every morning.\n")
    (folder / "tool.py").write_text("def launch_code():\n    \"\"\"The vault code is 4471.\"\"\"\n    return 4471\n")
    (folder / "log.ipynb").write_text(json.dumps({"cells": [
        {"cell_type": "code", "source": ["print('hello')"],
         "outputs": [{"output_type": "stream", "text": ["The blue kettle holds three litres.\n"]}]}]}))
    pd.DataFrame({"city": ["Lyon", "Oslo"], "note": ["Lyon hosts the silk museum.", "Oslo has the ski jump."]}
                 ).to_csv(folder / "cities.csv", index=False)
    return folder


def test_learn_search_incremental_prune_and_a_new_engine_finds_the_index(notebook_shell, models_root: Path,
                                                                          tmp_path: Path) -> None:
    ip = notebook_shell(models_root)
    docs = _corpus(tmp_path / "docs")
    first = ip.run_line_magic("ollama", f"learn kb {docs}/*")
    assert len(first.learned) == 5 and first.embedded == first.chunks_added > 0

    hits = ip.run_line_magic("ollama", 'search kb "when does the ferry leave?" -k 3')
    assert list(hits.columns[:6]) == ["rank", "score", "source", "position", "cite", "text"]
    assert "Osprey" in hits.iloc[0].text and hits.iloc[0].cite.endswith("boats.txt:1-2")
    assert ip.run_line_magic("ollama", 'search kb "what does the kettle hold" -k 1').iloc[0].cite.endswith(
        "log.ipynb cell 1")
    assert ip.run_line_magic("ollama", 'search kb "silk museum" -k 1').iloc[0].cite.endswith("cities.csv row 0")

    unchanged = ip.run_line_magic("ollama", f"learn kb {docs}/*")
    assert unchanged.learned == [] and unchanged.embedded == 0 and len(unchanged.unchanged) == 5

    (docs / "plants.md").write_text("# Plants\n\nThe greenhouse fern Veltra blooms only in March.\n")
    changed = ip.run_line_magic("ollama", f"learn kb {docs}/*")
    assert changed.learned == [str(docs / "plants.md")] and changed.embedded == 1
    assert "March" in ip.run_line_magic("ollama", 'search kb "when does the fern bloom" -k 1').iloc[0].text

    (docs / "tool.py").unlink()
    pruned = ip.run_line_magic("ollama", f"learn kb {docs}/* --prune")
    assert pruned.pruned == [str(docs / "tool.py")] and pruned.chunks_removed == 1

    ip.user_ns["reviews"] = pd.DataFrame({"text": ["The red bicycle has a broken bell."]}, index=["r42"])
    ip.run_line_magic("ollama", "learn kb --over reviews.text")
    assert ip.run_line_magic("ollama", 'search kb "bicycle bell" -k 1').iloc[0].cite == "reviews.text[r42]"
    ip.run_cell("secret_colour = 'the lantern is amber'", store_history=True)
    ip.run_line_magic("ollama", "learn kb --cells")
    assert ip.run_line_magic("ollama", 'search kb "what colour is the lantern" -k 1').iloc[0].cite.startswith("cell ")

    listed = ip.run_line_magic("ollama", "learn --list").set_index("name")
    assert listed.loc["kb", "model"] == "all-minilm:latest" and listed.loc["kb", "sources"] == 6
    shown = ip.run_line_magic("ollama", "learn --show kb")
    assert str(docs / "boats.txt") in set(shown.source)

    with Engine(ModelStore(models_root)) as engine:  # another kernel: the index is on disk
        again = engine.search("kb", "when does the ferry leave?", 2)
    assert "Osprey" in again.iloc[0].text

    assert "deleted" in ip.run_line_magic("ollama", "learn --delete kb")
    assert "kb" not in set(ip.run_line_magic("ollama", "learn --list").name)


def test_docs_answers_with_the_sources_listed_and_kept(notebook_shell, models_root: Path, tmp_path: Path) -> None:
    ip = notebook_shell(models_root)
    docs = _corpus(tmp_path / "docs")
    ip.run_line_magic("ollama", f"learn facts {docs}/*")
    with capture_output():
        reply = ip.run_cell_magic("chat", f"-m {SMOL} --docs facts -k 2 --temperature 0 --num-predict 40",
                                  "When does the harbour ferry Osprey leave?")
    assert reply.sources.n.tolist() == [1, 2]
    assert reply.sources.iloc[0].cite.endswith("boats.txt:1-2")
    data, _ = RICH.format(reply)
    assert "<details><summary>sources (2)</summary>" in data["text/markdown"]
    assert "boats.txt:1-2" in data["text/markdown"] and "boats.txt:1-2" in data["text/plain"]
    sent = ip.run_line_magic("ollama", "history --df").content.iloc[0]
    assert "[1] " in sent and "Osprey leaves at 7:40" in sent  # the chunk went with the message, numbered
    with pytest.raises(Exception, match="-k goes with --docs"):
        ip.run_cell_magic("chat", "-k 2", "hello")


def test_rerank_reorders_the_candidates_of_search_and_docs(notebook_shell, models_root: Path, tmp_path: Path,
                                                          cross_encoder_dir: Path) -> None:
    """``--rerank MODEL``: the candidates' scores are the reranker's (Engine.rerank's; a cross-encoder, whose
    scores do not depend on what else is decoded), the cosine kept beside them as ``similarity``; in
    ``--docs`` the sources are those."""
    with Engine(ModelStore(models_root)) as engine:
        engine.create(RERANKER, from_=str(cross_encoder_dir))
    ip = notebook_shell(models_root)
    docs = _corpus(tmp_path / "docs")
    ip.run_line_magic("ollama", f"learn ranked {docs}/*")
    query = "When does the harbour ferry Osprey leave?"
    pool = ip.run_line_magic("ollama", f'search ranked "{query}" -k 8')  # every chunk: the reranked pool
    assert "similarity" not in pool.columns and len(pool) == 6
    hits = ip.run_line_magic("ollama", f'search ranked "{query}" -k 2 --rerank {RERANKER}')
    assert list(hits.columns[:3]) == ["rank", "score", "similarity"]
    with Engine(ModelStore(models_root)) as engine:
        direct = engine.rerank(RERANKER, query, pool.text.tolist(), top_n=2)
        via_engine = engine.search("ranked", query, 2, rerank=RERANKER)
    assert hits.text.tolist() == [pool.text[r.index] for r in direct.results] == via_engine.text.tolist()
    assert hits.score.tolist() == pytest.approx([r.relevance_score for r in direct.results], abs=1e-4)
    assert hits.similarity.tolist() == pytest.approx([pool.score[r.index] for r in direct.results], abs=1e-4)

    with capture_output():
        reply = ip.run_cell_magic("chat", f"-m {SMOL} --docs ranked -k 2 --rerank {RERANKER} --temperature 0 "
                                  "--num-predict 8", query)
    assert reply.sources.text.tolist() == hits.text.tolist() and "similarity" in reply.sources.columns
    with pytest.raises(Exception, match="--rerank goes with --docs"):
        ip.run_cell_magic("chat", f"--rerank {RERANKER}", "hello")
