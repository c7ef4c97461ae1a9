"""FHIRPath: a tokenizer and a Pratt parser turning an expression into a small immutable AST."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from clinhub.errors import ViewError


class FHIRPathSyntaxError(ViewError):
    """An expression that does not parse; `position` is the 0-based offset of the offending character."""

    def __init__(self, message: str, *, expression: str, position: int) -> None:
        super().__init__(f"{message} at position {position} in {expression!r}")
        self.position = position
        self.expression = expression


# ---------------------------------------------------------------------------------------------- AST
@dataclass(frozen=True)
class Node:
    pos: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True)
class Literal(Node):
    """A literal of a FHIRPath system type: String, Boolean, Integer, Decimal, Date, DateTime or Time."""

    value: object
    type: str


@dataclass(frozen=True)
class Empty(Node):
    """`{}`, the empty collection."""


@dataclass(frozen=True)
class Quantity(Node):
    value: str
    unit: str


@dataclass(frozen=True)
class Constant(Node):
    """`%name`: a ViewDefinition constant or an environment variable such as %rowIndex."""

    name: str


@dataclass(frozen=True)
class Identifier(Node):
    """A name at the start of a path: a member of the focus (`$this`)."""

    name: str


@dataclass(frozen=True)
class Variable(Node):
    """`$this`, `$index` or `$total`."""

    name: str


@dataclass(frozen=True)
class Member(Node):
    target: Node
    name: str


@dataclass(frozen=True)
class Call(Node):
    """A function call; `target` is None for a call at the start of a path (applied to `$this`)."""

    target: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Index(Node):
    target: Node
    index: Node


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class TypeTest(Node):
    """`x is T` or `x as T`."""

    op: str
    target: Node
    type_name: str


# ---------------------------------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class Token:
    kind: str  # string, ident, delimited (`...`), number, datetime, constant, variable, op, end
    value: str
    pos: int


_DATE = r"\d{4}(?:-\d{2}(?:-\d{2})?)?"
_TIME = r"\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?"
_ZONE = r"(?:Z|[+-]\d{2}:\d{2})"
_TEMPORAL = re.compile(rf"@(?:T{_TIME}|{_DATE}(?:T(?:{_TIME}{_ZONE}?)?)?)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?L?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ("<=", ">=", "!=", "!~", "=", "~", "<", ">", "+", "-", "*", "/", "&", "|", ".", ",")
_OPERATORS += ("(", ")", "[", "]", "{", "}")
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """The unescaped content of a quoted string or identifier starting at `start`, and the end offset."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            if nxt not in _ESCAPES:
                raise FHIRPathSyntaxError("invalid escape sequence", expression=text, position=i)
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise FHIRPathSyntaxError("unterminated quoted text", expression=text, position=start)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise FHIRPathSyntaxError("unterminated comment", expression=text, position=i)
            i = end + 2
            continue
        if ch in "'`":
            value, end = _quoted(text, i, ch)
            tokens.append(Token("string" if ch == "'" else "delimited", value, i))
            i = end
            continue
        if ch == "@":
            match = _TEMPORAL.match(text, i)
            if not match:
                raise FHIRPathSyntaxError("invalid date/time literal", expression=text, position=i)
            tokens.append(Token("datetime", match.group()[1:], i))
            i = match.end()
            continue
        if ch == "%":
            if text[i + 1 : i + 2] in ("'", "`"):
                value, end = _quoted(text, i + 1, text[i + 1])
            else:
                match = _NAME.match(text, i + 1)
                if not match:
                    raise FHIRPathSyntaxError("expected a name after '%'", expression=text, position=i)
                value, end = match.group(), match.end()
            tokens.append(Token("constant", value, i))
            i = end
            continue
        if ch == "$":
            match = _NAME.match(text, i + 1)
            if not match or match.group() not in ("this", "index", "total"):
                raise FHIRPathSyntaxError("unknown variable", expression=text, position=i)
            tokens.append(Token("variable", "$" + match.group(), i))
            i = match.end()
            continue
        match = _NUMBER.match(text, i)
        if match:
            tokens.append(Token("number", match.group(), i))
            i = match.end()
            continue
        match = _NAME.match(text, i)
        if match:
            tokens.append(Token("ident", match.group(), i))
            i = match.end()
            continue
        operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
        if operator is None:
            raise FHIRPathSyntaxError(f"unexpected character {ch!r}", expression=text, position=i)
        tokens.append(Token("op", operator, i))
        i += len(operator)
    tokens.append(Token("end", "", len(text)))
    return tokens


# ------------------------------------------------------------------------------------------- parser
# Binding powers, loosest first, as in the FHIRPath grammar's operator precedence.
_BINARY = {
    "implies": 10,
    "or": 20,
    "xor": 20,
    "and": 30,
    "in": 40,
    "contains": 40,
    "=": 50,
    "~": 50,
    "!=": 50,
    "!~": 50,
    "<": 60,
    ">": 60,
    "<=": 60,
    ">=": 60,
    "|": 70,
    "is": 80,
    "as": 80,
    "+": 90,
    "-": 90,
    "&": 90,
    "*": 100,
    "/": 100,
    "div": 100,
    "mod": 100,
}
_UNARY = 110
_POSTFIX = 120
_WORD_OPERATORS = {"implies", "or", "xor", "and", "in", "contains", "is", "as", "div", "mod"}
_CALENDAR_UNITS = {
    f"{unit}{plural}"
    for unit in ("year", "month", "week", "day", "hour", "minute", "second", "millisecond")
    for plural in ("", "s")
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, message: str, token: Token | None = None) -> FHIRPathSyntaxError:
        token = token or self.token
        found = "end of expression" if token.kind == "end" else repr(token.value)
        return FHIRPathSyntaxError(f"{message}, found {found}", expression=self.text, position=token.pos)

    def expect(self, op: str) -> Token:
        if self.token.kind != "op" or self.token.value != op:
            raise self.error(f"expected {op!r}")
        return self.advance()

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise FHIRPathSyntaxError("empty expression", expression=self.text, position=0)
        node = self.expression(0)
        if self.token.kind != "end":
            raise self.error("unexpected token")
        return node

    def infix_power(self) -> int:
        token = self.token
        if token.kind == "op" and token.value in (".", "["):
            return _POSTFIX
        if token.kind == "op" or (token.kind == "ident" and token.value in _WORD_OPERATORS):
            return _BINARY.get(token.value, -1)
        return -1

    def expression(self, min_power: int) -> Node:
        left = self.prefix()
        while (power := self.infix_power()) > min_power:
            token = self.advance()
            if token.value == ".":
                left = self.invocation(left)
            elif token.value == "[":
                index = self.expression(0)
                self.expect("]")
                left = Index(left, index, pos=token.pos)
            elif token.value in ("is", "as"):
                left = TypeTest(token.value, left, self.type_specifier(), pos=token.pos)
            else:
                left = Binary(token.value, left, self.expression(power), pos=token.pos)
        return left

    def type_specifier(self) -> str:
        parts = [self.name()]
        while self.token == Token("op", ".", self.token.pos) and self.tokens[self.i + 1].kind in (
            "ident",
            "delimited",
        ):
            self.advance()
            parts.append(self.name())
        return ".".join(parts)

    def name(self) -> str:
        if self.token.kind not in ("ident", "delimited"):
            raise self.error("expected a name")
        return self.advance().value

    def invocation(self, target: Node | None) -> Node:
        token = self.token
        name = self.name()
        if self.token.kind == "op" and self.token.value == "(":
            return Call(target, name, self.arguments(), pos=token.pos)
        if target is None:
            return Identifier(name, pos=token.pos)
        return Member(target, name, pos=token.pos)

    def arguments(self) -> tuple[Node, ...]:
        self.expect("(")
        args: list[Node] = []
        if not (self.token.kind == "op" and self.token.value == ")"):
            args.append(self.expression(0))
            while self.token.kind == "op" and self.token.value == ",":
                self.advance()
                args.append(self.expression(0))
        self.expect(")")
        return tuple(args)

    def prefix(self) -> Node:
        token = self.token
        if token.kind == "op":
            return self.prefix_operator(token)
        self.advance()
        if token.kind == "string":
            return Literal(token.value, "String", pos=token.pos)
        if token.kind == "number":
            return self.number(token)
        if token.kind == "datetime":
            return Literal(token.value, _temporal_type(token.value), pos=token.pos)
        if token.kind == "constant":
            return Constant(token.value, pos=token.pos)
        if token.kind == "variable":
            return Variable(token.value[1:], pos=token.pos)
        if token.kind == "ident" and token.value in ("true", "false"):
            return Literal(token.value == "true", "Boolean", pos=token.pos)
        if token.kind in ("ident", "delimited"):
            self.i -= 1
            return self.invocation(None)
        raise self.error("expected an expression", token)

    def prefix_operator(self, token: Token) -> Node:
        if token.value in ("+", "-"):
            self.advance()
            operand = self.expression(_UNARY)
            return operand if token.value == "+" else Unary("-", operand, pos=token.pos)
        if token.value == "(":
            self.advance()
            node = self.expression(0)
            self.expect(")")
            return node
        if token.value == "{":
            self.advance()
            self.expect("}")
            return Empty(pos=token.pos)
        raise self.error("expected an expression")

    def number(self, token: Token) -> Node:
        text = token.value
        if text.endswith("L"):
            return Literal(int(text[:-1]), "Integer", pos=token.pos)
        unit = self.token
        if unit.kind == "string" or (unit.kind == "ident" and unit.value in _CALENDAR_UNITS):
            self.advance()
            return Quantity(text, unit.value, pos=token.pos)
        if "." in text:
            return Literal(text, "Decimal", pos=token.pos)
        return Literal(int(text), "Integer", pos=token.pos)


def _temporal_type(text: str) -> str:
    if text.startswith("T"):
        return "Time"
    return "DateTime" if "T" in text else "Date"


def parse_fhirpath(text: str) -> Node:
    """Parse a FHIRPath expression; raises FHIRPathSyntaxError (a ViewError) saying where it went wrong."""
    if not isinstance(text, str):
        raise ViewError(f"a FHIRPath expression must be a string, not {type(text).__name__}")
    return _Parser(text).parse()


def walk(node: Node):
    """Every node of an expression tree, parents before children."""
    yield node
    for child in _children(node):
        yield from walk(child)


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Member):
        return (node.target,)
    if isinstance(node, Call):
        return ((node.target,) if node.target is not None else ()) + node.args
    if isinstance(node, Index):
        return (node.target, node.index)
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, TypeTest):
        return (node.target,)
    return ()
