"""The pure validation rules: each violation names file, row and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from platform_assets.landing.validation import Rules, parse_value, validate_file

RULES = Rules(columns={"id": "int", "name": "string", "amount": "float", "dt": "date"},
              min_rows=1, max_rows=3, not_null=("id", "name"), unique=("id",))


def _check(tmp_path: Path, text: str, rules: Rules = RULES, name: str = "f.csv"):
    path = tmp_path / name
    path.write_text(text)
    return validate_file(str(path), rules, name=name)


@pytest.mark.parametrize(("text", "rule", "row", "column", "fragment"), [
    ("id,name,amount\n1,a,2\n", "schema.columns", 0, None, "missing dt"),
    ("id,name,amount,dt,extra\n1,a,2,2026-01-01,x\n", "schema.columns", 0, None, "unexpected extra"),
    ("id,name,amount,dt\n1,a,2,2026-01-01\n2,b,x,2026-01-01\n", "schema.type", 2, "amount", "'x'"),
    ("id,name,amount,dt\n1.5,a,2,2026-01-01\n", "schema.type", 1, "id", "integer"),
    ("id,name,amount,dt\n1,a,2,2026-02-30\n", "schema.type", 1, "dt", "YYYY-MM-DD"),
    ("id,name,amount,dt\n1,a,2,2026-01-01\n2,,3,2026-01-01\n", "not_null", 2, "name", "empty"),
    ("id,name,amount,dt\n1,a,2,2026-01-01\n2,b,2,2026-01-01\n1,c,2,2026-01-01\n", "unique", 3, "id",
     "first seen in row 1"),
    ("id,name,amount,dt\n", "rows.min", 0, None, "at least 1"),
    ("id,name,amount,dt\n" + "".join(f"{i},n,1,2026-01-01\n" for i in range(4)), "rows.max", 0, None,
     "at most 3 rows, got 4"),
    ("id,name,amount,dt\n1,a,2\n", "schema.columns", 1, None, "expected 4 fields, got 3"),
    ("", "schema.columns", 0, None, "empty"),
])
def test_rule_violation_names_file_row_and_rule(tmp_path, text, rule, row, column, fragment) -> None:
    result = _check(tmp_path, text)
    assert not result.ok
    v = result.violations[0]
    assert (v.file, v.rule, v.row, v.column) == ("f.csv", rule, row, column)
    assert fragment in v.message
    assert v.describe().startswith("f.csv ") and rule in v.describe()


def test_good_file_passes_and_counts_rows(tmp_path) -> None:
    result = _check(tmp_path, "dt,id,name,amount\n2026-01-01,1,a,\n2026-01-02,2,b,2.5\n\n")
    assert result.ok and result.rows == 2 and result.violation_count == 0


def test_every_violation_is_counted_but_the_list_is_capped(tmp_path) -> None:
    rules = Rules(columns={"id": "int"}, max_rows=None)
    result = _check(tmp_path, "id\n" + "x\n" * 250, rules)
    assert result.violation_count == 250 and len(result.violations) == 100
    assert result.rule_counts == {"schema.type": 250}


def test_jsonl_rows(tmp_path) -> None:
    rules = Rules(columns={"id": "int", "ok": "bool", "at": "timestamp"}, not_null=("id",),
                  format="jsonl")
    good = _check(tmp_path, '{"id": 1, "ok": true, "at": "2026-11-20T10:00:00Z"}\n{"id": 2}\n',
                  rules, "g.jsonl")
    assert good.ok and good.rows == 2
    bad = _check(tmp_path, '{"id": 1}\n{"ok": "maybe"}\nnot json\n{"id": 3, "zz": 1}\n', rules, "b.jsonl")
    assert [(v.row, v.rule) for v in bad.violations] == [
        (2, "not_null"), (2, "schema.type"), (3, "schema.columns"), (4, "schema.columns")]


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("int", "-3", -3), ("float", "1e3", 1000.0), ("bool", "TRUE", True), ("bool", "0", False),
    ("string", "", None), ("int", None, None),
])
def test_parse_value(kind, value, expected) -> None:
    assert parse_value(kind, value) == expected


@pytest.mark.parametrize(("kind", "value"), [("int", True), ("float", "nan"), ("bool", "yes"),
                                             ("timestamp", "yesterday")])
def test_parse_value_refuses(kind, value) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_value(kind, value)


@pytest.mark.parametrize(("kind", "text"), [
    ("int", "+5"), ("int", "1_000"), ("float", "1_000"), ("bool", "tRuE"),
    ("bool", "yes"), ("date", "20261120"), ("timestamp", "20 Nov 2026"),
    ("int", "9223372036854775808"), ("int", "-9223372036854775809"),  # beyond Parquet's int64
])
def test_what_the_parquet_conversion_refuses_the_validation_refuses(tmp_path, kind, text) -> None:
    """The rules accept exactly what pyarrow's CSV conversion reads, so a file that passed the
    checks never fails its conversion."""
    import pyarrow as pa

    from platform_assets.config import parse_spec
    from platform_assets.landing.parquet import read_table

    path = tmp_path / "v.csv"
    path.write_text(f"x\n{text}\n")
    assert not validate_file(str(path), Rules(columns={"x": kind})).ok
    spec = parse_spec({"clusters": {"a": {"uri": "a"}, "b": {"uri": "b"}}, "landing": {"l": {
        "source": {"cluster": "a"}, "raw": {"cluster": "b"}, "output": {"cluster": "b", "path": "o"},
        "columns": {"x": kind}}}})
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        read_table(str(path), spec.landing["l"])


def test_accepted_values_convert_to_the_declared_types(tmp_path) -> None:
    import datetime as dt

    from platform_assets.config import parse_spec
    from platform_assets.landing.parquet import read_table

    cols = {"i": "int", "f": "float", "b": "bool", "d": "date", "t": "timestamp", "s": "string"}
    path = tmp_path / "ok.csv"
    path.write_text("\ufeffi,f,b,d,t,s\n-3, 1e3 ,TRUE,2026-11-20,2026-11-20T10:00:00+02:00,x\n"
                    "7,.5,0,2026-11-21,2026-11-20 10:00:00,\n")
    assert validate_file(str(path), Rules(columns=cols)).ok
    spec = parse_spec({"clusters": {"a": {"uri": "a"}, "b": {"uri": "b"}}, "landing": {"l": {
        "source": {"cluster": "a"}, "raw": {"cluster": "b"}, "output": {"cluster": "b", "path": "o"},
        "columns": cols}}})
    rows = read_table(str(path), spec.landing["l"]).to_pylist()
    utc = dt.UTC
    assert [(r["i"], r["f"], r["b"], r["d"], r["s"]) for r in rows] == [
        (-3, 1000.0, True, dt.date(2026, 11, 20), "x"), (7, 0.5, False, dt.date(2026, 11, 21), None)]
    assert [r["t"].astimezone(utc).replace(tzinfo=None) for r in rows] == [
        dt.datetime(2026, 11, 20, 8, 0), dt.datetime(2026, 11, 20, 10, 0)]


def test_numbers_beyond_int64_or_a_double_are_violations_not_a_crash(tmp_path) -> None:
    """A JSON integer too large for a double made ``float()`` raise OverflowError, which ended
    the whole batch's validation with a traceback; one too large for int64 passed and then
    failed the batch's Parquet conversion. Both are a violation of that file's row now."""
    rules = Rules(columns={"id": "int", "amount": "float"}, format="jsonl")
    text = (f'{{"id": 1, "amount": 1{"0" * 400}}}\n'
            f'{{"id": {2**63}, "amount": 1}}\n'
            f'{{"id": {2**63 - 1}, "amount": 2.5}}\n')
    result = _check(tmp_path, text, rules, name="big.jsonl")
    assert [(v.row, v.rule, v.column) for v in result.violations] == [
        (1, "schema.type", "amount"), (2, "schema.type", "id")]
    assert "finite number" in result.violations[0].message
    assert "64-bit integer" in result.violations[1].message
