"""The protobuf text format of Caffe's ``.prototxt`` files: parser, writer, V1 upgrade.

Syntax (what ``google::protobuf::TextFormat`` accepts, as far as Caffe files use it)::

    name: "VGG"                  # a scalar field; '#' starts a comment
    layer {                      # a nested message (the ':' is optional)
      type: "Convolution"        # strings in "..." or '...', C escapes, adjacent ones joined
      pool: MAX                  # an enum value by name (or by number)
      mean_value: 104.008        # repeated fields repeat the line ...
      dim: [1, 3, 513, 513]      # ... or use a list
      include: { phase: TEST }   # '<' '>' may replace '{' '}'; ',' or ';' may end a field
    }

Fields are checked against the schema (:mod:`.schema`): an unknown field name,
an enum value that does not exist, a number where a string is expected, an
unbalanced brace, all raise :class:`~.errors.CaffeFormatError` naming the line
and column. Both dialects parse (``layers { type: CONVOLUTION }`` with ``hole``,
``layer { type: "Convolution" }`` with ``dilation``) into the same normalised
:class:`~.spec.NetSpec`.

Templates: DeepLab's released files contain ``${NUM_LABELS}`` and ``${EXP}``, which
its scripts replaced with ``sed``. They are replaced here with 21 and ``voc12`` by
default (keyword arguments override or add values). A placeholder without a value
is kept as it is inside a quoted string (a path such as ``"${DATA_ROOT}"``) and is
an error anywhere else.
"""
import bisect
import math
import os
import re

from .errors import CaffeFormatError
from .schema import ENUMS, MESSAGES, SCALAR_WIRE
from .spec import net_from_raw, net_to_raw

#: Default template values, as DeepLab's run_pascal.sh sets them for PASCAL VOC 2012.
DEFAULT_TEMPLATE_VALUES = {"NUM_LABELS": 21, "EXP": "voc12"}

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n\f\v]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?
                  |(?i:inf|infinity|nan))(?![A-Za-z0-9_]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}\[\]:,;<>])
""", re.VERBOSE)
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ESCAPES = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, "'": 39, '"': 34,
            "?": 63}
_INT_RANGES = {"int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-2**63, 2**63 - 1),
               "uint64": (0, 2**64 - 1)}


class _Token:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind, text, pos):
        self.kind, self.text, self.pos = kind, text, pos


class _Lexer:
    """Splits the text into tokens and turns offsets into line and column numbers."""

    def __init__(self, text):
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.tokens = self._tokenize()
        self.index = 0

    def where(self, pos):
        line = bisect.bisect_right(self.line_starts, pos)
        return f"line {line}, column {pos - self.line_starts[line - 1] + 1}"

    def error(self, pos, message):
        return CaffeFormatError(f"{self.where(pos)}: {message}")

    def _tokenize(self):
        tokens, pos, text = [], 0, self.text
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                placeholder = _PLACEHOLDER.match(text, pos)
                if placeholder:
                    raise self.error(pos, f"template placeholder {placeholder.group(0)} has no value; pass "
                                          f"{placeholder.group(1)}=... to parse_prototxt/read_prototxt")
                if text[pos] in "\"'":
                    raise self.error(pos, "unterminated string (a string must end on its line)")
                raise self.error(pos, f"unexpected character {text[pos]!r}")
            if m.lastgroup != "space":
                tokens.append(_Token(m.lastgroup, m.group(), pos))
            pos = m.end()
        tokens.append(_Token("end", "", len(text)))
        return tokens

    def peek(self):
        return self.tokens[self.index]

    def take(self):
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def expect(self, text, context):
        token = self.take()
        if token.text != text or token.kind == "string":
            found = "the end of the file" if token.kind == "end" else repr(token.text)
            raise self.error(token.pos, f"expected {text!r} {context}; found {found}")
        return token


def _unescape(token, lexer):
    body, out, i = token.text[1:-1], bytearray(), 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()
            out.append(int(digits, 8) & 0xFF)
            i += 1 + len(digits)
        elif nxt in "xX" and re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]):
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]).group()
            out.append(int(digits, 16))
            i += 2 + len(digits)
        else:
            raise lexer.error(token.pos, f"unknown escape \\{nxt} in a string")
    return bytes(out)


class _Parser:
    def __init__(self, text):
        self.lex = _Lexer(text)

    def parse(self):
        values = self.message("NetParameter", None)
        return values

    def message(self, name, closing):
        schema = MESSAGES[name]
        out = {}
        while True:
            token = self.lex.take()
            if token.kind == "end":
                if closing is not None:
                    raise self.lex.error(token.pos, f"unbalanced braces: the file ends inside a {name} "
                                                    f"(expected {closing!r})")
                return out
            if closing is not None and token.text == closing and token.kind == "punct":
                return out
            if token.kind != "ident":
                what = "a closing brace without an opening one" if token.text in "}>" else repr(token.text)
                raise self.lex.error(token.pos, f"expected a field name of {name}; found {what}")
            field = schema.by_name.get(token.text)
            if field is None:
                raise self.lex.error(token.pos, f"unknown field {token.text!r} in {name}; expected one of "
                                                f"{', '.join(sorted(schema.by_name))}")
            self.field(field, token, out, name)
            if self.lex.peek().text in (",", ";") and self.lex.peek().kind == "punct":
                self.lex.take()

    def field(self, field, name_token, out, message_name):
        is_message = field.kind in MESSAGES
        colon = self.lex.peek().text == ":" and self.lex.peek().kind == "punct"
        if colon:
            self.lex.take()
        elif not is_message:
            token = self.lex.peek()
            raise self.lex.error(token.pos, f"expected ':' after field {field.name!r}; found {token.text!r}")
        if self.lex.peek().text == "[" and self.lex.peek().kind == "punct":
            open_token = self.lex.take()
            if not field.repeated:
                raise self.lex.error(open_token.pos, f"field {field.name!r} is not repeated; a list is not allowed")
            values = []
            if self.lex.peek().text != "]":
                while True:
                    values.append(self.value(field))
                    sep = self.lex.take()
                    if sep.text == "]":
                        break
                    if sep.text != ",":
                        raise self.lex.error(sep.pos, f"expected ',' or ']' in the list of {field.name!r}")
            else:
                self.lex.take()
            out.setdefault(field.name, []).extend(values)
            return
        value = self.value(field)
        if field.repeated:
            out.setdefault(field.name, []).append(value)
        elif field.name in out:
            raise self.lex.error(name_token.pos, f"field {field.name!r} of {message_name} is not repeated "
                                                 f"but is given twice")
        else:
            out[field.name] = value

    def value(self, field):
        kind = field.kind
        if kind in MESSAGES:
            token = self.lex.take()
            if token.text not in ("{", "<") or token.kind != "punct":
                raise self.lex.error(token.pos, f"expected '{{' to open {field.name!r}; found {token.text!r}")
            return self.message(kind, "}" if token.text == "{" else ">")
        token = self.lex.take()
        if kind in ("string", "bytes"):
            if token.kind != "string":
                raise self.lex.error(token.pos, f"field {field.name!r} expects a quoted string; "
                                                f"found {token.text!r}")
            data = _unescape(token, self.lex)
            while self.lex.peek().kind == "string":
                data += _unescape(self.lex.take(), self.lex)
            if kind == "bytes":
                return data
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise self.lex.error(token.pos, f"string of field {field.name!r} is not valid UTF-8") from None
        if kind in ENUMS:
            if token.kind == "ident":
                if token.text not in ENUMS[kind]:
                    raise self.lex.error(token.pos, f"{token.text!r} is not a value of {kind} (field "
                                                    f"{field.name!r}); expected one of {', '.join(ENUMS[kind])}")
                return token.text
            number = self.integer(token, field, "int32")
            names = {v: k for k, v in reversed(list(ENUMS[kind].items()))}
            return names.get(number, number)
        if kind == "bool":
            if token.text in ("true", "True", "t", "1"):
                return True
            if token.text in ("false", "False", "f", "0"):
                return False
            raise self.lex.error(token.pos, f"field {field.name!r} expects true or false; found {token.text!r}")
        if kind in ("float", "double"):
            text = token.text.lower()
            if token.kind not in ("number", "ident") or (token.kind == "ident"
                                                         and text not in ("inf", "infinity", "nan")):
                raise self.lex.error(token.pos, f"field {field.name!r} expects a number; found {token.text!r}")
            if text.lstrip("-").startswith("0x"):
                return float(int(text, 16))
            return float(text[:-1] if text.endswith("f") and "inf" not in text else text)
        return self.integer(token, field, kind)

    def integer(self, token, field, kind):
        text = token.text
        if token.kind != "number" or not re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", text):
            raise self.lex.error(token.pos, f"field {field.name!r} expects an integer; found {text!r}")
        value = int(text, 16) if "x" in text.lower() else int(text)
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            raise self.lex.error(token.pos, f"field {field.name!r} ({kind}) must lie in [{low}, {high}]; "
                                            f"found {value}")
        return value


def substitute_templates(text, **template_values):
    """Replace ``${NAME}`` placeholders; defaults :data:`DEFAULT_TEMPLATE_VALUES`."""
    values = {**DEFAULT_TEMPLATE_VALUES, **template_values}
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)


def parse_prototxt_raw(text, **template_values):
    """Parse text into a NetParameter dict of the file's own dialect (nothing normalised)."""
    return _Parser(substitute_templates(text, **template_values)).parse()


def parse_prototxt(text, **template_values):
    """Parse a Caffe network definition (either dialect) into a :class:`~.spec.NetSpec`.

    Parameters
    ----------
    text : str
    **template_values
        Values for ``${NAME}`` placeholders (``NUM_LABELS=21`` and ``EXP="voc12"`` by default).

    Raises
    ------
    CaffeFormatError
        Naming the line and column of the problem.
    """
    return net_from_raw(parse_prototxt_raw(text, **template_values))


def read_prototxt(path, **template_values):
    """Read a ``.prototxt`` file; see :func:`parse_prototxt`. Errors name the file too."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaffeFormatError(f"{path}: byte {exc.start}: not UTF-8 text") from None
    try:
        return parse_prototxt(text, **template_values)
    except CaffeFormatError as exc:
        raise CaffeFormatError(f"{path}: {exc}") from None


# ----------------------------------------------------------------------------- writer

def _quote(text):
    out = []
    for ch in text:
        if ch in "\\\"":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _format_scalar(kind, value):
    if kind in ("string",):
        return _quote(value)
    if kind == "bytes":
        return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in "\\\"" else f"\\{b:03o}"
                             for b in value) + '"'
    if kind == "bool":
        return "true" if value else "false"
    if kind in ("float", "double"):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)  # integers and enum names


def _format_message(values, message_name, indent, lines):
    schema = MESSAGES[message_name]
    pad = "  " * indent
    for name, value in values.items():
        field = schema.by_name.get(name)
        if field is None:
            raise CaffeFormatError(f"{message_name} has no field {name!r}; it cannot be written")
        items = value if field.repeated else [value]
        for item in items:
            if field.kind in MESSAGES:
                lines.append(f"{pad}{name} {{")
                _format_message(item, field.kind, indent + 1, lines)
                lines.append(f"{pad}}}")
            elif field.kind in SCALAR_WIRE or field.kind in ENUMS:
                lines.append(f"{pad}{name}: {_format_scalar(field.kind, item)}")


def format_prototxt(spec, dialect=None):
    """Write a :class:`~.spec.NetSpec` as prototxt text (without blobs).

    Parameters
    ----------
    spec : NetSpec
    dialect : {"new", "v1"}, optional
        Default: the dialect the spec was read from. ``"new"`` on a spec read from a
        V1 file is the upgrade (string types, ``dilation`` instead of ``hole``,
        ``param { lr_mult }`` instead of ``blobs_lr``).

    Returns
    -------
    str
        Text that :func:`parse_prototxt` reads back into an equal spec.
    """
    raw = net_to_raw(spec, dialect or spec.dialect, with_blobs=False)
    lines = []
    _format_message(raw, "NetParameter", 0, lines)
    return "\n".join(lines) + "\n"


def upgrade_prototxt(text, **template_values):
    """V1 prototxt text -> new-dialect text (``hole`` -> ``dilation``, enum -> string types)."""
    return format_prototxt(parse_prototxt(text, **template_values), dialect="new")
