"""``%ollama learn`` (index files, a DataFrame column, this notebook's cells; --list, --show, --delete)
and ``%ollama search``: the notebook side of ``knowledge/``, which does the work."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ...errors import InvalidRequest
from ...knowledge.chunking import CHUNK_TOKENS, OVERLAP_TOKENS
from . import Text, parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..session import NotebookSession


@verb("learn", "NAME PATH|GLOB... | --over EXPR | --cells [--prune]: index texts for --docs and search; "
      "--list, --show NAME, --delete NAME")
def learn(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Any:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", nargs="?", help="the index (shared by every notebook under this name)")
        p.add_argument("paths", nargs="*", help="files and globs: .md .txt .rst .py .ipynb .csv .parquet .pdf")
        p.add_argument("--over", metavar="EXPR", help="a DataFrame column (its index is the source position)")
        p.add_argument("--cells", action="store_true", help="this notebook's executed cells and their text outputs")
        p.add_argument("--columns", metavar="A,B", help="csv/parquet: the columns to read (default: every text column)")
        p.add_argument("--size", type=int, default=CHUNK_TOKENS, help=f"chunk tokens (default {CHUNK_TOKENS})")
        p.add_argument("--overlap", type=int, default=OVERLAP_TOKENS,
                       help=f"tokens a chunk repeats of the one before (default {OVERLAP_TOKENS})")
        p.add_argument("--prune", action="store_true", help="drop the chunks of learned files that no longer exist")
        p.add_argument("--rebuild", action="store_true", help="start the index afresh from the sources named (e.g. with another -m model); "
                       "the old index stays until every chunk is embedded")
        p.add_argument("-m", "--model", help="embedding model (default: the session's, all-minilm)")
        p.add_argument("--list", action="store_true", help="every index: model, chunks, sources, bytes, updated")
        p.add_argument("--show", action="store_true", help="NAME's sources and their chunks")
        p.add_argument("--delete", action="store_true", help="remove index NAME")

    args = parse("learn", argv, setup)
    from ... import knowledge

    if args.list:
        return knowledge.list_indexes()
    if args.name is None:
        raise InvalidRequest("name the index: %ollama learn NAME PATH... (or --list)")
    if args.show:
        return knowledge.Index.open(args.name).sources()
    if args.delete:
        knowledge.delete_index(args.name)
        return Text(f"deleted index {args.name!r}")
    sources = _sources(args, shell, session)
    if not sources and not args.prune:
        raise InvalidRequest(f"nothing to learn: %ollama learn {args.name} PATH|GLOB..., --over EXPR or --cells")
    return knowledge.learn(session.backend, args.name, sources, model=args.model or session.embed_model,
                           size=args.size, overlap=args.overlap, prune=args.prune, rebuild=args.rebuild, progress=True)


def _sources(args: argparse.Namespace, shell: InteractiveShell | None, session: NotebookSession) -> list[Any]:
    from ...knowledge import sources as read

    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    found = [read.read_file(path, columns=columns) for path in read.expand(args.paths)] if args.paths else []
    namespace = getattr(shell, "user_ns", None) or {}
    if args.over:
        try:
            value = eval(args.over, dict(namespace))
        except Exception as exc:  # noqa: BLE001 - shown as one line
            raise InvalidRequest(f"--over {args.over}: {type(exc).__name__}: {exc}") from None
        found.append(read.from_column(args.over, value))
    if args.cells:
        # one source per notebook: two notebooks learning their cells into one index keep both
        found.append(read.from_cells(f"cells of {session.identity.label}", _cells(shell)))
    return found


def _cells(shell: InteractiveShell | None) -> list[tuple[int | None, str]]:
    """Every executed cell this kernel recorded (the extension's cell log, else IPython's history)."""
    from ..context import recent_cells

    if shell is None:
        raise InvalidRequest("--cells reads this notebook's cells: run it in IPython or Jupyter")
    return recent_cells(shell, 10**6)


@verb("search", "NAME[,NAME] QUERY [-k K] [--rerank MODEL]: the chunks of learned indexes nearest to QUERY (no chat model needed)")
def search(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Any:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("names", help="index name(s), comma-separated")
        p.add_argument("query", nargs="+")
        p.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
        p.add_argument("--rerank", metavar="MODEL", help="reorder a larger pool of candidates with this model "
                       "(a cross-encoder, or any chat model) before the best K are kept")

    args = parse("search", argv, setup)
    from ...knowledge.search import reranker
    from ...knowledge.search import search as find

    names = [n.strip() for n in args.names.split(",") if n.strip()]
    rerank = reranker(session.backend, args.rerank) if args.rerank else None
    return find(session.backend, names, " ".join(args.query), args.k, rerank=rerank)


__all__ = ["learn", "search"]
