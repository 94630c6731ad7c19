"""``%%chat``, ``%embed`` and ``%ollama``: flags in, calls on the session's backend, results out.

Nothing here decides how a model is run or a conversation kept; that lives in chat.py,
conversations.py, embeddings.py and the backend. User mistakes become one ``UsageError`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, needs_local_scope, no_var_expand
from traitlets import Bool, Float

from ..defaults import DEFAULT_CHAT_MODEL
from ..errors import OllamaMagicError
from .arguments import HelpShown, UsageParser, leading_flags, split_line
from .chat import ChatTurn, chat_turn, interpolate
from .features import FEATURES, NOT_ANSWERED, Cell
from .session import NotebookSession
from .verbs import run as run_verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object such as \'{"top_k": 20}\'')
    return value


def chat_parser() -> UsageParser:
    p = UsageParser(prog="%%chat", description="Talk to a model; the cell (or the rest of the line) is your message. "
                "{name} fills in a notebook variable; {{ and }} are literal braces.", add_help=True)
    p.add_argument("-m", "--model", help=f"model (default: %%ollama use, else {DEFAULT_CHAT_MODEL})")
    p.add_argument("-t", "--thread", default="main", help="conversation thread of this notebook (default: main)")
    p.add_argument("-s", "--system", help="system message for the thread")
    p.add_argument("--temperature", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-predict", type=int, help="maximum tokens in the answer")
    p.add_argument("--no-history", action="store_true", help="send only this message; record nothing")
    p.add_argument("--new", action="store_true", help="start the thread afresh")
    p.add_argument("-o", "--output", metavar="VAR", help="also store the reply in this variable")
    p.add_argument("--options", type=_json_object, default={}, help='model options as JSON: \'{"top_k": 20}\'')
    p.add_argument("--think", nargs="?", const=True, type=_think_value, metavar="LEVEL",
                   choices=[{"true": True, "false": False}.get(c, c) for c in THINK_CHOICES],
                   help="let a thinking model think (low, medium, high, max; false: don't); the trace is shown "
                        "collapsed above the answer and kept in the thread")
    p.add_argument("--dry-run", action="store_true", help="show the prompt the model would read; run nothing")
    p.add_argument("--logprobs", nargs="?", const=0, type=int, choices=range(21), metavar="N",
                   help="keep the reply's token probabilities as a DataFrame in reply.logprobs, with the N "
                        "likeliest alternatives of each token (0-20, default 0)")
    for feature in FEATURES:
        feature.add_flags(p)
    p.add_argument("message", nargs="?", help="the message (line form: everything after the flags, as written)")
    return p


THINK_CHOICES = ("true", "false", "low", "medium", "high", "max")


def _think_value(text: str) -> bool | str:
    if text not in THINK_CHOICES:
        raise argparse.ArgumentTypeError(f"invalid level {text!r}: use one of {', '.join(THINK_CHOICES)}")
    return {"true": True, "false": False}.get(text, text)


def embed_parser() -> UsageParser:
    p = UsageParser(prog="%embed", description="Embed texts into a DataFrame: EXPR is a str, a list of str, a "
                "Series or DataFrame[column]; %%embed takes one text per non-empty line.")
    p.add_argument("-m", "--model", help="embedding model (default: all-minilm)")
    p.add_argument("-o", "--output", metavar="VAR", help="also store the DataFrame in this variable")
    p.add_argument("-c", "--column", help="the text column when EXPR is a DataFrame")
    p.add_argument("--wide", action="store_true", help="one column per dimension instead of an array column")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the column cache")
    p.add_argument("--refresh", action="store_true", help="embed every text again, overwriting its cached vector")
    p.add_argument("expr", nargs="?", help="a Python expression (everything after the flags, as written)")
    return p


def _image_arg(value: str, namespace: dict[str, Any]) -> Any:
    """Kept for callers of the old name: ``features.image.image_arg``."""
    from .features.image import image_arg

    return image_arg(value, namespace)


@magics_class
class OllamaMagics(Magics):
    stream = Bool(True, help="Show tokens as they arrive (False: only the finished reply).").tag(config=True)
    update_interval = Float(0.1, help="Seconds between live updates of a streaming reply.").tag(config=True)

    def __init__(self, shell: InteractiveShell, session: NotebookSession | None = None) -> None:
        super().__init__(shell)
        self.session = session or NotebookSession(shell)

    # ---- %%chat ------------------------------------------------------------------------------------

    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def chat(self, line: str, cell: str | None = None, local_ns: dict[str, Any] | None = None) -> Any:
        """Talk to a local model. See ``%%chat --help``."""
        return self._guard(lambda: self._chat(line, cell, local_ns))

    def _chat(self, line: str, cell: str | None, local_ns: dict[str, Any] | None) -> Any:
        parser = chat_parser()
        flags, message = leading_flags(line, parser)
        args = parser.parse_args(split_line(flags))
        text = cell if cell is not None else message
        if cell is not None and message:
            raise UsageError("%%chat takes its message from the cell; put nothing after the flags")
        if not text.strip():
            raise UsageError("nothing to say: write the message in the cell (or after %chat)")
        namespace = {**self.shell.user_ns, **(local_ns or {})}
        options = dict(args.options)
        for key, value in (("temperature", args.temperature), ("seed", args.seed), ("num_predict", args.num_predict)):
            if value is not None:
                options[key] = value
        model = args.model or self.session.chat_model
        cell_info = Cell(self.session, self.shell, text, model, options, namespace, local_ns)
        for feature in FEATURES:
            feature.check(args)
        for feature in FEATURES:
            if (answer := feature.answer(args, cell_info)) is not NOT_ANSWERED:
                return self._keep(args, answer)
        turn = ChatTurn(text=interpolate(text, namespace), model=model, thread=args.thread, system=args.system,
                        history=not args.no_history, new=args.new, options=options, think=args.think,
                        dry_run=args.dry_run, logprobs=args.logprobs)
        for feature in FEATURES:
            feature.apply(turn, args, cell_info)
        reply = chat_turn(self.session, turn, live=self.stream, interval=self.update_interval,
                          notice=lambda msg: print(msg, file=sys.stderr))
        for feature in FEATURES:
            feature.after(reply, args, cell_info)
        return self._keep(args, reply)

    def _keep(self, args: argparse.Namespace, value: Any) -> Any:
        """``-o VAR``: the cell's value also goes into a variable."""
        if args.output:
            self.shell.user_ns[args.output] = value
        return value

    # ---- %embed ------------------------------------------------------------------------------------

    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def embed(self, line: str, cell: str | None = None, local_ns: dict[str, Any] | None = None) -> Any:
        """Embed texts into a pandas DataFrame. See ``%embed --help``."""
        return self._guard(lambda: self._embed(line, cell, local_ns))

    def _embed(self, line: str, cell: str | None, local_ns: dict[str, Any] | None) -> Any:
        from .embeddings import embed_frame

        parser = embed_parser()
        flags, expr = leading_flags(line, parser)
        args = parser.parse_args(split_line(flags))
        if cell is not None:
            if expr:
                raise UsageError("%%embed takes its texts from the cell, one per line; put no expression after the flags")
            value: Any = [text for text in (t.strip() for t in cell.splitlines()) if text]
        elif not expr:
            raise UsageError("what should be embedded? %embed EXPR (a str, a list of str, a Series or a DataFrame column)")
        else:
            try:
                value = eval(expr, self.shell.user_ns, local_ns)  # noqa: S307 - the user's own expression
            except Exception as exc:  # noqa: BLE001 - shown as one line
                raise UsageError(f"cannot evaluate {expr!r}: {type(exc).__name__}: {exc}") from None
        model = args.model or self.session.embed_model
        self.session.prepare(model, notice=lambda msg: print(msg, file=sys.stderr))
        frame = embed_frame(self.session.backend, value, model=model,
                            column=args.column, wide=args.wide, batch_size=args.batch_size,
                            cache=not args.no_cache, refresh=args.refresh)
        if args.output:
            self.shell.user_ns[args.output] = frame
        return frame

    # ---- %ollama -----------------------------------------------------------------------------------

    @no_var_expand
    @line_magic
    def ollama(self, line: str) -> Any:
        """Manage models, threads, the backend and the HTTP server. ``%ollama help`` lists the verbs."""
        return self._guard(lambda: run_verb(self.session, split_line(line), self.shell))

    # ---- errors ------------------------------------------------------------------------------------

    def _guard(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except HelpShown:
            return None
        except OllamaMagicError as exc:
            raise UsageError(str(exc)) from None


__all__ = ["OllamaMagics", "chat_parser", "embed_parser"]
