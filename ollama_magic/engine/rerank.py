"""Reranking: how relevant each document is to a query, by one of two kinds of model.

A cross-encoder (a GGUF llama.cpp pools with RANK: ``GGUFInfo.is_reranker``) reads query and document
together and its classifier's first output is the score, unbounded, exactly as llama-server's
``/v1/rerank`` gives it: the pair is laid out by llama-server's own rule (``format_prompt_rerank`` in
``tools/server/server-common.cpp``): the GGUF's ``rerank`` template when it has one, else
``[BOS] query [EOS] [SEP] document [EOS]``, each special token only where the vocabulary says to add it
(a RoBERTa-style reranker: ``<s>query</s></s>document</s>``; a BERT WordPiece one: ``[CLS]query[SEP]document``).

Any chat model ranks too (llama-server cannot): the score is the probability it gives "yes" rather than
"no" to :data:`RELEVANCE_PROMPT`, from the logits (``Engine.classify``), one pass per document. The query
comes before the document in that prompt, so every document's prompt starts with the same tokens (the
template's header, the instruction and the query) and the decoder's prefix sharing reads them once.

Bounds are checked here, before llama.cpp sees anything: at least one document and at most
:data:`MAX_DOCUMENTS`, ``top_n`` >= 1, and a pair longer than the context either has its document cut
(``truncate``, the default, as llama-server's embeddings do) or is refused.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import llama_cpp

from ..errors import InvalidRequest
from ..types import RerankResponse, RerankResult
from .llama_context import EmbeddingContext

#: documents one request may rank (each is a decode's worth of work)
MAX_DOCUMENTS = 1000
#: the chat-model path's prompt: the query first, so it is the shared prefix of every document's prompt
RELEVANCE_PROMPT = ("Judge whether a document is relevant to a search query: does it contain the "
                    "information the query asks for? Answer with one word, yes or no.\n\n"
                    "Query: {query}\n\nDocument: {document}\n\nIs the document relevant to the query?")
#: the labels the chat-model path scores: relevance is P(yes) / (P(yes) + P(no))
LABELS = ("yes", "no")
#: tokens kept free after a chat prompt: the label, and what a template's re-tokenization may add
LABEL_ROOM = 8

__all__ = ["LABELS", "MAX_DOCUMENTS", "RELEVANCE_PROMPT", "check_rerank", "cut_document", "pair_tokens",
           "ranked", "relevance_prompt"]


def check_rerank(query: Any, documents: Any, top_n: Any) -> list[str]:
    """The documents as a list, refused when the request could not be ranked."""
    if not isinstance(query, str) or not query:
        raise InvalidRequest("query must be a non-empty string")
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise InvalidRequest("documents must be a list of strings")
    docs = list(documents)
    if not docs:
        raise InvalidRequest("documents must be a non-empty list of strings")
    if len(docs) > MAX_DOCUMENTS:
        raise InvalidRequest(f"too many documents: {len(docs)}; at most {MAX_DOCUMENTS} per request")
    if not all(isinstance(doc, str) for doc in docs):
        raise InvalidRequest("every document must be a string")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidRequest(f"top_n must be a positive integer, not {top_n!r}")
    return docs


def ranked(model: str, scores: Sequence[float], documents: Sequence[str], top_n: int | None,
           prompt_eval_count: int = 0) -> RerankResponse:
    """The response: the ``top_n`` best documents, highest score first (ties keep the given order)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_n]
    return RerankResponse(model=model, prompt_eval_count=prompt_eval_count, results=[
        RerankResult(index=i, relevance_score=float(scores[i]), document=documents[i]) for i in order])


def pair_tokens(ectx: EmbeddingContext, query: str, document: str, truncate: bool) -> list[int]:
    """A cross-encoder's input for one pair, as llama-server lays it out, fitted to one decode."""
    limit = min(ectx.n_ctx, ectx.n_batch)  # a sequence must fit one decode (the embedder's rule)
    template = llama_cpp.llama_model_chat_template(ectx.model, b"rerank")
    if template:
        def render(doc: str) -> list[int]:
            text = template.decode("utf-8").replace("{query}", query).replace("{document}", doc)
            return ectx.tokenize(text.encode("utf-8"), add_bos=False, special=True)

        tokens = render(document)
        if len(tokens) <= limit:
            return tokens
        room = limit - len(render(""))
        if not truncate or room < 1:
            raise _too_long(len(tokens), limit, room)
        doc = ectx.tokenize(document.encode("utf-8"), add_bos=False, special=False)
        while room > 0:  # cut text may re-tokenize a little longer inside the template: cut again
            tokens = render(ectx.detokenize(doc[:room]).decode("utf-8", errors="ignore"))
            if len(tokens) <= limit:
                return tokens
            room -= len(tokens) - limit
        raise _too_long(len(tokens), limit, room)
    vocab = ectx.vocab
    eos = llama_cpp.llama_vocab_eos(vocab)
    if eos == llama_cpp.LLAMA_TOKEN_NULL:
        eos = llama_cpp.llama_vocab_sep(vocab)
    head = [llama_cpp.llama_vocab_bos(vocab)] if llama_cpp.llama_vocab_get_add_bos(vocab) else []
    head += ectx.tokenize(query.encode("utf-8"), add_bos=False, special=False)
    head += [eos] if llama_cpp.llama_vocab_get_add_eos(vocab) else []
    head += [llama_cpp.llama_vocab_sep(vocab)] if llama_cpp.llama_vocab_get_add_sep(vocab) else []
    tail = [eos] if llama_cpp.llama_vocab_get_add_eos(vocab) else []
    doc = ectx.tokenize(document.encode("utf-8"), add_bos=False, special=False)
    room = limit - len(head) - len(tail)
    if len(doc) > room:
        if not truncate or room < 1:
            raise _too_long(len(head) + len(doc) + len(tail), limit, room)
        doc = doc[:room]
    return head + doc + tail


def _too_long(tokens: int, limit: int, room: int) -> InvalidRequest:
    if room < 1:
        return InvalidRequest(f"the query alone fills the context ({limit} tokens): shorten it or raise num_ctx")
    return InvalidRequest(f"a query and document take {tokens} tokens, more than the context holds ({limit}): "
                          "send shorter documents, raise num_ctx, or let them be cut (truncate: true)")


def relevance_prompt(query: str, document: str) -> str:
    """The chat-model path's user message for one document."""
    return RELEVANCE_PROMPT.format(query=query, document=document)


def cut_document(tokenize: Callable[[str], list[int]], detokenize: Callable[[list[int]], str],
                 prompt_tokens: Callable[[str], int], query: str, document: str, n_ctx: int,
                 truncate: bool) -> str:
    """The document, cut so its chat prompt (``prompt_tokens`` counts a rendered one) and a label fit
    ``n_ctx``; refused instead when ``truncate`` is off. The query is never cut."""
    room = n_ctx - LABEL_ROOM - prompt_tokens(relevance_prompt(query, ""))
    doc = tokenize(document)
    if len(doc) <= room:
        return document
    if not truncate or room < 1:
        raise _too_long(len(doc) + n_ctx - room, n_ctx, room)
    return detokenize(doc[:room])
