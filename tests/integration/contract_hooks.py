"""schemathesis hooks for tests/integration/test_server_contract.py (loaded through SCHEMATHESIS_HOOKS).

Generated requests keep every field schemathesis draws but two: the model of an inference route is one
that is installed (a random name only ever reaches the 400/404 path, never the engine), and how much
they may generate: 2 tokens at most, so a run over the real models stays bounded (an unset
num_predict would decode up to num_ctx). Routes that change the store keep their random names."""

from __future__ import annotations

from typing import Any

import schemathesis

#: inference routes and the real model each one is sent to
REAL_MODEL = {"/api/generate": "gemma3:270m", "/api/chat": "gemma3:270m", "/api/show": "gemma3:270m",
              "/v1/chat/completions": "gemma3:270m", "/v1/completions": "gemma3:270m",
              "/api/embed": "all-minilm", "/api/embeddings": "all-minilm", "/v1/embeddings": "all-minilm"}
NATIVE_GENERATION = ("/api/generate", "/api/chat")
OPENAI_GENERATION = ("/v1/chat/completions", "/v1/completions")
MAX_TOKENS = 2


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
            options.pop("num_ctx", None)  # a new context size reloads the model: slow, and not the point here
            options["num_predict"] = MAX_TOKENS
        elif options is None or "options" not in body:
            body["options"] = {"num_predict": MAX_TOKENS}
    elif path in OPENAI_GENERATION:
        body["max_tokens"] = MAX_TOKENS
        body.pop("max_completion_tokens", None)
    return body
