"""Tests for lab.workbook.validate: a wrong parameter stops the run with a message naming it, its value and what is
allowed."""
from __future__ import annotations

import math

import pytest

from lab.workbook.validate import ParameterError, Rule, boolean, choice, int_list, integer, real, subset, validate


def _error(name: str, value: object, rule: Rule) -> str:
    with pytest.raises(ParameterError) as e:
        validate({name: value}, {name: rule})
    return str(e.value)


@pytest.mark.parametrize("name, value, rule, shown, allowed", [
    ("n_train", 0, integer(1, 5000), "0", ["1", "5000", "integer"]),
    ("n_train", 5001, integer(1, 5000), "5001", ["1", "5000"]),
    ("n_train", 2.0, integer(1), "2.0", ["1", "inf"]),
    ("n_train", "7", integer(1), "'7'", ["integer"]),
    ("lr", -0.5, real(0, 10), "-0.5", ["0", "10", "number"]),
    ("lr", "1e-3", real(0), "'1e-3'", ["number"]),
    ("flag", 1, boolean(), "1", ["True", "False"]),
    ("flag", "yes", boolean(), "'yes'", ["True", "False"]),
    ("dtype", "float16", choice("float64", "float32"), "'float16'", ["'float64'", "'float32'"]),
    ("dtypes", ["float64", "float64"], subset("float64", "float32"), "['float64', 'float64']",
     ["distinct", "'float64'", "'float32'"]),
    ("dtypes", ["float8"], subset("float64", "float32"), "['float8']", ["'float64'", "'float32'"]),
    ("dtypes", [], subset("float64", "float32"), "[]", ["at least 1"]),
    ("widths", [10, 0], int_list(1, 100), "[10, 0]", ["1", "100", "integers"]),
    ("widths", [], int_list(1, 100, min_len=2), "[]", ["at least 2"]),
    ("widths", 10, int_list(1), "10", ["list"]),
])
def test_message_names_parameter_value_and_allowed(name, value, rule, shown, allowed) -> None:
    msg = _error(name, value, rule)
    assert f"'{name}'" in msg
    assert shown in msg
    assert rule.allowed in msg
    for a in allowed:
        assert a in msg, (a, msg)


def test_bool_is_not_an_integer() -> None:
    for v in (True, False):
        msg = _error("depth", v, integer(0, 5))
        assert "'depth'" in msg and repr(v) in msg and "bool" in msg
    assert not int_list(0, 5).check([1, True])
    assert not real().check(True)


@pytest.mark.parametrize("v", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected_as_real(v: float) -> None:
    msg = _error("sigma", v, real())
    assert "'sigma'" in msg and repr(v) in msg


def test_choice_rejects_float13() -> None:
    msg = _error("dtype", "float13", choice("float64", "float32"))
    assert "'dtype'" in msg and "'float13'" in msg and "'float64'" in msg and "'float32'" in msg


def test_valid_values_pass_and_are_returned() -> None:
    rules = {"n": integer(1, 10), "lr": real(0, 1), "flag": boolean(), "dtype": choice("float64", "float32"),
             "dtypes": subset("float64", "float32"), "widths": int_list(1, 100)}
    values = {"n": 10, "lr": 1, "flag": False, "dtype": "float32", "dtypes": ["float32", "float64"],
              "widths": (1, 100), "ignored": object()}
    out = validate(values, rules)
    assert out == {k: values[k] for k in rules}
    assert isinstance(ParameterError("x"), ValueError)


def test_missing_parameter_named() -> None:
    with pytest.raises(ParameterError, match=r"'lr' is missing"):
        validate({}, {"lr": real(0)})


def test_relation_failure_names_its_parameter() -> None:
    vals = {"n_train": 4000, "n_test": 2000}
    rules = {"n_train": integer(1), "n_test": integer(1)}
    rel = [("n_test", vals["n_test"] <= vals["n_train"] / 4, "must be at most n_train / 4")]
    with pytest.raises(ParameterError) as e:
        validate(vals, rules, rel)
    assert "'n_test'" in str(e.value) and "at most n_train / 4" in str(e.value)
    assert validate(vals, rules, [("n_test", True, "never shown")]) == vals


def test_first_bad_parameter_is_reported() -> None:
    with pytest.raises(ParameterError) as e:
        validate({"a": 1, "b": -1, "c": -1}, {"a": integer(0), "b": integer(0), "c": integer(0)})
    assert "'b'" in str(e.value) and "'c'" not in str(e.value)


def test_int_csv_rule() -> None:
    from lab.workbook.validate import ParameterError, int_csv, validate
    assert validate({"w": "2, 3,5"}, {"w": int_csv(1, 10, min_len=2)}) == {"w": "2, 3,5"}
    for bad in ["2", "2,x", "0,3", "2,30", 5, ""]:
        with pytest.raises(ParameterError, match="'w'"):
            validate({"w": bad}, {"w": int_csv(1, 10, min_len=2)})
    for dup in ["2,2", "3, 3, 5"]:  # duplicates where distinct values are needed
        with pytest.raises(ParameterError, match="distinct"):
            validate({"w": dup}, {"w": int_csv(1, 10, min_len=2)})
    assert validate({"w": "2,2"}, {"w": int_csv(1, 10, min_len=2, distinct=False)}) == {"w": "2,2"}


@pytest.mark.parametrize("values, named", [
    ({"h_min": "abc", "decades": 13.0}, "'h_min' = 'abc' (str)"),   # was "can't multiply sequence by non-int"
    ({"h_min": 1e-12, "decades": 1e12}, "'decades' = 1000000000000.0"),  # was OverflowError
    ({"h_min": 1e-3, "decades": 19.0}, "'decades' = 19.0 is not allowed: h_min·10^decades must stay ≤ 1e6"),
])
def test_types_are_checked_before_relations(values: dict, named: str) -> None:
    """A relation is a function, called only after every parameter passed its own rule."""
    rules = {"h_min": real(1e-300, 1e-3), "decades": real(4.0, 20.0)}
    with pytest.raises(ParameterError) as e:
        validate(values, rules, [("decades", lambda: values["h_min"] * 10 ** values["decades"] <= 1e6,
                                  "h_min·10^decades must stay ≤ 1e6")])
    assert named in str(e.value)


def test_a_relation_that_raises_is_named() -> None:
    with pytest.raises(ParameterError, match=r"'d' = 0: d must divide n \(could not be checked: ZeroDivisionError"):
        validate({"n": 4, "d": 0}, {"n": integer(0), "d": integer(0)}, [("d", lambda: 4 % 0 == 0, "d must divide n")])


def test_help_params_tells_each_parameters_own_rule() -> None:
    """--help-params reads the rules dict of the validation cell, so rules sharing a source line stay apart."""
    from lab.workbook.runner import _rules_in

    cell = ('CH = "02"\nC = start_chapter(CH, globals(), {"n": integer(10, 10**6), "d": integer(1, 4096),\n'
            '    "noise_std": real(0.0, 100.0), "device": choice("cpu", "cuda")})\n')
    assert _rules_in(cell) == {"n": "integer(10, 10**6)", "d": "integer(1, 4096)", "noise_std": "real(0.0, 100.0)",
                               "device": 'choice("cpu", "cuda")'}
    assert _rules_in("%matplotlib inline\n" + cell)["d"] == "integer(1, 4096)"
