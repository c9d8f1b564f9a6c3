"""A multi grader's `calculate_output`: arithmetic over its sub-graders' scores, parsed into a tree of allowed nodes
and computed by walking it. Nothing is ever handed to `eval`: a name is a sub-grader's score, a call one of
FUNCTIONS, and anything else (attributes, subscripts, comprehensions, strings, lambdas) is refused when parsed."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_LENGTH = 1000
"""The longest formula, in characters."""

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}
"""The functions a formula may call (OpenAI's list)."""

BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: math.pow,
}
UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class FormulaError(ValueError):
    """A formula that cannot be parsed or computed."""


@dataclass(frozen=True)
class Formula:
    """A parsed formula over named scores."""

    text: str
    tree: ast.expr

    @classmethod
    def parse(cls, text: str, names: tuple[str, ...]) -> Formula:
        """Parse and check every node; FormulaError says what is not allowed."""
        if len(text) > MAX_LENGTH:
            raise FormulaError(f"calculate_output is longer than {MAX_LENGTH} characters")
        try:
            # OpenAI writes powers with ^, which binds tighter than * as ** does (Python's ^ would bind looser)
            tree = ast.parse(text.strip().replace("^", "**"), mode="eval").body
        except SyntaxError as exc:
            raise FormulaError(f"calculate_output does not parse: {exc.msg}") from None
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            _check(node, names, called)
        return cls(text, tree)

    def compute(self, scores: Mapping[str, float]) -> float:
        """The formula's value; FormulaError for a value that is not a finite number (0/0, a huge power)."""
        try:
            value = float(_value(self.tree, scores))
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise FormulaError(f"calculate_output could not be computed: {exc}") from None
        if not math.isfinite(value):
            raise FormulaError("calculate_output is not a finite number")
        return value


def _check(node: ast.AST, names: tuple[str, ...], called: set[int]) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise FormulaError(f"calculate_output may hold numbers only, not {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id not in names and id(node) not in called:
            raise FormulaError(f"calculate_output names {node.id!r}, which is not one of the graders {list(names)}")
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise FormulaError(f"calculate_output may call only {', '.join(FUNCTIONS)}")
        if not node.args:
            raise FormulaError(f"calculate_output calls {node.func.id} without arguments")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in BINARY:
            raise FormulaError("calculate_output may use + - * / ^ ** only")
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in UNARY:
            raise FormulaError("calculate_output may use + - * / ^ ** only")
    elif not isinstance(node, ast.operator | ast.unaryop | ast.Load):
        raise FormulaError(f"calculate_output may not hold {type(node).__name__}")


def _value(node: ast.expr, scores: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(scores[node.id])
    if isinstance(node, ast.BinOp):
        return BINARY[type(node.op)](_value(node.left, scores), _value(node.right, scores))
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](_value(node.operand, scores))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # _check allowed nothing else
    return float(FUNCTIONS[node.func.id](*(_value(a, scores) for a in node.args)))
