"""Every environment variable ollama-magic reads, declared once: its name, type, default and meaning.

Ollama's ``envconfig`` is the model (``NumParallel = Uint("OLLAMA_NUM_PARALLEL", 1)``): each
variable is a callable that reads the environment when called, never at import, so a value set
after import (``monkeypatch.setenv``, ``%env`` in a notebook) takes effect at the next read. A value
that does not parse is Ollama's rule too: one warning ("invalid environment variable, using
default"), once per variable and value rather than once per request, and the default is used. A
bad setting must never turn every request into a 500 or stop the engine from starting.

``serve --help``, ``%ollama status`` and the README's table all list :data:`VARS`. This module
imports only our exceptions and leaf modules, so ``hosts`` (which must run before the ``ollama``
client is imported) can read ``OLLAMA_HOST`` through it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Generic, NamedTuple, Optional, TypeVar

from .durations import parse_duration
from .errors import InvalidRequest
from .options import OPTION_DEFAULTS

log = logging.getLogger("ollama_magic")

T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434
DEFAULT_ADDRESS = f"{DEFAULT_HOST}:{DEFAULT_PORT}"

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class Var(Generic[T]):
    """One variable. Call it for its value; ``raw()`` is the text as set (trimmed, as Ollama's
    ``Var`` trims spaces and quotes), for the few readers that parse a structured value themselves."""

    name: str
    default: T
    meaning: str
    #: how help and the README show the default, where ``str(default)`` would not say it
    default_text: str = ""
    #: never shown, only whether it is set (API keys, passwords)
    secret: bool = False

    def raw(self) -> str:
        return os.environ.get(self.name, "").strip().strip("\"'")

    def parse(self, text: str) -> T:
        """The value of a non-empty setting; ValueError (or InvalidRequest) when it is not one."""
        raise NotImplementedError

    def __call__(self) -> T:
        text = self.raw()
        if not text:
            return self.default
        try:
            return self.parse(text)
        except (ValueError, InvalidRequest) as exc:
            _warn_once(self, text, exc)
            return self.default

    def shown_default(self) -> str:
        return self.default_text or self.format(self.default)

    def format(self, value: T) -> str:
        return str(value)

    def shown(self) -> str:
        """The value in effect, as a listing shows it (a secret only says whether it is set)."""
        text = self.raw()
        if self.secret:
            return "(set)" if text else "(unset)"
        if not text:
            return self.shown_default()
        try:
            self.parse(text)
        except (ValueError, InvalidRequest):
            return f"{self.shown_default()} (ignoring {text!r})"
        return text


class String(Var[str]):
    def parse(self, text: str) -> str:
        return text

    def format(self, value: str) -> str:
        return value or "(unset)"


class Uint(Var[int]):
    """A positive integer (Ollama's ``Uint``; zero is refused too, as no count here means anything at 0)."""

    def parse(self, text: str) -> int:
        value = int(text, 10) if text.isdigit() else 0
        if value <= 0:
            raise ValueError("not a positive integer")
        return value


class Bytes(Var[int]):
    """A number of bytes, zero included (Ollama's ``Uint64``, as for ``OLLAMA_GPU_OVERHEAD``)."""

    def parse(self, text: str) -> int:
        if not text.isdigit():
            raise ValueError("not a whole number of bytes")
        return int(text, 10)


_TRUE = ("1", "t", "true", "yes", "on")
_FALSE = ("0", "f", "false", "no", "off")


class Bool(Var[bool]):
    """Go's ``strconv.ParseBool`` words, plus yes/no and on/off."""

    def parse(self, text: str) -> bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"not one of {', '.join(_TRUE + _FALSE)}")

    def format(self, value: bool) -> str:
        return "1" if value else "0"


class Switch(Var[str]):
    """A three-way setting: unset is ``auto``; :class:`Bool`'s words force it ``on`` or ``off``."""

    def parse(self, text: str) -> str:
        return "on" if Bool.parse(self, text) else "off"  # type: ignore[arg-type] - reads only text


@dataclass(frozen=True, eq=False)
class Choice(Var[str]):
    """One of a fixed set of words, compared lower-cased (Ollama lower-cases OLLAMA_KV_CACHE_TYPE)."""

    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> str:
        if text.lower() not in self.choices:
            raise ValueError(f"not one of {', '.join(self.choices)}")
        return text.lower()


class Duration(Var[Optional[float]]):
    """Seconds, or None for forever (a negative duration): Go durations or plain seconds, read by the
    same parser as a request's ``keep_alive``."""

    def parse(self, text: str) -> float | None:
        return parse_duration(text)


def _warn_once(var: Var, text: str, exc: Exception) -> None:
    with _warned_lock:
        if (var.name, text) in _warned:
            return
        _warned.add((var.name, text))
    log.warning("invalid environment variable %s=%r (%s): using the default, %s", var.name, text,
                exc, var.shown_default())


# ---- the variables ------------------------------------------------------------------------------
# Ollama's own first (same names, same meaning), then ours, then other programs' that we read.

host = String("OLLAMA_HOST", DEFAULT_ADDRESS,
              "where serve listens and clients connect (host:port; 0.0.0.0:11434 for every interface)")
models = String("OLLAMA_MODELS", "", "the model store (Ollama's layout)", default_text="<data dir>/models")
keep_alive = Duration("OLLAMA_KEEP_ALIVE", 300.0,
                      "how long a model stays loaded after a request (Go duration or seconds; negative: forever)",
                      default_text="5m")
max_loaded_models = Uint("OLLAMA_MAX_LOADED_MODELS", 3,
                         "models loaded at once; beyond it the least recently used idle one is unloaded")
num_parallel = Uint("OLLAMA_NUM_PARALLEL", 4, "requests each model decodes together (its context holds num_ctx each)")
max_queue = Uint("OLLAMA_MAX_QUEUE", 512, "requests that may wait for a busy model; one more is a 503")
context_length = Uint("OLLAMA_CONTEXT_LENGTH", int(OPTION_DEFAULTS["num_ctx"]),
                      "num_ctx when neither the request nor the Modelfile sets it (capped at the model's own)")
flash_attention = Switch("OLLAMA_FLASH_ATTENTION", "auto",
                         "flash attention: 1 on, 0 off; unset, llama.cpp decides per model and device (`-fa auto`)")
kv_cache_type = Choice("OLLAMA_KV_CACHE_TYPE", "f16",
                       "the K/V cache's type: f16, q8_0 or q4_0 (quantized needs flash attention, else f16)",
                       choices=("f16", "q8_0", "q4_0"))
origins = String("OLLAMA_ORIGINS", "", "more browser origins the server allows (comma-separated, `*` wildcards)")
no_prune = Bool("OLLAMA_NOPRUNE", False, "never remove unused blobs (at serve's start, or when create replaces a model)")
api_key = String("OLLAMA_MAGIC_API_KEY", "",
                 "when set, serve requires `Authorization: Bearer <key>`; `%ollama connect` sends it", secret=True)
max_body = Uint("OLLAMA_MAGIC_MAX_BODY", 100 << 20, "the largest JSON request body, in bytes; a larger one is a 413",
                default_text=str(100 << 20) + " (100 MiB)")
metrics = Bool("OLLAMA_MAGIC_METRICS", False,
               "1: serve Prometheus metrics at `/metrics` (behind the API key when one is set); off, as Ollama has none")
max_images = Uint("OLLAMA_MAGIC_MAX_IMAGES", 16, "images one request may carry")
extra_buffers = Bool("OLLAMA_MAGIC_EXTRA_BUFFERS", False,
                     "1: load weights into llama.cpp's extra CPU buffer types even on a native AMX build "
                     "(0: automatic, off where they crash)")
rpc = String("OLLAMA_MAGIC_RPC", "", "llama.cpp RPC workers (`ollama-magic rpc-server`) whose devices the engine uses: "
             "host:port,host:port (read once, when the engine first lists devices)")
conversations = String("OLLAMA_MAGIC_CONVERSATIONS", "", "where `%%chat` keeps each notebook's conversation",
                       default_text="<data dir>/conversations")
column_cache = String("OLLAMA_MAGIC_CACHE", "", "the column cache's SQLite file (`%chat --over` answers, `%embed` vectors)",
                      default_text="<data dir>/column-cache.sqlite")
column_cache_size = Bytes("OLLAMA_MAGIC_CACHE_SIZE", 1 << 30,
                          "the column cache's limit in bytes; past it the least recently used entries go",
                          default_text=str(1 << 30) + " (1 GiB)")
indexes = String("OLLAMA_MAGIC_INDEXES", "", "where `%ollama learn` keeps its indexes (one LanceDB table per name)",
                 default_text="<data dir>/indexes")
responses = String("OLLAMA_MAGIC_RESPONSES", "", "the SQLite file of stored `/v1/responses` (`store`, `previous_response_id`)",
                   default_text="<data dir>/responses.sqlite")
responses_max = Uint("OLLAMA_MAGIC_RESPONSES_MAX", 10000, "stored responses kept; past it the oldest go")
responses_max_age = Duration("OLLAMA_MAGIC_RESPONSES_MAX_AGE", 30 * 86400.0,
                             "how long a stored response is kept (Go duration or seconds; negative: forever)",
                             default_text="720h")
registry_auth = String("OLLAMA_MAGIC_REGISTRY_AUTH", "", "user:password for registries that ask (pull, push)",
                       secret=True)
xdg_data_home = String("XDG_DATA_HOME", "",
                       "on Linux, `<data dir>` is `$XDG_DATA_HOME/ollama-magic`", default_text="~/.local/share")
gpu_overhead = Bytes("OLLAMA_GPU_OVERHEAD", 0, "bytes the memory planner leaves free on every GPU or RPC device")
jpy_session_name = String("JPY_SESSION_NAME", "",
                          "the notebook's path, set by Jupyter Server: names the notebook's conversation")

#: every variable, in the order listings show them
VARS: tuple[Var, ...] = (host, models, keep_alive, max_loaded_models, num_parallel, max_queue, context_length,
                         flash_attention, kv_cache_type, origins, no_prune, api_key, max_body, metrics, max_images,
                         extra_buffers, rpc, conversations, column_cache, column_cache_size, indexes, responses,
                         responses_max, responses_max_age, registry_auth,
                         gpu_overhead, xdg_data_home, jpy_session_name)


class EnvVar(NamedTuple):
    """One row of :func:`as_map` (Ollama's ``EnvVar``): the value as shown, never a secret's."""

    name: str
    value: str
    default: str
    meaning: str


def as_map() -> dict[str, EnvVar]:
    """Every variable with its value now (Ollama's ``AsMap``)."""
    return {v.name: EnvVar(v.name, v.shown(), v.shown_default(), v.meaning) for v in VARS}


def listing(indent: str = "  ") -> str:
    """Two lines per variable: its name and value now, then its meaning and default (``serve --help``,
    ``%ollama status``)."""
    width = max(len(v.name) for v in VARS) + 2
    lines = []
    for v in VARS:
        value = v.shown()
        if v.secret or value == "(unset)" or (v.raw() and value != v.raw()):
            note = ""  # nothing to add, or the value already says it is the default (ignoring a bad one)
        else:
            note = f"  (default {v.shown_default()})" if v.raw() else "  (default)"
        lines += [f"{indent}{v.name:<{width}}{value}{note}", f"{indent}{'':<{width}}{v.meaning}"]
    return "\n".join(lines)


def help_epilog() -> str:
    """``ollama-magic serve --help``'s closing part: every variable, its value now and its meaning."""
    return "environment variables (the value now, then what it does):\n" + listing()


def markdown_table() -> str:
    """The README's table (``python -m ollama_magic.envconfig`` prints it)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for v in VARS:
        meaning = v.meaning.replace("|", "\\|")
        lines.append(f"| `{v.name}` | `{v.shown_default()}` | {meaning} |")
    return "\n".join(lines)


__all__ = ["DEFAULT_ADDRESS", "DEFAULT_HOST", "DEFAULT_PORT", "VARS", "Bool", "Choice", "Duration", "EnvVar",
           "String", "Switch", "Uint", "Var", "as_map", "listing", "markdown_table"]

if __name__ == "__main__":
    print(markdown_table())
