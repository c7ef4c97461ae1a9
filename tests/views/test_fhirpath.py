"""The FHIRPath tokenizer and parser: precedence, literals, and syntax errors that say where."""

from __future__ import annotations

import pytest

from clinhub.errors import ViewError
from clinhub.views.fhirpath import (
    Binary,
    Call,
    Constant,
    Empty,
    FHIRPathSyntaxError,
    Identifier,
    Index,
    Literal,
    Member,
    Node,
    Quantity,
    TypeTest,
    Unary,
    Variable,
    parse_fhirpath,
    walk,
)


def shape(node: Node) -> str:
    """A compact, fully parenthesised rendering of a tree, to assert on structure."""
    if isinstance(node, Binary):
        return f"({shape(node.left)} {node.op} {shape(node.right)})"
    if isinstance(node, Unary):
        return f"(-{shape(node.operand)})"
    if isinstance(node, Member):
        return f"{shape(node.target)}.{node.name}"
    if isinstance(node, Identifier):
        return node.name
    if isinstance(node, Call):
        args = ", ".join(shape(a) for a in node.args)
        return f"{shape(node.target) + '.' if node.target else ''}{node.name}({args})"
    if isinstance(node, Index):
        return f"{shape(node.target)}[{shape(node.index)}]"
    if isinstance(node, TypeTest):
        return f"({shape(node.target)} {node.op} {node.type_name})"
    if isinstance(node, Literal):
        return repr(node.value)
    if isinstance(node, Constant):
        return f"%{node.name}"
    if isinstance(node, Variable):
        return f"${node.name}"
    return type(node).__name__


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a + b * c", "(a + (b * c))"),
        ("a * b + c", "((a * b) + c)"),
        ("a - b - c", "((a - b) - c)"),
        ("a div b mod c", "((a div b) mod c)"),
        ("a & b + c", "((a & b) + c)"),
        ("a | b = c", "((a | b) = c)"),
        ("a < b = true", "((a < b) = True)"),
        ("a = b and c != d", "((a = b) and (c != d))"),
        ("a and b or c xor d", "(((a and b) or c) xor d)"),
        ("a or b and c", "(a or (b and c))"),
        ("a implies b or c", "(a implies (b or c))"),
        ("a in b and c contains d", "((a in b) and (c contains d))"),
        ("a ~ b or a !~ c", "((a ~ b) or (a !~ c))"),
        ("-a.b", "(-a.b)"),
        ("-a * b", "((-a) * b)"),
        ("x is Quantity and y as FHIR.string = 'a'", "((x is Quantity) and ((y as FHIR.string) = 'a'))"),
        ("a + b is Integer", "((a + b) is Integer)"),
        ("(a or b) and c", "((a or b) and c)"),
        ("name.where(use = 'official').family", "name.where((use = 'official')).family"),
        ("name[0].given[%i + 1]", "name[0].given[(%i + 1)]"),
        ("$this.a", "$this.a"),
        ("a.not().exists()", "a.not().exists()"),
        ("join(', ')", "join(', ')"),
        ("`div`.`a b`", "div.a b"),
        ("a.contains('x') and a.as(string)", "(a.contains('x') and a.as(string))"),
    ],
)
def test_precedence_and_structure(text: str, expected: str) -> None:
    assert shape(parse_fhirpath(text)) == expected


def test_literals() -> None:
    assert parse_fhirpath(r"'a\'b\n\u00e9'") == Literal("a'b\né", "String")
    assert parse_fhirpath("42") == Literal(42, "Integer")
    assert parse_fhirpath("42L") == Literal(42, "Integer")
    assert parse_fhirpath("4.50") == Literal("4.50", "Decimal")  # the text keeps the precision
    assert parse_fhirpath("true") == Literal(True, "Boolean")
    assert parse_fhirpath("@2020-01") == Literal("2020-01", "Date")
    assert parse_fhirpath("@2020-01-02T10:00:00.5+01:00") == Literal(
        "2020-01-02T10:00:00.5+01:00", "DateTime"
    )
    assert parse_fhirpath("@2020T") == Literal("2020T", "DateTime")
    assert parse_fhirpath("@T12:30") == Literal("T12:30", "Time")
    assert parse_fhirpath("{}") == Empty()
    assert parse_fhirpath("5 'mg'") == Quantity("5", "mg")
    assert parse_fhirpath("2 weeks") == Quantity("2", "weeks")
    assert parse_fhirpath("%`my const`") == Constant("my const")
    assert parse_fhirpath("a // comment\n + /* block */ b") == Binary("+", Identifier("a"), Identifier("b"))


def test_positions_are_recorded() -> None:
    node = parse_fhirpath("name.given.first()")
    assert isinstance(node, Call) and node.pos == 11
    assert [type(n).__name__ for n in walk(node)] == ["Call", "Member", "Identifier"]


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("@@", 0, "invalid date/time literal"),
        ("", 0, "empty expression"),
        ("a.", 2, "expected a name"),
        ("a +", 3, "expected an expression"),
        ("(a", 2, "expected ')'"),
        ("a b", 2, "unexpected token"),
        ("name[1", 6, "expected ']'"),
        ("'open", 0, "unterminated"),
        ("'bad \\q'", 5, "invalid escape"),
        ("$foo", 0, "unknown variable"),
        ("a.$this", 2, "expected a name"),
        ("a # b", 2, "unexpected character"),
        ("/* never closed", 0, "unterminated comment"),
        ("where(a,)", 8, "expected an expression"),
        ("'it''s'", 4, "unexpected token"),  # FHIRPath escapes a quote with \', not ''
    ],
)
def test_syntax_errors_say_where(text: str, position: int, message: str) -> None:
    with pytest.raises(FHIRPathSyntaxError) as info:
        parse_fhirpath(text)
    assert info.value.position == position
    assert message in info.value.message
    assert f"at position {position}" in info.value.message
    assert isinstance(info.value, ViewError)


def test_a_non_string_is_not_an_expression() -> None:
    with pytest.raises(ViewError, match="must be a string"):
        parse_fhirpath(1)  # type: ignore[arg-type]
