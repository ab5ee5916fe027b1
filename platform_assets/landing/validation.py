"""Validation rules for landing files: pure functions, no Dagster.

A landing dataset declares its columns and types, row-count bounds per file, columns that must
not be null and key columns whose combination must be unique within a file. ``validate_file``
reads one CSV (header line first) or JSON-lines file and returns a :class:`FileResult` whose
violations each name the file, the row (1-based data row; 0 for the header or the file as a
whole) and the rule:

- ``schema.columns``: the header (CSV) or an object's keys (JSONL) differ from the declared columns;
- ``schema.type``: a value does not parse as its column's type;
- ``rows.min`` / ``rows.max``: the file has too few / too many data rows;
- ``not_null``: an empty value (CSV ``""``; JSON ``null`` or a missing key) in a not-null column;
- ``unique``: a key already seen in an earlier row of the same file.

An empty value is a null; types are ``string``, ``int``, ``float``, ``bool`` (true/false/1/0),
``date`` (YYYY-MM-DD) and ``timestamp`` (ISO 8601; without an offset: UTC), accepted exactly
as the Parquet conversion reads them (an ``int`` must fit Parquet's int64, a ``float`` a finite
double), so a file the validation passes is one the conversion can write.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RULE_COLUMNS = "schema.columns"
RULE_TYPE = "schema.type"
RULE_MIN_ROWS = "rows.min"
RULE_MAX_ROWS = "rows.max"
RULE_NOT_NULL = "not_null"
RULE_UNIQUE = "unique"
RULES = (RULE_COLUMNS, RULE_TYPE, RULE_MIN_ROWS, RULE_MAX_ROWS, RULE_NOT_NULL, RULE_UNIQUE)
MAX_LISTED = 100  # violations kept per file (all are counted)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT_RE = re.compile(r"^-?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BOOLS = {"true": True, "True": True, "TRUE": True, "1": True,
          "false": False, "False": False, "FALSE": False, "0": False}


@dataclass(frozen=True)
class Rules:
    columns: Mapping[str, str]  # column -> type
    min_rows: int = 0
    max_rows: int | None = None
    not_null: Sequence[str] = ()
    unique: Sequence[str] = ()
    format: str = "csv"


@dataclass(frozen=True)
class Violation:
    file: str
    row: int  # 1-based data row; 0: the header / the file as a whole
    rule: str
    message: str
    column: str | None = None

    def describe(self) -> str:
        where = f"row {self.row}" if self.row else "file"
        col = f" column {self.column!r}" if self.column else ""
        return f"{self.file} {where}{col}: {self.rule}: {self.message}"


@dataclass
class FileResult:
    file: str
    rows: int = 0
    bytes: int = 0
    violations: list[Violation] = field(default_factory=list)
    violation_count: int = 0
    rule_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def add(self, v: Violation) -> None:
        self.violation_count += 1
        self.rule_counts[v.rule] = self.rule_counts.get(v.rule, 0) + 1
        if len(self.violations) < MAX_LISTED:
            self.violations.append(v)

    @property
    def first(self) -> Violation | None:
        return self.violations[0] if self.violations else None


def parse_value(kind: str, value: Any) -> Any:
    """The typed value of ``value`` for a column of type ``kind``; ``None`` for a null.
    Raises ``ValueError`` naming what was expected."""
    if value is None or value == "":
        return None
    if kind == "string":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and _INT_RE.match(value.strip()))
        ):
            raise ValueError(f"expected an integer, got {value!r}")
        out = int(value)
        if not _INT64_MIN <= out <= _INT64_MAX:  # Parquet's int64: the conversion could not
            raise ValueError(f"expected a 64-bit integer, got {value!r}")
        return out
    if kind == "float":
        if isinstance(value, bool) or not (
            isinstance(value, int | float) or (isinstance(value, str) and _FLOAT_RE.match(value.strip()))
        ):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            out = float(value)
        except OverflowError:  # a JSON integer beyond a double's range
            raise ValueError(f"expected a finite number, got {str(value)[:40]!r}...") from None
        if math.isnan(out) or math.isinf(out):
            raise ValueError(f"expected a finite number, got {value!r}")
        return out
    if kind == "bool":
        if isinstance(value, bool):
            return value
        key = str(value)
        if key not in _BOOLS:
            raise ValueError(f"expected true/false/1/0, got {value!r}")
        return _BOOLS[key]
    if kind == "date":
        if not (isinstance(value, str) and _DATE_RE.match(value)):
            raise ValueError(f"expected a date YYYY-MM-DD, got {value!r}")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected a date YYYY-MM-DD, got {value!r}") from None
    if kind == "timestamp":
        if not isinstance(value, str):
            raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}")
        try:  # a value without an offset is taken as UTC
            ts = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)
        except ValueError:
            raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}") from None
    raise ValueError(f"unknown column type {kind!r}")


def _csv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # a leading BOM is not a column
        yield from enumerate(csv.reader(f))


def _jsonl_rows(path: str, result: FileResult) -> Iterator[tuple[int, dict[str, Any] | None]]:
    with open(path, encoding="utf-8") as f:
        n = 0
        for line in f:
            if not line.strip():
                continue
            n += 1
            try:
                obj = json.loads(line)
            except ValueError as exc:
                result.add(Violation(result.file, n, RULE_COLUMNS, f"not a JSON object: {exc.msg}"))
                yield n, None
                continue
            if not isinstance(obj, dict):
                result.add(Violation(result.file, n, RULE_COLUMNS, "expected a JSON object"))
                yield n, None
                continue
            yield n, obj


def validate_file(path: str, rules: Rules, *, name: str | None = None) -> FileResult:
    """Check one landing file against ``rules``; ``name`` is how the file is reported."""
    import os

    result = FileResult(file=name or os.path.basename(path), bytes=os.path.getsize(path))
    declared = list(rules.columns)
    seen_keys: dict[tuple, int] = {}
    try:
        if rules.format == "jsonl":
            rows: Iterator[tuple[int, dict[str, Any] | None]] = _jsonl_rows(path, result)
        else:
            rows = _csv_rows_as_dicts(path, declared, result)
            if rows is None:
                return result
        for n, obj in rows:
            result.rows += 1
            if obj is None:
                continue
            _check_row(result, n, obj, rules, declared, seen_keys)
    except UnicodeDecodeError as exc:
        result.add(Violation(result.file, result.rows + 1, RULE_COLUMNS,
                             f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
        return result
    except csv.Error as exc:
        result.add(Violation(result.file, result.rows + 1, RULE_COLUMNS, f"unreadable CSV: {exc}"))
        return result
    if result.rows < rules.min_rows:
        result.add(Violation(result.file, 0, RULE_MIN_ROWS,
                             f"expected at least {rules.min_rows} rows, got {result.rows}"))
    if rules.max_rows is not None and result.rows > rules.max_rows:
        result.add(Violation(result.file, 0, RULE_MAX_ROWS,
                             f"expected at most {rules.max_rows} rows, got {result.rows}"))
    return result


def _csv_rows_as_dicts(
    path: str, declared: list[str], result: FileResult
) -> Iterator[tuple[int, dict[str, Any] | None]] | None:
    """Check the header; then yield each data row as a dict (None for a malformed row)."""
    it = _csv_rows(path)
    first = next(it, None)
    if first is None:
        result.add(Violation(result.file, 0, RULE_COLUMNS,
                             f"expected a header line with columns {', '.join(declared)}; the file is empty"))
        return None
    header = first[1]
    missing = [c for c in declared if c not in header]
    extra = [c for c in header if c not in declared]
    dupes = sorted({c for c in header if header.count(c) > 1})
    if missing or extra or dupes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        if dupes:
            parts.append(f"repeated {', '.join(dupes)}")
        result.add(Violation(result.file, 0, RULE_COLUMNS,
                             f"header: {'; '.join(parts)} (expected {', '.join(declared)})"))
        return None

    def gen() -> Iterator[tuple[int, dict[str, Any] | None]]:
        for n, row in it:
            if not row:  # a blank line
                continue
            if len(row) != len(header):
                result.add(Violation(result.file, n, RULE_COLUMNS,
                                     f"expected {len(header)} fields, got {len(row)}"))
                yield n, None
                continue
            yield n, dict(zip(header, row, strict=True))

    return gen()


def _check_row(result: FileResult, n: int, obj: Mapping[str, Any], rules: Rules,
               declared: list[str], seen_keys: dict[tuple, int]) -> None:
    if rules.format == "jsonl":
        extra = [k for k in obj if k not in rules.columns]
        if extra:
            result.add(Violation(result.file, n, RULE_COLUMNS,
                                 f"unexpected keys {', '.join(extra)} (expected {', '.join(declared)})"))
    for col, kind in rules.columns.items():
        value = obj.get(col)
        try:
            typed = parse_value(kind, value)
        except ValueError as exc:
            result.add(Violation(result.file, n, RULE_TYPE, f"{kind}: {exc}", column=col))
            continue
        if typed is None and col in rules.not_null:
            result.add(Violation(result.file, n, RULE_NOT_NULL, "expected a value, got an empty one",
                                 column=col))
    if rules.unique:
        key = tuple(obj.get(c) for c in rules.unique)
        key = tuple(json.dumps(k, sort_keys=True) if isinstance(k, dict | list) else k for k in key)
        first = seen_keys.get(key)
        if first is not None:
            shown = ", ".join(f"{c}={v!r}" for c, v in zip(rules.unique, key, strict=True))
            result.add(Violation(result.file, n, RULE_UNIQUE,
                                 f"duplicate key ({shown}), first seen in row {first}",
                                 column=",".join(rules.unique)))
        else:
            seen_keys[key] = n
