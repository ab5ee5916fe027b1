"""Numeric options are refused at parsing (exit 2, a message naming the option), never
passed on to crash the run: nan, inf, huge values, Unicode digits, wrong types."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.errors import UsageError
from replicator.options import CopyOptions, parse_max_delete
from tests.replicator.conftest import write

BAD_CLI = [
    ("--min-age", "nan"), ("--min-age", "inf"), ("--min-age", "1e300"), ("--min-age", "-1"),
    ("--max-delete", "\u00b2"), ("--max-delete", "\u0665\u0660%"), ("--max-delete", "150%"),
    ("--max-delete", "nan%"), ("--max-delete", "-3"),
    ("--bandwidth", "nan"), ("--bandwidth", "inf"), ("--bandwidth", "0"),
    ("--workers", "0"), ("--workers", "\u00b2"), ("--retries", "-1"), ("--retries", "nan"),
]


@pytest.mark.parametrize(("flag", "value"), BAD_CLI)
def test_cli_refuses_bad_numbers_with_exit_2(tmp_path: Path, run_cli, flag: str, value: str) -> None:
    src = tmp_path / "src"
    write(src / "a.txt", b"a")
    r = run_cli("copy", str(src), str(tmp_path / "dst"), flag, value, "--json")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert flag in r.stderr or flag.lstrip("-") in r.stderr.lower(), r.stderr
    assert not (tmp_path / "dst").exists()  # nothing was started


@pytest.mark.parametrize("field,value", [
    ("min_age_s", float("nan")), ("min_age_s", float("inf")), ("min_age_s", 1e300),
    ("bandwidth_mbps", float("nan")), ("bandwidth_mbps", float("inf")),
    ("workers", 2.5), ("workers", True), ("workers", "8"), ("retries", 1.5),
    ("retry_backoff_s", float("nan")), ("retry_backoff_s", -1.0),
    ("chunk_size", float("inf")), ("part_size", 10.5 * (1 << 20)), ("listing_workers", 0),
    ("batch_files", 0), ("max_delete", "\u00b2"), ("max_delete", "\u0967\u0966"),
])
def test_api_options_validated_once(field: str, value: object) -> None:
    with pytest.raises(UsageError) as info:
        CopyOptions(**{field: value}).validated()
    assert "expected" in str(info.value)


def test_good_values_still_accepted() -> None:
    o = CopyOptions(min_age_s=30, bandwidth_mbps=2.5, workers=4, retries=0, max_delete="10").validated()
    assert o.min_age_s == 30
    assert parse_max_delete("12.5%") == (0.125, None) and parse_max_delete("7") == (None, 7)
