"""The Backend interface over an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp's
``llama-server``, llama-cpp-python's server, LM Studio, a hosted API), through the official ``openai``
client.

Answers come back as the ``ollama`` client's types (``ChatResponse``, ``ListResponse``,
``EmbedResponse``), so the magics and panels read them exactly as they read the in-kernel engine's.
OpenAI's API has no model management: those calls raise ``NotSupported``, one line naming what the
server lacks, instead of pretending.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Sequence

import httpx
import numpy as np
import ollama
import openai

from .errors import CANNOT_RERANK, CANNOT_SCORE_LABELS, InvalidRequest, NotFound, NotSupported, OllamaMagicError, RemoteError
from .formatting import now_rfc3339
from .names import normalize
from .options import check_options

#: Ollama option -> the OpenAI request field that means the same.
OPENAI_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "num_predict": "max_tokens",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
#: Sampling options OpenAI lacks but llama-server, llama-cpp-python's server and vLLM read from the
#: body under these names (sent as extra fields; a strict hosted API refuses them with a 400).
EXTRA_FIELDS = ("top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n")
#: Fixed when the server starts; ``num_ctx`` is still used by the notebook to fit the history.
SERVER_SIDE = ("num_ctx",)
LOAD_TIME = ("num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread", "num_keep")


def request_fields(options: Mapping[str, Any] | None, format: str | Mapping[str, Any] | None = None,
                   *, schema_form: str = "json_schema") -> tuple[dict[str, Any], dict[str, Any]]:
    """Ollama ``options`` and ``format`` as (OpenAI fields, extra body fields).

    ``format="json"`` is ``{"type": "json_object"}``; a schema is OpenAI's ``json_schema`` form, or
    (``schema_form="json_object"``) the ``{"type": "json_object", "schema": ...}`` form that
    llama-cpp-python's server takes instead."""
    checked = check_options(options, strict=False)
    fixed = [name for name in LOAD_TIME if name in checked]
    if fixed:
        raise InvalidRequest(f"{', '.join(fixed)}: set when an OpenAI-compatible server starts, not per request")
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in checked.items():
        if name == "num_predict" and value < 0:
            continue  # Ollama's "no limit" / "fill the context": leave it to the server
        if name == "seed" and value < 0:
            continue  # Ollama's "random"
        if name in OPENAI_FIELDS:
            fields[OPENAI_FIELDS[name]] = value
        elif name in EXTRA_FIELDS:
            extra[name] = value
    if format == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(format, Mapping):
        if schema_form == "json_object":
            fields["response_format"] = {"type": "json_object", "schema": dict(format)}
        else:
            fields["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "reply", "schema": dict(format)}}
    elif format not in (None, ""):
        raise InvalidRequest(f'invalid format {format!r}: use "json" or a JSON schema object')
    return fields, extra


def _message(exc: openai.APIStatusError) -> str:
    """The server's own words, on one line (some send tracebacks or pydantic's multi-line errors)."""
    text = " ".join(_raw_message(exc).split())
    return text if len(text) <= 400 else text[:399] + "…"


def _raw_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
    return exc.response.text.strip() or exc.response.reason_phrase


def translate(exc: openai.OpenAIError | httpx.HTTPError, host: str) -> OllamaMagicError:
    """The openai client's exceptions as ours (status codes kept)."""
    if isinstance(exc, openai.APIStatusError):
        message = _message(exc)
        error: OllamaMagicError
        if exc.status_code == 404:
            error = NotFound(message)
        elif exc.status_code in (400, 422):
            error = InvalidRequest(message)
        elif exc.status_code in (401, 403):
            error = RemoteError(f"{host} refused the request ({exc.status_code}: {message}); "
                                "give the key with --api-key-env VAR")
        else:
            error = RemoteError(f"{host} answered {exc.status_code}: {message}")
        error.status_code = exc.status_code
        return error
    return RemoteError(f"cannot reach the server at {host}: {exc}")


def _ollama_form(name: str) -> str | None:
    try:
        return normalize(name)
    except OllamaMagicError:
        return None  # ids such as "/models/x.gguf" or "org/Model-7B" only match exactly


def _normalised(vectors: list[list[float]]) -> list[list[float]]:
    """Unit length, as Ollama's /api/embed returns (not every OpenAI-compatible server does)."""
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).tolist()


class _ChatStream:
    """An OpenAI completion stream as Ollama chunks: one per content delta, then one ``done`` chunk
    carrying the finish reason and token counts. ``close()`` closes the HTTP response, which is how
    an OpenAI server learns to stop generating (Ctrl-C, the panel's Stop)."""

    def __init__(self, stream: Any, model: str, host: str, started: float, chat: bool) -> None:
        self._stream, self._model, self._host, self._started, self._chat = stream, model, host, started, chat
        self._chunks = self._convert()

    def __iter__(self) -> "_ChatStream":
        return self

    def __next__(self) -> Any:
        try:
            return next(self._chunks)
        except (openai.OpenAIError, httpx.HTTPError) as exc:  # httpx's own errors arrive mid-stream
            raise translate(exc, self._host) from None

    def _piece(self, text: str, **final: Any) -> Any:
        if self._chat:
            return ollama.ChatResponse(model=self._model, created_at=now_rfc3339(),
                                       message=ollama.Message(role="assistant", content=text), **final)
        return ollama.GenerateResponse(model=self._model, created_at=now_rfc3339(), response=text, **final)

    def _convert(self) -> Iterator[Any]:
        finish, usage = None, None
        for chunk in self._stream:
            usage = chunk.usage or usage
            for choice in chunk.choices[:1]:
                text = (choice.delta.content if self._chat else choice.text) or ""
                finish = choice.finish_reason or finish
                probs = ollama_logprobs(choice.logprobs) if self._chat else None
                if text or probs:
                    yield self._piece(text, done=False, **({"logprobs": probs} if probs else {}))
        yield self._piece("", **_final_fields(finish, usage, self._started))

    def close(self) -> None:
        self._chunks.close()
        self._stream.close()

    cancel = close


def ollama_logprobs(choice_logprobs: Any) -> list[Any] | None:
    """A chat choice's OpenAI ``logprobs`` as Ollama's ``logprobs`` entries (None when it has none)."""
    content = getattr(choice_logprobs, "content", None)
    if not content:
        return None
    from ollama import _types

    return [_types.Logprob(token=item.token, logprob=item.logprob,
                           top_logprobs=[_types.TokenLogprob(token=t.token, logprob=t.logprob)
                                         for t in item.top_logprobs or []] or None)
            for item in content]


def _final_fields(finish: str | None, usage: Any, started: float) -> dict[str, Any]:
    return {"done": True, "done_reason": {"length": "length"}.get(finish or "", "stop"),
            "total_duration": int((time.perf_counter() - started) * 1e9),
            "prompt_eval_count": getattr(usage, "prompt_tokens", None),
            "eval_count": getattr(usage, "completion_tokens", None)}


class OpenAIBackend:
    """Every Backend call sent to an OpenAI-compatible server (``base_url`` ends in ``/v1``)."""

    api = "OpenAI"

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float | None = None) -> None:
        self.host = base_url.rstrip("/")
        # The client insists on a key; local servers ignore the placeholder.
        self.client = openai.OpenAI(base_url=self.host, api_key=api_key or "not-needed",
                                    timeout=openai.DEFAULT_TIMEOUT if timeout is None else timeout, max_retries=0)
        self._served: list[str] | None = None
        self._schema_form = "json_schema"

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.host!r})"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except openai.OpenAIError as exc:
            raise translate(exc, self.host) from None

    def _unsupported(self, what: str) -> NotSupported:
        return NotSupported(f"{self.host} speaks OpenAI's /v1 API, which has no way to {what}; "
                            "do it on the server (it serves what it was started with)")

    # ---- models ----------------------------------------------------------------------------------

    def served(self, refresh: bool = False) -> list[str]:
        """The model ids the server answers to (``/v1/models``), cached until a miss."""
        if self._served is None or refresh:
            self._served = [m.id for m in self._call(self.client.models.list).data]
        return self._served

    def resolve(self, model: str) -> str:
        """``model`` as the server names it; a clear "not found" naming what it does serve."""
        for refresh in (False, True):
            served = self.served(refresh)
            if model in served:
                return model
            wanted = _ollama_form(model)
            for name in served:  # "all-minilm:latest" is the server's "all-minilm", as in Ollama
                if wanted is not None and _ollama_form(name) == wanted:
                    return name
        raise NotFound(f'model "{model}" not found on {self.host}; it serves: {", ".join(served) or "nothing"} '
                       "(choose one with %ollama use NAME)")

    def check(self) -> str:
        """A one-line description of the server; raises RemoteError when nothing answers."""
        served = self.served(refresh=True)
        return f"OpenAI API; models: {', '.join(served) or 'none'}"

    def list(self) -> ollama.ListResponse:
        models = self._call(self.client.models.list).data
        self._served = [m.id for m in models]
        return ollama.ListResponse(models=[
            ollama.ListResponse.Model(
                model=m.id,
                modified_at=datetime.fromtimestamp(m.created, timezone.utc) if getattr(m, "created", None) else None)
            for m in models
        ])

    def show(self, model: str) -> Any:
        self.resolve(model)
        raise self._unsupported(f"show a model's details (template, parameters, license) for {model}")

    def create(self, model: str, *, stream: bool = False, **fields: Any) -> Any:
        raise self._unsupported("create models")

    def pull(self, model: str, *, insecure: bool = False, stream: bool = False) -> Any:
        raise self._unsupported("pull models")

    def push(self, model: str, *, insecure: bool = False, stream: bool = False) -> Any:
        raise self._unsupported("push models")

    def copy(self, source: str, destination: str) -> Any:
        raise self._unsupported("copy models")

    def delete(self, model: str) -> Any:
        raise self._unsupported("delete models")

    def ps(self) -> Any:
        raise self._unsupported("list the models loaded in memory")

    def load(self, model: str, keep_alive: float | str | None = None) -> Any:
        raise self._unsupported("load models")

    def unload(self, model: str) -> bool:
        raise self._unsupported("unload models")

    # ---- inference -------------------------------------------------------------------------------

    def _complete(self, create: Any, model: str, chat: bool, stream: bool,
                  options: Mapping[str, Any] | None, format: Any, **request: Any) -> Any:
        name = self.resolve(model)
        started = time.perf_counter()
        for attempt in range(2):
            fields, extra = request_fields(options, format, schema_form=self._schema_form)
            try:
                if stream:
                    result = create(model=name, stream=True, stream_options={"include_usage": True},
                                    extra_body=extra or None, **fields, **request)
                    return _ChatStream(result, name, self.host, started, chat)
                result = create(model=name, extra_body=extra or None, **fields, **request)
                break
            except openai.APIStatusError as exc:
                # llama-cpp-python's server only knows {"type": "json_object", "schema": ...} (and says
                # so with a 500): switch this backend to that form once
                if (attempt == 0 and isinstance(format, Mapping) and self._schema_form == "json_schema"
                        and "json_schema" in _message(exc)):
                    self._schema_form = "json_object"
                    continue
                raise
        choice = result.choices[0]
        final = _final_fields(choice.finish_reason, result.usage, started)
        if chat:
            return ollama.ChatResponse(model=name, created_at=now_rfc3339(),
                                       message=ollama.Message(role="assistant", content=choice.message.content or ""),
                                       logprobs=ollama_logprobs(choice.logprobs), **final)
        return ollama.GenerateResponse(model=name, created_at=now_rfc3339(), response=choice.text or "", **final)

    def chat(self, model: str = "", messages: Sequence[Any] | None = None, *, stream: bool = False,
             options: Mapping[str, Any] | None = None, format: Any = None, logprobs: bool | None = None,
             top_logprobs: int | None = None, **kwargs: Any) -> Any:
        """``keep_alive``, ``think`` and ``tools`` have no meaning here and are ignored; ``logprobs``
        and ``top_logprobs`` are OpenAI's fields of the same names."""
        sent = [_openai_message(m if isinstance(m, Mapping) else m.model_dump(exclude_none=True))
                for m in messages or []]
        probs: dict[str, Any] = {}
        if logprobs:
            probs = {"logprobs": True, "top_logprobs": top_logprobs or 0}
        return self._call(self._complete, self.client.chat.completions.create, model, True, stream, options,
                          format, messages=sent, **probs)

    def generate(self, model: str = "", prompt: str | None = None, *, stream: bool = False,
                 options: Mapping[str, Any] | None = None, format: Any = None, **kwargs: Any) -> Any:
        """A raw completion (``/v1/completions``): the server applies no chat template."""
        return self._call(self._complete, self.client.completions.create, model, False, stream, options,
                          format, prompt=prompt or "")

    def fit_context(self, model: str, messages: Sequence[Any], **kwargs: Any) -> None:
        """OpenAI's API cannot render or count a prompt: None (the notebook estimates)."""
        return None

    def classify(self, model: str = "", prompt: str | None = None, *, choices: Sequence[str], **kwargs: Any) -> Any:
        """OpenAI's API returns a sampled reply's log probabilities, never a given label's: NotSupported."""
        raise NotSupported(CANNOT_SCORE_LABELS.format(host=self.host))

    def rerank(self, model: str, query: str, documents: Sequence[str], *, top_n: int | None = None,
               **kwargs: Any) -> Any:
        """``{base}/rerank`` (``/v1/rerank``: llama-server started with --reranking, an ollama-magic server,
        Jina- and Cohere-shaped servers); a server without it (404) or not ranking (501) -> NotSupported."""
        from .types import RerankResponse, RerankResult

        name = self.resolve(model)
        docs = list(documents)
        body: dict[str, Any] = {"model": name, "query": query, "documents": docs}
        if top_n is not None:
            body["top_n"] = top_n
        try:
            reply = self._call(self.client.post, "/rerank", body=body, cast_to=httpx.Response)
        except OllamaMagicError as exc:
            if exc.status_code not in (404, 501):
                raise
            raise NotSupported(CANNOT_RERANK.format(host=self.host, route="/v1/rerank")) from None
        data = reply.json()
        results = [RerankResult(index=r["index"], relevance_score=r["relevance_score"], document=docs[r["index"]])
                   for r in data.get("results", [])]
        usage = data.get("usage") or {}
        return RerankResponse(model=name, results=results, prompt_eval_count=usage.get("prompt_tokens") or 0)

    def embed(self, model: str = "", input: str | Sequence[str] = "", *, dimensions: int | None = None,
              **kwargs: Any) -> ollama.EmbedResponse:
        """Unit-length vectors, one per input, as Ollama gives. ``truncate`` is the server's setting."""
        name = self.resolve(model)
        texts = [input] if isinstance(input, str) else list(input)
        extra = {"dimensions": dimensions} if dimensions else {}
        result = self._call(self.client.embeddings.create, model=name, input=texts, encoding_format="float", **extra)
        vectors = [d.embedding for d in sorted(result.data, key=lambda d: d.index)]
        return ollama.EmbedResponse(model=name, embeddings=_normalised(vectors),
                                    prompt_eval_count=getattr(result.usage, "prompt_tokens", None))


def _openai_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A native message for /v1: its images become ``image_url`` parts with data URLs."""
    if not message.get("images"):
        return {"role": message["role"], "content": message.get("content") or ""}
    from .engine.images import data_url

    parts: list[dict[str, Any]] = [{"type": "text", "text": message.get("content") or ""}]
    parts += [{"type": "image_url", "image_url": {"url": data_url(image)}} for image in message["images"]]
    return {"role": message["role"], "content": parts}


__all__ = ["EXTRA_FIELDS", "OPENAI_FIELDS", "OpenAIBackend", "request_fields", "translate"]
