"""A small evaluator for Go's ``text/template``, the language of Ollama's Modelfile TEMPLATEs.

It covers what chat templates use: text and actions with ``{{-``/``-}}`` trimming, comments, fields
(``.Messages``, ``$.System``, ``.Function.Name``), variables (``$x :=``, ``$x =``, ``$i, $m := range``),
pipelines with ``|``, parenthesised sub-pipelines, ``if``/``else if``/``else``, ``range`` (with
``else``, ``break``, ``continue``), ``with``/``else with``, and the functions ``and or not eq ne lt le
gt ge len index slice print printf println json html js urlquery currentDate yesterdayDate``.
Anything else (``define``, ``template``, ``block``, unknown functions or fields) is refused with an
error that names it, at parse time where possible, instead of rendering a wrong prompt.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import TemplateError
from ..gofmt import go_json, go_quote, go_sprint


# ---- values --------------------------------------------------------------------------------------


class JSONText:
    """A value that prints as JSON, like Ollama's ``Tools`` and tool-call ``Arguments`` (their ``String()``)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return go_json(self.value)

    def __len__(self) -> int:
        return len(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.value)

    def __getitem__(self, key: Any) -> Any:
        return wrap_json(self.value[key])


def wrap_json(value: Any) -> Any:
    """Containers become JSONText (print as JSON, fields readable by Go names); scalars stay as they are."""
    return JSONText(value) if isinstance(value, (dict, list)) else value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, JSONText) else value


def truthy(value: Any) -> bool:
    """Go's notion of truth: false, 0, nil and empty strings/slices/maps are false."""
    value = _unwrap(value)
    if value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


def go_format(value: Any) -> str:
    """Print a value as a template action does: ``fmt.Sprint``, a JSONText by its ``String()`` (as Go
    calls Stringers), nil as ``<no value>``."""
    if value is None:
        return "<no value>"
    return str(value) if isinstance(value, JSONText) else go_sprint(value)


def _go_printf(fmt: str, *args: Any) -> str:
    """The common ``printf`` verbs: %s %v %d %q %f %%."""
    out, i, arg_index = [], 0, 0
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        match = re.match(r"%([-+# 0]*)(\d*)(?:\.(\d+))?([a-zA-Z%])", fmt[i:])
        if not match:
            out.append(ch)
            i += 1
            continue
        flags, width, precision, verb = match.groups()
        i += match.end()
        if verb == "%":
            out.append("%")
            continue
        if arg_index >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = _unwrap(args[arg_index]) if verb not in "sv" else args[arg_index]
        arg_index += 1
        if verb in "sv":
            text = go_format(arg)
        elif verb == "q":
            text = go_quote(go_format(arg))
        elif verb == "d":
            text = str(int(arg))
        elif verb in "fFeEgG":
            text = f"{float(arg):{'.' + precision if precision else ''}{verb if verb != 'F' else 'f'}}"
        elif verb == "t":
            text = go_format(bool(arg))
        else:
            raise TemplateError(f"printf verb %{verb} is not supported")
        if width:
            text = text.ljust(int(width)) if "-" in flags else text.rjust(int(width))
        out.append(text)
    return "".join(out)


def _compare(op: str, a: Any, b: Any) -> bool:
    a, b = _unwrap(a), _unwrap(b)
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    try:
        return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
    except TypeError:
        raise TemplateError(f"{op}: incompatible types for comparison ({type(a).__name__}, {type(b).__name__})") from None


def _fn_eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("eq: missing argument for comparison")
    return any(_compare("eq", a, b) for b in others)


def _fn_len(value: Any) -> int:
    value = _unwrap(value)
    if value is None:
        raise TemplateError("len of nil pointer")
    try:
        return len(value)
    except TypeError:
        raise TemplateError(f"len of type {type(value).__name__}") from None


def _fn_index(value: Any, *keys: Any) -> Any:
    value = _unwrap(value)
    for key in keys:
        try:
            value = _unwrap(value[key])
        except (IndexError, KeyError, TypeError):
            if isinstance(value, Mapping):
                return None  # missing map key: zero value
            raise TemplateError(f"index out of range: {go_format(key)}") from None
    return value


def _fn_slice(value: Any, *bounds: Any) -> Any:
    value = _unwrap(value)
    if len(bounds) > 2:
        raise TemplateError("slice: too many indices (3-index slices are not supported)")
    start = int(bounds[0]) if bounds else 0
    end = int(bounds[1]) if len(bounds) > 1 else len(value)
    if not 0 <= start <= end <= len(value):
        raise TemplateError(f"slice: index out of range [{start}:{end}] with length {len(value)}")
    return value[start:end]


def _fn_json(value: Any) -> str:
    return go_json(_unwrap(value))


def _today(days_ago: int = 0) -> str:
    return (_dt.date.today() - _dt.timedelta(days=days_ago)).strftime("%Y-%m-%d")


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "not": lambda x: not truthy(x),
    "eq": _fn_eq,
    "ne": lambda a, b: _compare("ne", a, b),
    "lt": lambda a, b: _compare("lt", a, b),
    "le": lambda a, b: _compare("le", a, b),
    "gt": lambda a, b: _compare("gt", a, b),
    "ge": lambda a, b: _compare("ge", a, b),
    "len": _fn_len,
    "index": _fn_index,
    "slice": _fn_slice,
    "print": lambda *a: "".join(go_format(x) for x in a),
    "println": lambda *a: " ".join(go_format(x) for x in a) + "\n",
    "printf": lambda fmt, *a: _go_printf(str(fmt), *a),
    "json": _fn_json,
    "html": lambda *a: html.escape("".join(go_format(x) for x in a)),
    "js": lambda *a: json.dumps("".join(go_format(x) for x in a))[1:-1],
    "urlquery": lambda *a: urllib.parse.quote_plus("".join(go_format(x) for x in a)),
    "currentDate": lambda: _today(),
    "yesterdayDate": lambda: _today(1),
}
_SHORT_CIRCUIT = ("and", "or")


# ---- lexing --------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<variable>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    text: str


def _lex_action(src: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos, adjacent = 0, False
    while pos < len(src):
        match = _TOKEN.match(src, pos)
        if not match:
            raise TemplateError(f"unexpected {src[pos]!r} in action {{{{{src}}}}}")
        kind = match.lastgroup or ""
        text = match.group()
        pos = match.end()
        if kind == "ws":
            adjacent = False
            continue
        # a field chain directly after a variable or ')' belongs to it: $x.Name, (index .A 0).B
        if kind == "field" and adjacent and tokens[-1].kind in ("variable", "rparen", "chain") and text != ".":
            tokens.append(_Tok("chain", text))
        else:
            tokens.append(_Tok(kind, text))
        adjacent = True
    return tokens


# ---- parse tree ----------------------------------------------------------------------------------


@dataclass
class Node:
    pass


@dataclass
class Text(Node):
    text: str


@dataclass
class Operand:
    kind: str  # field | variable | literal | func | pipeline | dot
    value: Any
    chain: list[str] = field(default_factory=list)


@dataclass
class Command:
    args: list[Operand]


@dataclass
class Pipeline:
    commands: list[Command]
    decl: list[str] = field(default_factory=list)
    is_assign: bool = False


@dataclass
class Action(Node):
    pipe: Pipeline


@dataclass
class Branch(Node):
    kind: str  # if | with | range
    pipe: Pipeline
    body: list[Node]
    else_body: list[Node] | None = None


@dataclass
class LoopControl(Node):
    kind: str  # break | continue


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


def _split(src: str) -> list[tuple[str, str]]:
    """Split template text into ('text', s) and ('action', s) pieces, applying trim markers."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(src):
        text = src[pos : match.start()]
        if match.group(1):
            text = text.rstrip(" \t\r\n")
        pieces.append(("text", text))
        body = match.group(2).strip()
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError("unclosed comment")
            pieces.append(("comment", ""))
        else:
            pieces.append(("action", body))
        pos = match.end()
        if match.group(3):
            rest = src[pos:]
            pos += len(rest) - len(rest.lstrip(" \t\r\n"))
    tail = src[pos:]
    if "{{" in tail:
        raise TemplateError("unclosed action: '{{' without '}}'")
    pieces.append(("text", tail))
    return pieces


_STRING_LITERAL = re.compile(r'"(?:\\.|[^"\\])*"|`[^`]*`')


class Template:
    """A parsed Go template. ``Template(src).render(data)`` -> str."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._pieces = _split(source)
        self._pos = 0
        self.root = self._parse_list(top=True)
        # Ollama's Template.Vars(): fields named in actions, not words in the text, comments or strings
        actions = " ".join(_STRING_LITERAL.sub("", body) for kind, body in self._pieces if kind == "action")
        self.identifiers = {m.lower() for m in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", actions)}

    def uses(self, field_name: str) -> bool:
        """Whether the template references ``.Name`` (case-insensitive, as Ollama checks)."""
        return field_name.lower() in self.identifiers

    # -- parsing --

    def _parse_list(self, top: bool = False) -> list[Node]:
        nodes: list[Node] = []
        while self._pos < len(self._pieces):
            kind, body = self._pieces[self._pos]
            self._pos += 1
            if kind == "text":
                if body:
                    nodes.append(Text(body))
                continue
            if kind == "comment":
                continue
            keyword = body.split(None, 1)[0] if body else ""
            if keyword in ("end", "else"):
                if top:
                    raise TemplateError(f"unexpected {{{{{keyword}}}}}")
                self._pos -= 1
                return nodes
            if keyword in ("if", "with", "range"):
                nodes.append(self._parse_branch(keyword, body[len(keyword) :]))
            elif keyword in ("break", "continue"):
                nodes.append(LoopControl(keyword))
            elif keyword in ("define", "template", "block"):
                raise TemplateError(f"{{{{{keyword}}}}} is not supported in model templates")
            else:
                nodes.append(Action(self._parse_pipeline(body)))
        if not top:
            raise TemplateError("unexpected EOF: missing {{end}}")
        return nodes

    def _parse_branch(self, kind: str, rest: str) -> Branch:
        node = Branch(kind, self._parse_pipeline(rest, allow_range_decl=kind == "range"), self._parse_list())
        _, body = self._pieces[self._pos]
        self._pos += 1
        if body == "end":
            return node
        # else, else if ..., else with ...
        words = body.split(None, 1)
        if len(words) == 1:
            node.else_body = self._parse_list()
            _, closing = self._pieces[self._pos]
            self._pos += 1
            if closing != "end":
                raise TemplateError(f"expected {{{{end}}}} after {{{{else}}}}, got {{{{{closing}}}}}")
            return node
        chained = words[1].split(None, 1)[0]
        if chained != kind or kind == "range":
            raise TemplateError(f"{{{{else {chained}}}}} inside {{{{{kind}}}}} is not valid")
        # `{{else if x}}...{{end}}` closes the outer node too: parse it as a nested branch.
        node.else_body = [self._parse_branch(kind, words[1][len(chained) :])]
        return node

    def _parse_pipeline(self, src: str, allow_range_decl: bool = False) -> Pipeline:
        pipe = self._parse_tokens(_lex_action(src), allow_range_decl)
        if not pipe.commands:
            raise TemplateError(f"missing value in action {{{{{src.strip()}}}}}")
        return pipe

    def _parse_tokens(self, tokens: list[_Tok], allow_range_decl: bool = False) -> Pipeline:
        pipe = Pipeline(commands=[])
        # declarations: $x := / $x = / $i, $v :=
        if tokens and tokens[0].kind == "variable":
            if len(tokens) > 1 and tokens[1].kind in ("declare", "assign"):
                pipe.decl, pipe.is_assign = [tokens[0].text], tokens[1].kind == "assign"
                tokens = tokens[2:]
            elif (
                allow_range_decl and len(tokens) > 3 and tokens[1].kind == "comma"
                and tokens[2].kind == "variable" and tokens[3].kind == "declare"
            ):
                pipe.decl = [tokens[0].text, tokens[2].text]
                tokens = tokens[4:]
        pos = 0
        command: list[Operand] = []
        while pos < len(tokens):
            tok = tokens[pos]
            if tok.kind == "pipe":
                if not command:
                    raise TemplateError("missing command before '|'")
                pipe.commands.append(Command(command))
                command = []
                pos += 1
                continue
            operand, pos = self._parse_operand(tokens, pos)
            command.append(operand)
        if command:
            pipe.commands.append(Command(command))
        return pipe

    def _parse_operand(self, tokens: list[_Tok], pos: int) -> tuple[Operand, int]:
        tok = tokens[pos]
        pos += 1
        if tok.kind == "lparen":
            depth, end = 1, pos
            while end < len(tokens) and depth:
                depth += {"lparen": 1, "rparen": -1}.get(tokens[end].kind, 0)
                end += 1
            if depth:
                raise TemplateError("unclosed '('")
            inner = self._parse_tokens(tokens[pos : end - 1])
            if not inner.commands:
                raise TemplateError("empty parenthesised pipeline")
            operand = Operand("pipeline", inner)
            pos = end
        elif tok.kind == "field":
            operand = Operand("dot", None) if tok.text == "." else Operand("field", tok.text[1:].split("."))
        elif tok.kind == "variable":
            operand = Operand("variable", tok.text)
        elif tok.kind == "string":
            operand = Operand("literal", json.loads(tok.text))
        elif tok.kind == "raw":
            operand = Operand("literal", tok.text[1:-1])
        elif tok.kind == "char":
            operand = Operand("literal", ord(json.loads('"' + tok.text[1:-1] + '"')))
        elif tok.kind == "number":
            text = tok.text.replace("_", "")
            operand = Operand("literal", int(text, 0) if re.fullmatch(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)", text) else float(text))
        elif tok.kind == "ident":
            if tok.text in ("true", "false"):
                operand = Operand("literal", tok.text == "true")
            elif tok.text == "nil":
                operand = Operand("literal", None)
            elif tok.text in FUNCTIONS or tok.text in _SHORT_CIRCUIT:
                operand = Operand("func", tok.text)
            else:
                raise TemplateError(f'function "{tok.text}" not defined')
        else:
            raise TemplateError(f"unexpected {tok.text!r} in action")
        while pos < len(tokens) and tokens[pos].kind == "chain":
            operand.chain += tokens[pos].text[1:].split(".")
            pos += 1
        return operand, pos

    # -- execution --

    def render(self, data: Any) -> str:
        out: list[str] = []
        scope: list[dict[str, Any]] = [{"$": data}]
        try:
            self._exec(self.root, data, scope, out)
        except (_Break, _Continue):
            raise TemplateError("{{break}}/{{continue}} outside {{range}}") from None
        return "".join(out)

    def _exec(self, nodes: Sequence[Node], dot: Any, scope: list[dict[str, Any]], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Action):
                value = self._eval_pipeline(node.pipe, dot, scope)
                if not node.pipe.decl:
                    out.append(go_format(value))
            elif isinstance(node, Branch):
                self._exec_branch(node, dot, scope, out)
            elif isinstance(node, LoopControl):
                raise _Break() if node.kind == "break" else _Continue()

    def _exec_branch(self, node: Branch, dot: Any, scope: list[dict[str, Any]], out: list[str]) -> None:
        scope.append({})
        try:
            if node.kind == "range":
                self._exec_range(node, dot, scope, out)
                return
            value = self._eval_pipeline(node.pipe, dot, scope, declare_range=False)
            if truthy(value):
                self._exec(node.body, value if node.kind == "with" else dot, scope, out)
            elif node.else_body is not None:
                self._exec(node.else_body, dot, scope, out)
        finally:
            scope.pop()

    def _exec_range(self, node: Branch, dot: Any, scope: list[dict[str, Any]], out: list[str]) -> None:
        raw = self._eval_pipeline(node.pipe, dot, scope, declare_range=True)
        value = _unwrap(raw)
        if isinstance(raw, JSONText):
            value = [wrap_json(v) for v in value] if isinstance(value, list) else {k: wrap_json(v) for k, v in value.items()}
        if value is None:
            items: list[tuple[Any, Any]] = []
        elif isinstance(value, Mapping):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        elif isinstance(value, (list, tuple, str)):
            items = list(enumerate(value))
        else:
            raise TemplateError(f"range can't iterate over {go_format(value)}")
        if not items:
            if node.else_body is not None:
                self._exec(node.else_body, dot, scope, out)
            return
        names = node.pipe.decl
        for key, item in items:
            if len(names) == 1:
                scope[-1][names[0]] = item
            elif len(names) == 2:
                scope[-1][names[0]], scope[-1][names[1]] = key, item
            try:
                self._exec(node.body, item, scope, out)
            except _Break:
                break
            except _Continue:
                continue

    def _eval_pipeline(
        self, pipe: Pipeline, dot: Any, scope: list[dict[str, Any]], declare_range: bool = False
    ) -> Any:
        value: Any = None
        for i, command in enumerate(pipe.commands):
            value = self._eval_command(command, dot, scope, final=(value,) if i else ())
        if pipe.decl and not declare_range:
            name = pipe.decl[0]
            if pipe.is_assign:
                for frame in reversed(scope):
                    if name in frame:
                        frame[name] = value
                        break
                else:
                    raise TemplateError(f"undefined variable: {name}")
            else:
                scope[-1][name] = value
        return value

    def _eval_command(self, command: Command, dot: Any, scope: list[dict[str, Any]], final: tuple[Any, ...]) -> Any:
        head, *rest = command.args
        if head.kind == "func":
            name = head.value
            if name in _SHORT_CIRCUIT:
                operands = [lambda a=a: self._eval_operand(a, dot, scope) for a in rest]
                operands += [lambda v=v: v for v in final]
                if not operands:
                    raise TemplateError(f"{name}: wrong number of args")
                result: Any = None
                for get in operands:
                    result = get()
                    if truthy(result) != (name == "and"):
                        return result
                return result
            args = [self._eval_operand(a, dot, scope) for a in rest] + list(final)
            try:
                return _follow(FUNCTIONS[name](*args), head.chain)
            except TypeError as exc:
                raise TemplateError(f"wrong number of args for {name}: {exc}") from None
        if rest or final:
            raise TemplateError(f"can't give argument to non-function {self._describe(head)}")
        return self._eval_operand(head, dot, scope)

    def _eval_operand(self, operand: Operand, dot: Any, scope: list[dict[str, Any]]) -> Any:
        if operand.kind == "literal":
            return _follow(operand.value, operand.chain)
        if operand.kind == "dot":
            return dot
        if operand.kind == "field":
            return _follow(dot, operand.value + operand.chain)
        if operand.kind == "variable":
            for frame in reversed(scope):
                if operand.value in frame:
                    return _follow(frame[operand.value], operand.chain)
            raise TemplateError(f"undefined variable: {operand.value}")
        if operand.kind == "pipeline":
            return _follow(self._eval_pipeline(operand.value, dot, scope), operand.chain)
        if operand.kind == "func":
            return self._eval_command(Command([operand]), dot, scope, ())
        raise TemplateError(f"cannot evaluate {operand.kind}")

    @staticmethod
    def _describe(operand: Operand) -> str:
        if operand.kind == "field":
            return "." + ".".join(operand.value)
        return str(operand.value)


def _follow(value: Any, chain: Sequence[str]) -> Any:
    for name in chain:
        inner = _unwrap(value)
        if isinstance(value, JSONText) and isinstance(inner, Mapping):
            # JSON objects (tools, tool-call arguments) read by Go field name: .Function.Name -> function.name
            key = name if name in inner else _snake(name)
            value = wrap_json(inner.get(key))
        elif isinstance(inner, Mapping):
            if name not in inner:
                raise TemplateError(f"can't evaluate field {name}")
            value = inner[name]
        elif inner is None:
            raise TemplateError(f"nil pointer evaluating .{name}")
        elif hasattr(inner, name):
            value = getattr(inner, name)
        else:
            raise TemplateError(f"can't evaluate field {name} in type {type(inner).__name__}")
    return value
