"""``--docs NAME[,NAME] [-k K] [--rerank MODEL]``: the K chunks of those ``%ollama learn`` indexes nearest to the message go
in front of it, numbered, fitted to the model's context; the reply shows them as a collapsed "sources"
list its ``[n]`` marks point to, and keeps them in ``reply.sources`` (a DataFrame).

With ``--context``/``--vars`` the sources and the notebook context share one budget (``context.py``:
``CONTEXT_SHARE`` of the context): the sources take at most ``DOCS_PART`` of it, the notebook context
what they left, so the two together never crowd out the thread and the reply."""

from __future__ import annotations

import argparse
from typing import Any

from ...errors import InvalidRequest
from ..chat import ChatTurn
from .base import Cell, Feature

#: chunks retrieved when -k is not given: small models have small contexts
DEFAULT_K = 4


def index_names(text: str) -> list[str]:
    found = [n.strip() for n in text.split(",") if n.strip()]
    if not found:
        raise argparse.ArgumentTypeError(f"expected index names such as docs or docs,notes, got {text!r}")
    return found


class Docs(Feature):
    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--docs", type=index_names, metavar="NAME[,NAME]",
                            help="answer from these %%ollama learn indexes: the nearest chunks go with the message, "
                            "numbered; the reply lists them as sources (reply.sources). With --context/--vars "
                            "they share one budget (half the context): the sources take at most half of it")
        parser.add_argument("-k", type=int, default=None, metavar="K",
                            help=f"with --docs: how many chunks to retrieve (default {DEFAULT_K})")
        parser.add_argument("--rerank", metavar="MODEL", default=None,
                            help="with --docs: reorder a larger pool of candidates with this model (a "
                            "cross-encoder, or any chat model) before they enter the prompt")

    def check(self, args: argparse.Namespace) -> None:
        if args.docs is None:
            if args.k is not None or args.rerank is not None:
                raise InvalidRequest(f"{'-k' if args.k is not None else '--rerank'} goes with --docs")
            return
        if args.k is not None and args.k < 1:
            raise InvalidRequest(f"-k must be 1 or more, not {args.k}")
        clashing = [flag for flag, given in (("--over", args.over is not None), ("--choices", args.choices is not None))
                    if given]
        if clashing:
            raise InvalidRequest(f"--docs answers one message: it cannot be combined with {', '.join(clashing)}")

    def apply(self, turn: ChatTurn, args: argparse.Namespace, cell: Cell) -> None:
        if args.docs is None:
            return
        from ...knowledge.search import reranker
        from ..context import context_budget, docs_budget, token_counter

        rerank = reranker(cell.session.backend, args.rerank) if args.rerank else None
        with_context = bool(getattr(args, "context", 0) or getattr(args, "vars", None))
        budget = docs_budget(context_budget(cell.session.backend, cell.model, cell.options), with_context=with_context)
        message = turn.text
        turn.text, args.docs_sources = retrieve_into(cell, message, args.docs, args.k or DEFAULT_K, rerank,
                                                     budget=budget)
        if with_context:  # what the sources took of the budget --context gets next
            count = token_counter(cell.session.backend, cell.model)
            args.docs_tokens = count(turn.text) - count(message)

    def after(self, reply: Any, args: argparse.Namespace, cell: Cell) -> None:
        sources = getattr(args, "docs_sources", None)
        if sources is not None and hasattr(reply, "model"):  # a ChatReply (not -f json's parsed object)
            reply.sources = sources


def retrieve_into(cell: Cell, message: str, names: list[str], k: int,
                  rerank: Any = None, *, budget: int | None = None) -> tuple[str, Any]:
    """The message with the retrieved chunks in front, and the table of those that fit ``budget`` tokens
    (default: the whole attached-material budget); ``rerank`` (``(query, texts) -> scores``) reorders the
    candidates before they are fitted."""
    from ...knowledge.ask import fit_sources
    from ...knowledge.search import search
    from ..context import context_budget, token_counter

    hits = search(cell.session.backend, names, message, k, rerank=rerank)
    count = token_counter(cell.session.backend, cell.model)
    if budget is None:
        budget = context_budget(cell.session.backend, cell.model, cell.options)
    return fit_sources(message, hits, count, budget)


FEATURE = Docs()

__all__ = ["DEFAULT_K", "FEATURE", "retrieve_into"]
