"""``ollama-magic``: the ollama CLI's verbs over our store (``list``, ``show``, ``create``, ``cp``, ``rm``,
``pull``, ``push``).

Every failure ends in one ``Error: ...`` line and a non-zero exit code; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from . import envconfig
from ._version import __version__
from .defaults import DEFAULT_CHAT_MODEL, EMBEDDED_MODELS, register_if_default, register_on_first_use, setup_models
from .engine.capabilities import capabilities
from .errors import InvalidModelName, InvalidRequest, ModelNotFound, NotFound, OllamaMagicError
from .formatting import EMPTY_STORE_HINT, PS_HEADER, ProgressBars, byte_progress, gpu_offload, human_bytes, model_rows, ps_rows, show_sections, table
from .hosts import env_host, ollama_host
from .names import ModelName
from .store import ModelStore
from .store.modelfile import read as read_modelfile
from .store.quantize import QUANTIZE_HELP
from .store.store import no_prune
from .types import CreateRequest, RunningModels


def cmd_list(store: ModelStore, args: argparse.Namespace) -> None:
    rows = [[r["name"], r["id"], r["size"], r["modified"]] for r in model_rows(store.list().models)]
    print(table(rows, ["NAME", "ID", "SIZE", "MODIFIED"]))
    if not rows:  # a fresh store: say how to get a model, not just a header
        print(EMPTY_STORE_HINT.format(cmd="ollama-magic"))


def cmd_show(store: ModelStore, args: argparse.Namespace) -> None:
    record = store.resolve(args.name, on_missing=register_if_default)
    resp = store.show_record(record, verbose=args.verbose)
    resp.capabilities = capabilities(record)
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            print(getattr(resp, flag))
            return
    sections = show_sections(resp)
    for title, rows in sections:
        print(f"  {title}")
        width = max((len(k) for k, _ in rows), default=0)
        for key, value in rows:
            print(f"    {key.ljust(width)}    {value}".rstrip())
        print()


def cmd_create(store: ModelStore, args: argparse.Namespace) -> None:
    if args.file:
        text, base_dir = read_modelfile(args.file)
    else:
        text, base_dir = f"FROM {args.from_}", Path.cwd()
    request = CreateRequest(modelfile=text, quantize=args.quantize)
    update, close = byte_progress("importing")
    bars = ProgressBars()  # a quantize's progress is a bar, as in Ollama's CLI; every other status a line
    try:
        for status in store.create(args.name, request, trusted=True, base_dir=base_dir, on_bytes=update,
                                   on_missing=register_if_default):
            close()
            bars(status)
    finally:
        close()
        bars.close()


def cmd_cp(store: ModelStore, args: argparse.Namespace) -> None:
    store.copy(args.source, args.destination, on_missing=register_if_default)
    print(f"copied '{args.source}' to '{args.destination}'")


def cmd_rm(store: ModelStore, args: argparse.Namespace) -> None:
    for name in args.names:
        store.delete(name)
        print(f"deleted '{name}'")


def cmd_setup(store: ModelStore, args: argparse.Namespace) -> None:
    from .engine import Engine

    with Engine(store) as engine:
        for _name, _outcome in setup_models(engine, args.names, ProgressBars):
            pass  # the progress lines said it


def cmd_pull(store: ModelStore, args: argparse.Namespace) -> None:
    from .engine import Engine

    with Engine(store) as engine:
        ProgressBars().follow(engine.pull(args.name, insecure=args.insecure, stream=True))


def cmd_push(store: ModelStore, args: argparse.Namespace) -> None:
    from .engine import Engine

    with Engine(store) as engine:
        ProgressBars().follow(engine.push(args.name, insecure=args.insecure, stream=True))


def _server_client():  # noqa: ANN202 - an ollama.Client
    import ollama

    return ollama.Client(host=ollama_host(), timeout=10)


def _server_unreachable(exc: Exception) -> OllamaMagicError:
    host = ollama_host()
    return OllamaMagicError(
        f"no Ollama-compatible server answers at {host} ({type(exc).__name__}); set OLLAMA_HOST to one. "
        "('ollama-magic run' loads its model in its own process and unloads it when it exits.)"
    )


def cmd_ps(store: ModelStore, args: argparse.Namespace) -> None:
    import httpx

    try:  # what client.ps() does, read into RunningModels so our server's GPU fields are kept
        running = _server_client()._request(RunningModels, "GET", "/api/ps")
    except (httpx.HTTPError, ConnectionError) as exc:
        raise _server_unreachable(exc) from None
    print(table(ps_rows(running.models), PS_HEADER))
    print(f"GPU offload: {gpu_offload(running.gpu_offload)}")


def cmd_stop(store: ModelStore, args: argparse.Namespace) -> None:
    import httpx

    try:
        _server_client().generate(model=args.name, keep_alive=0)
    except (httpx.HTTPError, ConnectionError) as exc:
        raise _server_unreachable(exc) from None


def cmd_cache(store: ModelStore, args: argparse.Namespace) -> None:
    """The column cache that ``%chat --over`` and ``%embed`` share (``%ollama cache`` in a notebook)."""
    from .store.column_cache import ColumnCache, normal_name

    with ColumnCache() as cache:
        if args.action == "clear":
            model = normal_name(args.model) if args.model else None
            print(f"removed {cache.clear(model)} cached entries" + (f" of {model}" if model else ""))
            return
        frame = cache.stats()
        print(f"{cache.path}: {human_bytes(cache.total_bytes())} of {human_bytes(cache.max_bytes)}")
        print(table(frame.astype(str).values.tolist(), [c.upper() for c in frame.columns]))


def cmd_run(store: ModelStore, args: argparse.Namespace) -> None:
    from .engine import Engine

    options = {k: v for k, v in (("seed", args.seed), ("temperature", args.temperature),
                                 ("num_predict", args.num_predict)) if v is not None}
    prompt = " ".join(args.prompt) if args.prompt else None
    _check_run_model(args.name, args.prompt)
    interactive = prompt is None and sys.stdin.isatty()
    if prompt is None and not interactive:
        prompt = sys.stdin.read()
    update, close = byte_progress(f"registering {args.name}")
    try:  # a fresh machine: say why the first run pauses, with progress
        register_on_first_use(store, args.name, lambda line: print(line, file=sys.stderr), update)
    finally:
        close()
    with Engine(store) as engine:
        try:
            store.resolve(args.name, on_missing=register_if_default)  # a clear "not found" before anything loads
        except ModelNotFound as exc:
            if not args.prompt:
                raise
            raise NotFound(f"{exc}{_model_first(args.name, args.prompt)}") from None
        history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
        while True:
            if interactive:
                try:
                    prompt = input(">>> ")
                except EOFError:
                    print()
                    return
                if prompt.strip() in ("/bye", "/exit"):
                    return
                if not prompt.strip():
                    continue
            history.append({"role": "user", "content": prompt or ""})
            reply, final = [], None
            for chunk in engine.chat(args.name, history, stream=True, options=options, format=args.format):
                print(chunk.message.content, end="", flush=True)
                reply.append(chunk.message.content)
                final = chunk
            print("\n" if interactive else "")
            history.append({"role": "assistant", "content": "".join(reply)})
            if args.verbose and final is not None:
                _print_stats(final)
            if not interactive:
                return


def _check_run_model(name: str, prompt: Sequence[str]) -> None:
    """As in Ollama, ``run``'s first word is the model (ours may be left out: the default model).
    A question put first (``run "why is the sky blue?"``) is the usual slip: one line saying how to
    ask it, not an "invalid model name" about a sentence."""
    try:
        ModelName.parse(name)
    except InvalidModelName:
        raise InvalidRequest(f'"{name}" is not a model name{_model_first(name, prompt)}') from None


def _model_first(name: str, prompt: Sequence[str]) -> str:
    question = shlex.quote(" ".join([name, *prompt]))
    return f": name the model first, e.g. ollama-magic run {DEFAULT_CHAT_MODEL} {question}"


def _print_stats(r) -> None:  # noqa: ANN001
    rate = r.eval_count / (r.eval_duration / 1e9) if r.eval_duration else 0.0
    prompt_rate = r.prompt_eval_count / (r.prompt_eval_duration / 1e9) if r.prompt_eval_duration else 0.0
    print(f"total duration:       {r.total_duration / 1e9:.3f}s", file=sys.stderr)
    print(f"load duration:        {r.load_duration / 1e9:.3f}s", file=sys.stderr)
    print(f"prompt eval count:    {r.prompt_eval_count} token(s)", file=sys.stderr)
    print(f"prompt eval rate:     {prompt_rate:.2f} tokens/s", file=sys.stderr)
    print(f"eval count:           {r.eval_count} token(s)", file=sys.stderr)
    print(f"eval rate:            {rate:.2f} tokens/s", file=sys.stderr)


def cmd_serve(store: ModelStore, args: argparse.Namespace) -> None:
    from .engine import Engine
    from .server.background import bind, make_server

    host, port = env_host()
    sock = bind(host, port)  # a busy port is one clear line, before anything loads
    if not no_prune():
        store.prune()  # as Ollama's serve does: what a crash (kill -9) left behind goes now
    with Engine(store) as engine:
        server = make_server(engine)
        shown = f"[{host}]" if ":" in host else host
        print(f"ollama-magic {__version__} serving models from {store.root} on http://{shown}:{port}", file=sys.stderr)
        server.run(sockets=[sock])  # uvicorn stops gracefully on SIGINT / SIGTERM


def cmd_rpc_server(store: ModelStore, args: argparse.Namespace) -> None:
    from .engine import rpc_server

    cache = Path(args.cache) if args.cache else None
    rpc_server.serve(args.host, args.port, args.threads, all_interfaces=args.all_interfaces,
                     with_cpu=args.with_cpu, cache_dir=cache)


class _Parser(argparse.ArgumentParser):
    """A verb's parser; with ``intermixed``, its flags may stand anywhere between and around its
    positionals (``run MODEL --num-predict 8 PROMPT``), which argparse's default parse refuses once
    the positionals have started."""

    intermixed = False
    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        if not self.intermixed or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls parse_known_args itself
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ollama-magic", description="Local LLM models in Ollama's layout.")
    parser.add_argument("--version", action="version", version=f"ollama-magic {__version__}")
    parser.add_argument("--models", metavar="DIR", help="model store root (default: $OLLAMA_MODELS or ours)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("list", aliases=["ls"], help="list installed models").set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="show a model's details")
    show.add_argument("name")
    show.add_argument("-v", "--verbose", action="store_true", help="include long metadata arrays")
    only = show.add_mutually_exclusive_group()
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        only.add_argument(f"--{flag}", action="store_true", help=f"print only the {flag}")
    show.set_defaults(func=cmd_show)

    create = sub.add_parser("create", help="create a model from a Modelfile or a GGUF file")
    create.add_argument("name")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", "--file", help="path to a Modelfile")
    source.add_argument("--from", dest="from_", help="a GGUF file, a safetensors directory or a model name")
    create.add_argument("-q", "--quantize", help=QUANTIZE_HELP)
    create.set_defaults(func=cmd_create)

    cp = sub.add_parser("cp", aliases=["copy"], help="copy a model")
    cp.add_argument("source")
    cp.add_argument("destination")
    cp.set_defaults(func=cmd_cp)

    rm = sub.add_parser("rm", aliases=["delete"], help="remove models")
    rm.add_argument("names", nargs="+")
    rm.set_defaults(func=cmd_rm)

    run = sub.add_parser("run", help="chat with a model in this process (interactive without PROMPT)")
    run.add_argument("name", nargs="?", default=DEFAULT_CHAT_MODEL, help=f"the model (default: {DEFAULT_CHAT_MODEL})")
    run.add_argument("prompt", nargs="*", help="the message; read from stdin when omitted and not a terminal")
    run.add_argument("--system", help="a system message")
    run.add_argument("--seed", type=int, help="make the answer reproducible")
    run.add_argument("--temperature", type=float)
    run.add_argument("--num-predict", dest="num_predict", type=int, help="at most this many tokens")
    run.add_argument("--format", choices=["json"], help="constrain the answer to JSON")
    run.add_argument("--verbose", action="store_true", help="print timings and token rates")
    run.set_defaults(func=cmd_run)
    run.intermixed = True

    sub.add_parser("serve", help="serve Ollama's REST API (and /v1) at $OLLAMA_HOST", epilog=envconfig.help_epilog(),
                   formatter_class=argparse.RawDescriptionHelpFormatter).set_defaults(func=cmd_serve)
    sub.add_parser("ps", help="models loaded by the server at $OLLAMA_HOST").set_defaults(func=cmd_ps)
    stop = sub.add_parser("stop", help="unload a model from the server at $OLLAMA_HOST")
    stop.add_argument("name")
    stop.set_defaults(func=cmd_stop)

    for verb, summary in (("pull", "pull a model from a registry (registry.ollama.ai, hf.co, host:port/ns/model)"),
                          ("push", "push a model to the registry its name names (host/namespace/model:tag)")):
        transfer = sub.add_parser(verb, help=summary)
        transfer.add_argument("name")
        transfer.add_argument("--insecure", action="store_true", help="plain http, no TLS")
        transfer.set_defaults(func=cmd_pull if verb == "pull" else cmd_push)

    rpc = sub.add_parser("rpc-server", help="lend this machine's devices to another machine's engine "
                         "(llama.cpp's RPC worker; no authentication: trusted networks only)")
    rpc.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on (default: 127.0.0.1)")
    rpc.add_argument("--port", type=int, default=50052, help="default: 50052")
    rpc.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                     help="threads for the CPU device (default: half the cores, as llama.cpp's rpc-server)")
    rpc.add_argument("--all-interfaces", action="store_true", help="allow --host 0.0.0.0")
    rpc.add_argument("--with-cpu", action="store_true", help="serve the CPU beside the GPUs (without GPUs it is served anyway)")
    rpc.add_argument("--cache", metavar="DIR", help="keep received weights here, so a reload does not resend them")
    rpc.set_defaults(func=cmd_rpc_server)

    cache = sub.add_parser("cache", help="the column cache of %%chat --over and %%embed: per model; or clear it")
    cache.add_argument("action", nargs="?", choices=["clear"])
    cache.add_argument("model", nargs="?", help="with clear: only this model's entries")
    cache.set_defaults(func=cmd_cache)

    setup = sub.add_parser("setup", help="register the embedded default models (idempotent)")
    setup.add_argument("names", nargs="*", help=f"default: {', '.join(EMBEDDED_MODELS)}; also: "
                       "tiny-vision (a plumbing fixture for images: smollm2 plus a projector of random weights)")
    setup.set_defaults(func=cmd_setup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    store = ModelStore(args.models)
    try:
        if args.func in (cmd_serve, cmd_ps, cmd_stop):
            env_host()  # a malformed OLLAMA_HOST is one line, before the ollama client trips on it at import
        args.func(store, args)
    except OllamaMagicError as exc:
        if args.debug:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.debug:
            raise
        print(f"Error: {exc.strerror}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
