"""schemathesis hooks for tests/integration/test_server_contract.py (loaded through SCHEMATHESIS_HOOKS).

Generated requests keep every field schemathesis draws but three: the model of an inference route is one
that is installed (a random name only ever reaches the 400/404 path, never the engine); how much they
may generate: 2 tokens at most, so a run over the real models stays bounded (an unset num_predict would
decode up to num_ctx); and the load-time options, which are fuzzed on purpose but from small sets of
values (each new combination reloads the model, and an unbounded num_ctx would allocate gigabytes):
zero, negative, tiny, huge and ordinary values of num_batch, num_ctx, num_thread, num_gpu and num_keep,
the values that once aborted the process (num_batch 0, a batch smaller than the slots). Routes that
change the store keep their random names."""

from __future__ import annotations

import itertools
import os
from typing import Any

import schemathesis

#: inference routes and the real model each one is sent to
REAL_MODEL = {"/api/generate": "gemma3:270m", "/api/chat": "gemma3:270m", "/api/show": "gemma3:270m",
              "/v1/chat/completions": "gemma3:270m", "/v1/completions": "gemma3:270m",
              "/api/classify": "smollm2:135m",
              "/api/embed": "all-minilm", "/api/embeddings": "all-minilm", "/v1/embeddings": "all-minilm",
              "/v1/responses": "smollm2:135m",
              "/v1/messages": "gemma3:270m", "/v1/messages/count_tokens": "gemma3:270m",
              **{path: "smollm2:135m" for path in ("/api/rerank", "/v1/rerank", "/v1/reranking", "/rerank",
                                                   "/reranking", "/v2/rerank")}}
#: documents a generated rerank request keeps (each is one scoring pass of the chat model)
MAX_RERANK_DOCUMENTS = 3
NATIVE_GENERATION = ("/api/generate", "/api/chat")
OPENAI_GENERATION = ("/v1/chat/completions", "/v1/completions")
MAX_TOKENS = 2
#: the values each load-time option is drawn from: the bad and the edge ones, and one ordinary value
LOAD_TIME_OPTIONS = {"num_ctx": (0, 1, 300, 2048), "num_batch": (-1, 0, 1, 2, 512),
                     "num_thread": (-1, 0, 1, 2, 100_000), "num_gpu": (-1, 0, 999),
                     "num_keep": (-1, 0, 4, 1_000_000)}
#: what the next request sends on top of what schemathesis drew, in turn, so that the few requests that
#: pass validation carry them: first those that once aborted the whole process (a batch smaller than
#: the slots: num_batch 0, 1 or 2 with the default 4 slots), then the other edges
LOAD_TIME_CASES = itertools.cycle([
    {"num_batch": 0}, {"num_batch": 2}, {"num_batch": -1, "num_ctx": 300}, {"num_ctx": 1},
    {"num_ctx": 0}, {"num_thread": 100_000}, {"num_gpu": 999, "num_keep": 1_000_000},
    {"num_thread": -1, "num_gpu": -1, "num_keep": -1}, {"num_batch": 1, "num_ctx": 2048},
])


def bounded_load_options(options: dict[str, Any]) -> None:
    """Each load-time option from its set (a value schemathesis drew picks one by its own value), then
    the next of LOAD_TIME_CASES over them. Deterministic: one worker draws the cases in order."""
    for name, values in LOAD_TIME_OPTIONS.items():
        drawn = options.get(name)
        if isinstance(drawn, int) and not isinstance(drawn, bool):
            options[name] = values[drawn % len(values)]
    options.update(next(LOAD_TIME_CASES))


@schemathesis.hook
def map_body(ctx: schemathesis.HookContext, body: Any) -> Any:
    path = ctx.operation.path if ctx.operation is not None else ""
    if not isinstance(body, dict):
        return body
    if path in REAL_MODEL and isinstance(body.get("model"), str):
        body["model"] = REAL_MODEL[path]
    if path in NATIVE_GENERATION:
        options = body.get("options")
        if isinstance(options, dict):
            bounded_load_options(options)
            options["num_predict"] = MAX_TOKENS
        elif options is None or "options" not in body:
            body["options"] = {"num_predict": MAX_TOKENS}
            bounded_load_options(body["options"])
    if "rerank" in path and isinstance(body.get("documents"), list):
        body["documents"] = body["documents"][:MAX_RERANK_DOCUMENTS]
    if path in ("/api/embed", "/api/embeddings", "/api/classify", "/api/rerank"):
        if not isinstance(body.get("options"), dict):
            body["options"] = {}
        bounded_load_options(body["options"])
    elif path in OPENAI_GENERATION:
        body["max_tokens"] = MAX_TOKENS
        body.pop("max_completion_tokens", None)
    elif path == "/v1/responses":
        body["max_output_tokens"] = MAX_TOKENS
    elif path == "/v1/messages":
        limit = body.get("max_tokens")  # 377276.0 is an int to the body's schema too
        if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > MAX_TOKENS:
            body["max_tokens"] = MAX_TOKENS  # 0, negatives and fractions keep their 400
    return body


#: ids of responses the test stored before the run (CONTRACT_RESPONSE_IDS), so that GET / DELETE
#: /v1/responses/{id} and its input_items reach the stored ones too, not only the 404 of a random id
STORED_RESPONSES = itertools.cycle([i for i in os.environ.get("CONTRACT_RESPONSE_IDS", "").split(",") if i] or [None])


@schemathesis.hook
def map_path_parameters(ctx: schemathesis.HookContext, path_parameters: Any) -> Any:
    stored = next(STORED_RESPONSES)
    if isinstance(path_parameters, dict) and "response_id" in path_parameters and stored:
        path_parameters["response_id"] = stored
    return path_parameters
