"""The rule expression language: what each construct evaluates to, missing-value semantics, and the
constructs it refuses (with messages a config author can act on)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest

from models.rules import RuleError, compile_expression

NAMES = ("x", "y", "days_since_last_event", "gap_ratio", "current_plan", "last_action")
NAN = math.nan


def evaluate(text: str, columns: dict) -> np.ndarray:
    return compile_expression(text, NAMES).evaluate(columns)


@pytest.mark.parametrize(
    ("text", "columns", "expected"),
    [
        # arithmetic and precedence
        ("x + y * 2", {"x": [1.0, 2.0], "y": [3.0, 4.0]}, [7.0, 10.0]),
        ("(x + y) * 2", {"x": [1.0, 2.0], "y": [3.0, 4.0]}, [8.0, 12.0]),
        ("x - y - 1", {"x": [10.0], "y": [3.0]}, [6.0]),
        ("-x / 4", {"x": [2.0, -8.0]}, [-0.5, 2.0]),
        ("x / y", {"x": [1.0, 0.0, 3.0], "y": [0.0, 0.0, 2.0]}, [NAN, NAN, 1.5]),
        ("x * 2", {"x": [NAN, 1.0]}, [NAN, 2.0]),
        ("x", {"x": [1, 2]}, [1.0, 2.0]),
        ("2 * 3", {"x": [1.0, 2.0, 3.0]}, [6.0, 6.0, 6.0]),
        # comparisons, chained
        ("x >= 3", {"x": [2.0, 3.0, 4.0]}, [False, True, True]),
        ("x < y", {"x": [1.0, 2.0], "y": [2.0, 2.0]}, [True, False]),
        ("1 < x <= 3", {"x": [1.0, 2.0, 3.0, 4.0]}, [False, True, True, False]),
        ("x == 2", {"x": [2.0, 2.5]}, [True, False]),
        ("x + 1 > y * 2", {"x": [3.0, 3.0], "y": [1.0, 2.0]}, [True, False]),
        # missing values: every comparison is false, != included; isna tests for missing
        ("x > 0", {"x": [NAN, 1.0]}, [False, True]),
        ("x <= 0", {"x": [NAN, -1.0]}, [False, True]),
        ("x == x", {"x": [NAN, 1.0]}, [False, True]),
        ("x != 1", {"x": [NAN, 1.0, 2.0]}, [False, False, True]),
        ("x != y", {"x": [NAN, 1.0, 1.0], "y": [1.0, NAN, 2.0]}, [False, False, True]),
        ("not x > 0", {"x": [NAN, 1.0]}, [True, False]),
        ("x + y > 0", {"x": [NAN, 1.0], "y": [1.0, 1.0]}, [False, True]),
        ("isna(x)", {"x": [NAN, 0.0]}, [True, False]),
        ("isna(x) or x > 5", {"x": [NAN, 1.0, 9.0]}, [True, False, True]),
        ("isna(current_plan)", {"current_plan": ["free", None, NAN]}, [False, True, True]),
        ("x > 0", {"x": [None, 1]}, [False, True]),
        # text: ==, !=, in, not in; missing is false for each
        ("current_plan == 'free'", {"current_plan": ["free", "pro", None]}, [True, False, False]),
        ("'free' == current_plan", {"current_plan": ["free", "pro"]}, [True, False]),
        ("current_plan != 'free'", {"current_plan": ["free", "pro", None, NAN]}, [False, True, False, False]),
        ("current_plan in ('basic', 'pro')", {"current_plan": ["free", "pro", None]}, [False, True, False]),
        ("current_plan not in ('basic', 'pro')", {"current_plan": ["free", "pro", None]}, [True, False, False]),
        ("x in (1, 2)", {"x": [1.0, 3.0, NAN]}, [True, False, False]),
        ("current_plan == last_action", {"current_plan": ["a", "b", None], "last_action": ["a", "c", None]},
         [True, False, False]),
        # booleans
        ("true", {"x": [1.0, 2.0]}, [True, True]),
        ("FALSE or x > 1", {"x": [1.0, 2.0]}, [False, True]),
        ("True and not false", {"x": [1.0]}, [True]),
        ("(x > 1) == true", {"x": [1.0, 2.0]}, [False, True]),
        # and binds tighter than or
        ("x > 5 or x > 1 and x < 3", {"x": [2.0, 4.0, 6.0]}, [True, False, True]),
        ("(x > 5 or x > 1) and x < 3", {"x": [2.0, 4.0, 6.0]}, [True, False, False]),
        # the default dormant rule on a vector
        (
            "days_since_last_event >= 30 or (gap_ratio >= 4 and days_since_last_event >= 14)",
            {"days_since_last_event": [40.0, 20.0, 20.0, NAN], "gap_ratio": [1.0, 5.0, 1.0, 9.0]},
            [True, True, False, False],
        ),
    ],
)  # fmt: skip
def test_evaluates(text: str, columns: dict, expected: list) -> None:
    result = evaluate(text, {name: np.asarray(values) for name, values in columns.items()})
    np.testing.assert_array_equal(result, np.asarray(expected))
    assert result.dtype == np.asarray(expected).dtype


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"x": 35.0, "y": 1.0}, [True]),  # scalars: one row
        ({"x": np.array([35.0]), "y": np.array([1.0])}, [True]),
        ({"x": pd.Series([35.0, 1.0, None]), "y": pd.Series([1.0, 1.0, 1.0])}, [True, False, False]),
        (
            {"x": pd.Series([35.0, None], dtype="Float64"), "y": 1.0},
            [True, False],
        ),  # pd.NA; a scalar broadcasts
        (pd.DataFrame({"x": [35.0, 1.0], "y": [1.0, 1.0]}), [True, False]),
        ({"x": np.array([], dtype=float), "y": np.array([], dtype=float)}, []),
    ],
)
def test_single_row_and_vector_inputs(columns, expected: list) -> None:
    np.testing.assert_array_equal(evaluate("x >= 30 and y == 1", columns), np.asarray(expected, dtype=bool))


def test_categorical_series_with_missing() -> None:
    plans = pd.Series(["free", None, "pro"], dtype=pd.CategoricalDtype(["free", "basic", "pro"]))
    np.testing.assert_array_equal(
        evaluate("current_plan != 'pro'", {"current_plan": plans}), [True, False, False]
    )


def test_an_expression_reading_no_column_takes_the_input_length() -> None:
    assert evaluate("true", {"x": np.zeros(4)}).tolist() == [True] * 4
    assert evaluate("1 + 1", {"x": 3.0}).tolist() == [2.0]


def test_names_are_those_read() -> None:
    expression = compile_expression("isna(x) or x > y and current_plan == 'free' or true", NAMES)
    assert expression.names == {"x", "y", "current_plan"}
    assert expression.kind == "condition"
    assert compile_expression("x / 2", NAMES).kind == "number"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "days_since_last_evnt > 3",
            "unknown name 'days_since_last_evnt' (did you mean 'days_since_last_event'?)",
        ),
        ("zzz > 3 or qqq < 1", "unknown names 'qqq', 'zzz'"),
        ("x.real > 3", "attribute access (.) is not allowed"),
        ("open('f') == 1", "calling open() is not allowed; the only function is isna(name)"),
        ("x.__class__()", "calling x.__class__() is not allowed"),
        ("isna(x + 1)", "isna takes exactly one name"),
        ("x[0] > 1", "a subscript ([]) is not allowed"),
        ("lambda: 1", "a lambda is not allowed"),
        ("x if y else 1", "an if/else expression is not allowed"),
        ("x ** 2 > 1", "the operator ** is not allowed"),
        ("x % 2 == 1", "the operator % is not allowed"),
        ("x > ", "invalid syntax (the expression ends too early)"),
        ("x = 3", "invalid syntax at column 3 ('= 3'); compare with =="),
        ("x > 1 && y > 1", "combine with and / or"),
        ("", "expected a non-empty expression string"),
        ("x is None", "`is` is not allowed; use == / != or isna(name)"),
        ("x == None", "None is not allowed; test for missing values with isna(name)"),
        ("current_plan < 'pro'", "text can only be compared with ==, !=, in, not in, not with <"),
        ("current_plan == 1 + 'a'", "+ needs a number, got the text \"'a'\""),
        ("x == 'a' + 1", "+ needs a number"),
        ("x > 1 and y", "and needs a condition, got the name 'y' (compare it, e.g. `x > 0`)"),
        ("not x", "not needs a condition"),
        ("x in 'abc'", "`in` needs a parenthesised list of literals"),
        ("x in (y, 1)", "`in` lists literals only, got 'y'"),
        ("x in ('a', 1)", "`in` mixes text and numbers"),
        ("x in (1, 2) == true", "`in` / `not in` cannot be chained"),
        ("(x > 1) in (1, 2)", "`in` needs a name on its left, got 'x > 1'"),
        ("'free'", "a text literal alone is neither a condition nor a number"),
        ("(x > 1) == 1", "== compares a condition with a value"),
        ("x == 'a' or 'a' == 1", "== compares text with a number"),
    ],
)
def test_rejects(text: str, message: str) -> None:
    with pytest.raises(RuleError) as raised:
        compile_expression(text, NAMES)
    assert message in str(raised.value)
    assert f"rule {text!r}" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        ("x > 1", {"y": [1.0]}, "the input has no column 'x'"),
        ("x > y", {"x": [1.0, 2.0], "y": [1.0, 2.0, 3.0]}, "column .y. has 3 rows, others 2"),
        ("current_plan > 1", {"current_plan": ["free"]}, "column 'current_plan' holds text, not numbers"),
    ],
)
def test_evaluation_errors_name_the_rule(text: str, columns: dict, message: str) -> None:
    expression = compile_expression(text, NAMES)
    with pytest.raises(RuleError, match=message) as raised:
        expression.evaluate(columns)
    assert text in str(raised.value)


def test_a_bare_name_returns_a_copy_of_the_column() -> None:
    column = np.array([1.0, 2.0])
    result = evaluate("x", {"x": column})
    result[0] = 99.0
    assert column.tolist() == [1.0, 2.0]


def test_a_compiled_expression_pickles() -> None:
    expression = compile_expression("x > 1 and current_plan == 'pro'", NAMES)
    copy = pickle.loads(pickle.dumps(expression))
    assert copy == expression
    assert copy.evaluate({"x": [2.0, 2.0], "current_plan": ["pro", "free"]}).tolist() == [True, False]
