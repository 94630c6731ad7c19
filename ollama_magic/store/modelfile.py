"""Modelfile parser and renderer (Ollama's grammar, ``parser/parser.go``).

Parsing and rendering are exact inverses for every value the format can hold: render(parse(x)) parses
back to the same Modelfile. Errors carry the line number, because a Modelfile is something a person
edits by hand.
"""

from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest, ModelfileError
from ..options import DEPRECATED_OPTIONS, format_value, parse_parameter_text, log

#: Ollama's template for a model with none of its own (``template.DefaultTemplate``)
DEFAULT_TEMPLATE = "{{ .Prompt }}"
INSTRUCTIONS = ("from", "parameter", "template", "system", "adapter", "license", "message")
MESSAGE_ROLES = ("system", "user", "assistant")
_WORD = re.compile(r"[A-Za-z]+")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass
class Modelfile:
    """What a Modelfile says. ``froms[0]`` is the model; further FROM lines name projectors."""

    froms: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    licenses: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)

    def render(self, header: str = "") -> str:
        """The Modelfile text, in the order ``ollama show --modelfile`` prints it."""
        lines = [header] if header else []
        lines += [f"FROM {quote(v)}" for v in self.froms]
        lines += [f"ADAPTER {quote(v)}" for v in self.adapters]
        if self.template is not None:
            lines.append(f"TEMPLATE {quote(self.template)}")
        if self.system is not None:
            lines.append(f"SYSTEM {quote(self.system)}")
        for name in sorted(self.parameters):
            values = self.parameters[name]
            for value in values if isinstance(values, list) else [values]:
                shown = quote(value) if isinstance(value, str) else format_value(value)
                lines.append(f"PARAMETER {name} {shown}")
        lines += [f"LICENSE {quote(v)}" for v in self.licenses]
        lines += [f"MESSAGE {m['role']} {quote(m['content'])}" for m in self.messages]
        return "\n".join(lines) + "\n"


def quote(value: str) -> str:
    """Quote a value only where a bare one would not read back the same (Ollama's ``quote`` rule,
    extended to refuse what the format cannot hold instead of writing a Modelfile that lies)."""
    if value == "":
        return '""'
    if "\n" in value or value != value.strip() or value.startswith('"'):
        if '"' not in value:
            return f'"{value}"'
        if '"""' in value or value.endswith('"'):
            raise InvalidRequest(f"value {value[:40]!r}... cannot be written in a Modelfile (it holds '\"\"\"')")
        return f'"""{value}"""'
    return value


def create_fields(mf: Modelfile, base_dir: Path | None = None) -> dict[str, Any]:
    """A Modelfile as the fields of a structured create request (``ollama.Client.create``'s names),
    the one conversion every front end uses, as Ollama's CLI does with ``parser.CreateRequest``.

    The first FROM is ``from_``; further FROM lines (projectors) go into ``files``, where the store
    tells a projector from a model by its GGUF header, as Ollama's server does. With ``base_dir``,
    relative FROM/ADAPTER paths that exist there become absolute paths (a remote backend then uploads
    them); without it, values are passed on as written (digests, blob paths, model names).
    """

    def local(value: str) -> str:
        if base_dir is None:
            return value
        candidate = (base_dir / value).expanduser()
        return str(candidate) if not Path(value).expanduser().is_absolute() and candidate.exists() else value

    if not mf.froms:
        raise InvalidRequest("the Modelfile has no FROM line")
    fields: dict[str, Any] = {"from_": local(mf.froms[0])}
    if mf.froms[1:]:
        fields["files"] = {_file_key(value, i): local(value) for i, value in enumerate(mf.froms[1:])}
    if mf.adapters:
        fields["adapters"] = {_file_key(value, i): local(value) for i, value in enumerate(mf.adapters)}
    if mf.template is not None:
        fields["template"] = mf.template
    if mf.system is not None:
        fields["system"] = mf.system
    if mf.parameters:
        fields["parameters"] = dict(mf.parameters)
    if mf.licenses:
        fields["license"] = list(mf.licenses)
    if mf.messages:
        fields["messages"] = [dict(m) for m in mf.messages]
    return fields


def _file_key(value: str, index: int) -> str:
    """A relative file name for a ``files``/``adapters`` entry, unique even when two base names match."""
    name = Path(value.strip().removeprefix("@")).name.replace(":", "-") or "file"
    return name if index == 0 else f"{index}-{name}"


def read(path: str | Path) -> tuple[str, Path]:
    """A Modelfile's text and the directory its relative FROM/ADAPTER paths are read from."""
    file = Path(path).expanduser()
    try:
        return file.read_text("utf-8"), file.resolve().parent
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidRequest(f"cannot read Modelfile {file}: {reason}") from None


def parse(text: str) -> Modelfile:
    """Parse Modelfile text. Raises ModelfileError naming the line and the problem."""
    return _Parser(text.replace("\r\n", "\n")).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def error(self, message: str, line: int | None = None) -> ModelfileError:
        return ModelfileError(message, line if line is not None else self.line)

    def parse(self) -> Modelfile:
        mf = Modelfile()
        text = self.text
        while True:
            # skip blank lines, indentation and comments
            while self.pos < len(text) and text[self.pos] in " \t\n":
                self.pos += 1
            if self.pos >= len(text):
                break
            if text[self.pos] == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
                continue
            start_line = self.line
            match = _WORD.match(text, self.pos)
            if not match:
                raise self.error(f"unexpected character {text[self.pos]!r}; expected an instruction")
            word = match.group().lower()
            if word not in INSTRUCTIONS:
                valid = ", ".join(f'"{i}"' for i in INSTRUCTIONS)
                raise self.error(f"unknown instruction {match.group()!r}: command must be one of {valid}")
            self.pos = match.end()
            self._require_space(match.group())
            if word == "parameter":
                name = self._token(_PARAM_NAME, "a parameter name")
                self._require_space(f"PARAMETER {name}")
                value = self._value(f"PARAMETER {name}")
                self._add_parameter(mf, name.lower(), value, start_line)
            elif word == "message":
                role = self._token(_WORD, "a message role").lower()
                if role not in MESSAGE_ROLES:
                    raise self.error(f"message role must be one of {', '.join(MESSAGE_ROLES)}, got {role!r}")
                self._require_space(f"MESSAGE {role}")
                mf.messages.append({"role": role, "content": self._value(f"MESSAGE {role}")})
            else:
                value = self._value(word.upper())
                if word == "from":
                    mf.froms.append(value)
                elif word == "adapter":
                    mf.adapters.append(value)
                elif word == "template":
                    mf.template = value
                elif word == "system":
                    mf.system = value
                else:
                    mf.licenses.append(value)
        if not mf.froms:
            raise ModelfileError("no FROM line")
        return mf

    def _require_space(self, after: str) -> None:
        if self.pos >= len(self.text) or self.text[self.pos] not in " \t":
            raise self.error(f"missing value after {after}")
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def _token(self, pattern: re.Pattern[str], what: str) -> str:
        match = pattern.match(self.text, self.pos)
        if not match:
            raise self.error(f"expected {what}")
        self.pos = match.end()
        return match.group()

    def _value(self, instruction: str) -> str:
        text, start = self.text, self.pos
        for opener in ('"""', '"'):
            if text.startswith(opener, start):
                end = text.find(opener, start + len(opener))
                if end < 0:
                    raise self.error(f"unexpected EOF: {instruction} opens {opener} that is never closed")
                value = text[start + len(opener) : end]
                self.pos = end + len(opener)
                rest_end = text.find("\n", self.pos)
                rest_end = len(text) if rest_end < 0 else rest_end
                if text[self.pos : rest_end].strip():
                    raise self.error(f"unexpected text after the closing {opener} of {instruction}")
                self.pos = rest_end
                return value
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        self.pos = end
        value = text[start:end].strip()
        if not value:
            raise self.error(f"missing value after {instruction}")
        return value

    def _add_parameter(self, mf: Modelfile, name: str, text: str, line: int) -> None:
        if name in DEPRECATED_OPTIONS:
            log.warning("line %d: parameter %r is deprecated and ignored", line, name)
            return
        try:
            value = parse_parameter_text(name, text)
        except InvalidRequest as exc:
            raise self.error(exc.message, line) from None
        if name == "stop":
            mf.parameters.setdefault("stop", []).append(value)
        else:
            mf.parameters[name] = value
