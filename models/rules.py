"""A tiny, safe expression language for business rules (stage thresholds and the like).

An expression is Python syntax from a whitelist — numbers, strings in quotes, `true` / `false`, names,
unary `-`, `+ - * /`, comparisons (chained too), `in` / `not in` a parenthesised list of literals,
`and` / `or` / `not`, parentheses and `isna(name)` — compiled once into a tree of small closures over
numpy arrays, so one row costs microseconds and a million rows one vectorised pass.

Missing values: a comparison with a missing value is false (`!=` too), arithmetic propagates NaN,
division by zero gives NaN, and `isna(name)` is the way to test for missing.
"""

from __future__ import annotations

import ast
import difflib
import functools
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["Expression", "RuleError", "as_column", "compile_expression", "input_length", "is_scalar"]

Kind = Literal["condition", "number"]
Env = Mapping[str, np.ndarray]
Fn = Callable[[Env], Any]

_SCALARS = (float, int, str, type(None), np.generic)
_CONSTANT_NAMES = {"true": True, "false": False}
_FUNCTIONS = ("isna",)
_DESCRIBED = {"bool": "the condition", "number": "the number", "string": "the text", "column": "the name"}
_ARITHMETIC: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", np.add),
    ast.Sub: ("-", np.subtract),
    ast.Mult: ("*", np.multiply),
}
_ORDERING: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_SYMBOLS: dict[type, str] = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Pow: "**",
    ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|",
    ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.UAdd: "unary +", ast.Invert: "~",
}  # fmt: skip
_CONSTRUCTS: dict[type, str] = {
    ast.Attribute: "attribute access (.)",
    ast.Subscript: "a subscript ([])",
    ast.Lambda: "a lambda",
    ast.IfExp: "an if/else expression",
    ast.Dict: "a dictionary",
    ast.List: "a list outside `in (...)`",
    ast.Tuple: "a tuple outside `in (...)`",
    ast.Set: "a set outside `in (...)`",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.JoinedStr: "an f-string",
    ast.NamedExpr: "assignment (:=)",
    ast.Starred: "a starred expression",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


class RuleError(ValueError):
    """A rule expression that cannot be compiled or evaluated; the message names the expression."""


@dataclass(frozen=True)
class _Node:
    """A compiled sub-expression. `kind` is what it yields: "bool", "number", "string" (a literal) or
    "column" (a name: numbers or text, decided by how it is used)."""

    kind: Literal["bool", "number", "string", "column"]
    fn: Fn
    name: str | None = None


@dataclass(frozen=True)
class Expression:
    """A compiled rule expression: `kind` is "condition" (yields booleans) or "number" (float64)."""

    text: str
    names: frozenset[str]
    kind: Kind
    _fn: Fn = field(repr=False, compare=False)
    _order: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # a fixed reading order keeps error messages reproducible
        object.__setattr__(self, "_order", tuple(sorted(self.names)))

    def __reduce__(self) -> tuple[Any, ...]:
        # closures do not pickle; the text and the names it reads are all it takes to compile it again
        return compile_expression, (self.text, self.names)

    def evaluate(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The expression over `columns` (name -> array, Series or scalar; arrays share one length n):
        a bool array for a condition, float64 for a number, of length n (1 when everything is scalar)."""
        env: dict[str, np.ndarray] = {}
        n: int | None = None
        for name in self._order:
            try:
                value = columns[name]
            except KeyError:
                raise RuleError(f"rule {self.text!r}: the input has no column {name!r}") from None
            array = as_column(value)
            env[name] = array
            if is_scalar(value):
                continue
            if n is None:
                n = array.shape[0]
            elif array.shape[0] != n:
                raise RuleError(f"rule {self.text!r}: column {name!r} has {array.shape[0]} rows, others {n}")
        if n is None:
            n = input_length(columns)
        result = np.asarray(self._fn(env), dtype=bool if self.kind == "condition" else np.float64)
        if result.shape != (n,):
            result = np.broadcast_to(result, (n,)).copy()
        return result


def as_column(value: Any) -> np.ndarray:
    """A 1-D numpy array for one input column: float64 for numbers and booleans (missing -> NaN), object
    for text and categoricals (missing stays None/NaN). A scalar becomes one element."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype in (np.float64, object):
        return value
    if isinstance(value, float | int) and not isinstance(value, bool):
        return np.array((value,), dtype=np.float64)
    if isinstance(value, pd.Series | pd.Index | pd.api.extensions.ExtensionArray):
        dtype = value.dtype
        if not isinstance(dtype, pd.CategoricalDtype) and (
            pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
        ):
            return value.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.asarray(value, dtype=object)
    array = np.asarray(value)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise RuleError(f"a rule input must be one-dimensional, got shape {array.shape}")
    if array.dtype.kind in "biuf":
        return array.astype(np.float64, copy=False)
    if array.dtype.kind in "OUS":
        return array.astype(object, copy=False)
    raise RuleError(f"a rule input must hold numbers or text, got dtype {array.dtype}")


def is_scalar(value: Any) -> bool:
    """A single value rather than a column (checked without numpy's slower generic path where possible)."""
    if isinstance(value, np.ndarray):
        return value.ndim == 0
    return isinstance(value, _SCALARS) or np.ndim(value) == 0


def input_length(columns: Mapping[str, Any]) -> int:
    """Rows in an input: a frame's length, else the first column's; 1 when every value is a scalar."""
    if isinstance(columns, pd.DataFrame):
        return len(columns)
    return next((len(value) for value in columns.values() if not is_scalar(value)), 1)


def compile_expression(text: str, allowed_names: Collection[str]) -> Expression:
    """Parse and check `text` against the whitelist and `allowed_names`; raise RuleError otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError(f"rule {text!r}: expected a non-empty expression string")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"rule {text!r}: {_syntax_problem(text.strip(), exc)}") from None
    node = _Compiler(text).compile(tree.body)
    names = _read_names(tree, text, frozenset(allowed_names))
    if node.kind == "string":
        raise RuleError(f"rule {text!r}: a text literal alone is neither a condition nor a number")
    kind: Kind = "condition" if node.kind == "bool" else "number"
    if node.kind == "column":
        load = _numeric(node, text)
        # a copy: the caller's own column is never handed back to be written to
        return Expression(text=text, names=names, kind=kind, _fn=lambda env: np.array(load(env)))
    return Expression(text=text, names=names, kind=kind, _fn=node.fn)


def _syntax_problem(text: str, exc: SyntaxError) -> str:
    """Where the parser stopped and, for the usual slips, what to write instead."""
    offset = exc.offset or 0
    if not 0 < offset <= len(text):
        return f"{exc.msg} (the expression ends too early)"
    hints = {"=": "; compare with ==", "&": "; combine with and / or", "|": "; combine with and / or"}
    return f"{exc.msg} at column {offset} ({text[offset - 1 :]!r}){hints.get(text[offset - 1], '')}"


def _read_names(tree: ast.Expression, text: str, allowed: frozenset[str]) -> frozenset[str]:
    """The variable names `tree` reads; every unknown one is reported at once, with a close match."""
    function_names = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names = {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and id(n) not in function_names and n.id.lower() not in _CONSTANT_NAMES
    }
    unknown = sorted(names - allowed)
    if unknown:
        described = []
        for name in unknown:
            close = difflib.get_close_matches(name, allowed, n=1)
            described.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
        label = "name" if len(unknown) == 1 else "names"
        raise RuleError(f"rule {text!r}: unknown {label} {', '.join(described)}")
    return frozenset(names)


def _numeric(node: _Node, text: str) -> Fn:
    """`node`'s values as float64; a text column used as a number is an error naming it."""
    if node.kind == "number":
        return node.fn
    fn, name = node.fn, node.name

    def load(env: Env) -> np.ndarray:
        values = fn(env)
        if values.dtype == np.float64:
            return values
        try:
            return values.astype(np.float64)
        except (TypeError, ValueError):
            raise RuleError(f"rule {text!r}: column {name!r} holds text, not numbers") from None

    return load


def _missing(values: Any) -> Any:
    if isinstance(values, np.ndarray):
        return np.isnan(values) if values.dtype == np.float64 else pd.isna(values)
    return values is None or (isinstance(values, float) and values != values)


def _as_objects(values: Any) -> Any:
    return values.astype(object) if isinstance(values, np.ndarray) and values.dtype != object else values


class _Compiler:
    """Turns a checked AST into closures; every refusal names the expression and the construct."""

    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, problem: str) -> RuleError:
        return RuleError(f"rule {self.text!r}: {problem}")

    def compile(self, node: ast.expr) -> _Node:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            construct = _CONSTRUCTS.get(type(node), type(node).__name__)
            raise self.fail(f"{construct} is not allowed")
        return method(node)

    def number(self, node: ast.expr, role: str) -> Fn:
        compiled = self.compile(node)
        if compiled.kind not in ("number", "column"):
            raise self.fail(f"{role} needs a number, got {_DESCRIBED[compiled.kind]} {ast.unparse(node)!r}")
        return _numeric(compiled, self.text)

    def condition(self, node: ast.expr, role: str) -> Fn:
        compiled = self.compile(node)
        if compiled.kind != "bool":
            hint = " (compare it, e.g. `x > 0`)" if compiled.kind in ("number", "column") else ""
            described = f"{_DESCRIBED[compiled.kind]} {ast.unparse(node)!r}"
            raise self.fail(f"{role} needs a condition, got {described}{hint}")
        return compiled.fn

    # -- leaves ---------------------------------------------------------------------------------------
    def _Constant(self, node: ast.Constant) -> _Node:
        value = node.value
        if isinstance(value, bool):
            return _Node("bool", lambda env: value)
        if isinstance(value, int | float):
            number = float(value)
            return _Node("number", lambda env: number)
        if isinstance(value, str):
            return _Node("string", lambda env: value)
        if value is None:
            raise self.fail("None is not allowed; test for missing values with isna(name)")
        raise self.fail(f"the literal {value!r} is not allowed")

    def _Name(self, node: ast.Name) -> _Node:
        constant = _CONSTANT_NAMES.get(node.id.lower())
        if constant is not None:
            return _Node("bool", lambda env: constant)
        name = node.id
        return _Node("column", lambda env: env[name], name=name)

    def _Call(self, node: ast.Call) -> _Node:
        function = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        if function not in _FUNCTIONS:
            raise self.fail(f"calling {function}() is not allowed; the only function is isna(name)")
        if node.keywords or len(node.args) != 1 or not isinstance(node.args[0], ast.Name):
            raise self.fail("isna takes exactly one name, e.g. isna(days_since_last_purchase)")
        name = node.args[0].id
        if name.lower() in _CONSTANT_NAMES:
            raise self.fail("isna takes a column name, not true/false")
        return _Node("bool", lambda env: _missing(env[name]))

    # -- arithmetic -----------------------------------------------------------------------------------
    def _UnaryOp(self, node: ast.UnaryOp) -> _Node:
        if isinstance(node.op, ast.Not):
            operand = self.condition(node.operand, "not")
            return _Node("bool", lambda env: np.logical_not(operand(env)))
        if isinstance(node.op, ast.USub):
            if isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, int | float):
                return self._Constant(ast.Constant(-node.operand.value))
            operand = self.number(node.operand, "unary -")
            return _Node("number", lambda env: np.negative(operand(env)))
        raise self.fail(f"the operator {_SYMBOLS.get(type(node.op), type(node.op).__name__)} is not allowed")

    def _BinOp(self, node: ast.BinOp) -> _Node:
        if isinstance(node.op, ast.Div):
            left, right = self.number(node.left, "/"), self.number(node.right, "/")
            return _Node("number", lambda env: _divide(left(env), right(env)))
        if type(node.op) not in _ARITHMETIC:
            symbol = _SYMBOLS.get(type(node.op), type(node.op).__name__)
            raise self.fail(f"the operator {symbol} is not allowed (use + - * /)")
        symbol, function = _ARITHMETIC[type(node.op)]
        left, right = self.number(node.left, symbol), self.number(node.right, symbol)
        return _Node("number", lambda env: function(left(env), right(env)))

    # -- logic ----------------------------------------------------------------------------------------
    def _BoolOp(self, node: ast.BoolOp) -> _Node:
        word = "and" if isinstance(node.op, ast.And) else "or"
        parts = [self.condition(value, word) for value in node.values]
        combine = np.logical_and if word == "and" else np.logical_or
        return _Node("bool", lambda env: functools.reduce(combine, (part(env) for part in parts)))

    def _Compare(self, node: ast.Compare) -> _Node:
        if len(node.ops) > 1 and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
            raise self.fail("`in` / `not in` cannot be chained with other comparisons")
        operands = [node.left, *node.comparators]
        pairs = [self.pair(op, operands[i], operands[i + 1]) for i, op in enumerate(node.ops)]
        if len(pairs) == 1:
            return _Node("bool", pairs[0])
        return _Node("bool", lambda env: functools.reduce(np.logical_and, (pair(env) for pair in pairs)))

    def pair(self, op: ast.cmpop, left_node: ast.expr, right_node: ast.expr) -> Fn:
        """One comparison `left op right`; false wherever either side is missing."""
        symbol = _SYMBOLS.get(type(op), type(op).__name__)
        if isinstance(op, ast.In | ast.NotIn):
            return self.membership(isinstance(op, ast.NotIn), left_node, right_node)
        if isinstance(op, ast.Is | ast.IsNot):
            raise self.fail(f"`{symbol}` is not allowed; use == / != or isna(name)")
        if type(op) in _ORDERING:
            compare = _ORDERING[type(op)]
            for side in (left_node, right_node):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    raise self.fail(f"text can only be compared with ==, !=, in, not in, not with {symbol}")
            left, right = self.number(left_node, symbol), self.number(right_node, symbol)
            return lambda env: compare(left(env), right(env))
        negate = isinstance(op, ast.NotEq)
        left, right = self.compile(left_node), self.compile(right_node)
        kinds = {left.kind, right.kind}
        if "bool" in kinds:
            if kinds != {"bool"}:
                written = f"{ast.unparse(left_node)} {symbol} {ast.unparse(right_node)}"
                raise self.fail(f"{symbol} compares a condition with a value in {written!r}")
            compare = np.not_equal if negate else np.equal
            return lambda env: compare(left.fn(env), right.fn(env))
        if "string" in kinds:
            if "number" in kinds:
                raise self.fail(f"{symbol} compares text with a number")
            return _text_equality(left.fn, right.fn, negate)
        if "number" in kinds:
            return _number_equality(_numeric(left, self.text), _numeric(right, self.text), negate)
        return _column_equality(left.fn, right.fn, negate)

    def membership(self, negate: bool, left_node: ast.expr, right_node: ast.expr) -> Fn:
        word = "not in" if negate else "in"
        if not isinstance(right_node, ast.Tuple | ast.List | ast.Set) or not right_node.elts:
            raise self.fail(f"`{word}` needs a parenthesised list of literals, e.g. x {word} ('a', 'b')")
        values = []
        for element in right_node.elts:
            if not isinstance(element, ast.Constant) or isinstance(element.value, bool | type(None)):
                raise self.fail(f"`{word}` lists literals only, got {ast.unparse(element)!r}")
            if not isinstance(element.value, str | int | float):
                raise self.fail(f"`{word}` lists text or numbers, got {element.value!r}")
            values.append(element.value)
        texts = all(isinstance(v, str) for v in values)
        if not texts and any(isinstance(v, str) for v in values):
            raise self.fail(f"`{word}` mixes text and numbers")
        left = self.compile(left_node)
        if left.kind not in ("column", "string" if texts else "number"):
            raise self.fail(f"`{word}` needs a name on its left, got {ast.unparse(left_node)!r}")
        load = left.fn if texts else _numeric(left, self.text)
        items = tuple(values) if texts else tuple(float(v) for v in values)

        def member(env: Env) -> Any:
            candidates = _as_objects(load(env)) if texts else load(env)
            found = functools.reduce(np.logical_or, (np.asarray(candidates == v, dtype=bool) for v in items))
            return (
                np.logical_and(np.logical_not(found), np.logical_not(_missing(candidates)))
                if negate
                else found
            )

        return member


def _divide(numerator: Any, denominator: Any) -> Any:
    """numerator / denominator, NaN where the denominator is 0 (no warning)."""
    shape = np.broadcast_shapes(np.shape(numerator), np.shape(denominator))
    out = np.full(shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=np.not_equal(denominator, 0.0))


def _number_equality(left: Fn, right: Fn, negate: bool) -> Fn:
    if not negate:
        return lambda env: np.equal(left(env), right(env))

    def not_equal(env: Env) -> Any:
        a, b = left(env), right(env)
        return np.not_equal(a, b) & ~(np.isnan(a) | np.isnan(b))

    return not_equal


def _text_equality(left: Fn, right: Fn, negate: bool) -> Fn:
    def equality(env: Env) -> Any:
        a, b = _as_objects(left(env)), _as_objects(right(env))
        equal = np.asarray(a == b, dtype=bool)
        present = np.logical_not(np.logical_or(_missing(a), _missing(b)))
        return np.logical_and(np.logical_not(equal), present) if negate else np.logical_and(equal, present)

    return equality


def _column_equality(left: Fn, right: Fn, negate: bool) -> Fn:
    """Two names: numbers when both are numeric, text otherwise."""
    text = _text_equality(left, right, negate)

    def equality(env: Env) -> Any:
        a, b = left(env), right(env)
        if a.dtype != np.float64 or b.dtype != np.float64:
            return text(env)
        if negate:
            return np.not_equal(a, b) & ~(np.isnan(a) | np.isnan(b))
        return np.equal(a, b)

    return equality
