"""The landing kind's blocking checks on ``ingested``: one per rule group."""

from __future__ import annotations

from typing import Any

import dagster as dg

from platform_assets.landing.names import ingested_key
from platform_assets.landing.validation import (
    RULE_COLUMNS,
    RULE_MAX_ROWS,
    RULE_MIN_ROWS,
    RULE_NOT_NULL,
    RULE_TYPE,
    RULE_UNIQUE,
    FileResult,
)

CHECKS: dict[str, tuple[str, ...]] = {
    "schema": (RULE_COLUMNS, RULE_TYPE),
    "row_count": (RULE_MIN_ROWS, RULE_MAX_ROWS),
    "not_null": (RULE_NOT_NULL,),
    "unique": (RULE_UNIQUE,),
}
CHECK_DESCRIPTIONS = {
    "schema": "every file has the declared columns, and every value parses as its column's type",
    "row_count": "every file's row count is within the declared bounds",
    "not_null": "no empty value in a not-null column",
    "unique": "no duplicate key (the declared unique columns) within a file",
}


def check_keys(name: str) -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(ingested_key(name), c) for c in CHECKS]


def check_results(key: dg.AssetKey, results: list[FileResult]) -> list[dg.AssetCheckResult]:
    """One blocking check result per rule group; a failing one names file, row and rule."""
    out = []
    for check, rules in CHECKS.items():
        hits = [v for r in results for v in r.violations if v.rule in rules]
        count = sum(r.rule_counts.get(rule, 0) for r in results for rule in rules)
        files = sorted({r.file for r in results if any(r.rule_counts.get(x) for x in rules)})
        md: dict[str, Any] = {"files_checked": len(results), "violations": count}
        description = CHECK_DESCRIPTIONS[check]
        if hits:
            first = hits[0]
            md.update({
                "first_violation": first.describe(),
                "file": first.file,
                "row": first.row,
                "rule": first.rule,
                "failing_files": ", ".join(files[:20]),
                "examples": dg.MetadataValue.md(
                    "\n".join(f"- {v.describe()}" for v in hits[:20])
                ),
            })
            description = f"{count} violation(s); first: {first.describe()}"
        out.append(dg.AssetCheckResult(
            asset_key=key, check_name=check, passed=not count,
            severity=dg.AssetCheckSeverity.ERROR, metadata=md, description=description[:1000],
        ))
    return out
