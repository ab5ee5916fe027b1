"""The landing report's charts as one PNG (matplotlib, Agg: no display, no browser), the image
the chat bot sends beside the HTML. The same four charts as the HTML page, drawn from pandas
tables: rows per file of the batch, files accepted/rejected per batch, violations per rule over
the recorded batches, and rows per batch over time.

Pure Python, no Dagster.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

GREEN, RED, BLUE = "#2e7d32", "#c62828", "#1565c0"


def tables(files: list[dict[str, Any]], batches: list[dict[str, Any]],
           rules: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(per file, per batch, violations per rule) as pandas objects."""
    per_file = pd.DataFrame(files, columns=["file", "rows", "status"]).astype({"rows": "int64"})
    per_batch = pd.DataFrame(
        [{"batch": str(b.get("batch"))[:12], "files_ok": int(b.get("files_ok", 0)),
          "files_rejected": int(b.get("files_rejected", 0)), "rows": int(b.get("rows", 0))}
         for b in batches],
        columns=["batch", "files_ok", "files_rejected", "rows"])
    counts = pd.DataFrame([b.get("rule_counts") or {} for b in batches], columns=list(rules))
    per_rule = counts.fillna(0).astype("int64").sum().reindex(list(rules), fill_value=0)
    return per_file, per_batch, per_rule


def render_png(path: str, *, dataset: str, batch: str, files: list[dict[str, Any]],
               batches: list[dict[str, Any]], rules: tuple[str, ...]) -> str:
    """Write the charts to ``path`` (via a temporary name); return ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    per_file, per_batch, per_rule = tables(files, batches, rules)
    fig = Figure(figsize=(12, 8), dpi=100, layout="constrained")
    fig.suptitle(f"Landing report: {dataset}, batch {batch}", fontsize=14, fontweight="bold")
    ax = fig.subplots(2, 2)

    a = ax[0][0]
    colours = [GREEN if s == "ok" else RED for s in per_file["status"]]
    a.barh(per_file["file"].str.slice(-28), per_file["rows"], color=colours or BLUE)
    a.invert_yaxis()
    a.set_title(f"Rows per file (batch {batch})")
    a.set_xlabel("rows")

    a = ax[0][1]
    x = range(len(per_batch))
    a.bar(x, per_batch["files_ok"], color=GREEN, label="files accepted")
    a.bar(x, per_batch["files_rejected"], bottom=per_batch["files_ok"], color=RED,
          label="files rejected")
    a.set_xticks(list(x), per_batch["batch"], rotation=45, ha="right", fontsize=8)
    a.set_title("Validation outcomes per batch")
    a.legend(loc="upper left", fontsize=8)

    a = ax[1][0]
    a.barh(per_rule.index, per_rule.values, color=RED)
    a.invert_yaxis()
    a.set_title("Violations per rule (all recorded batches)")

    a = ax[1][1]
    a.plot(list(x), per_batch["rows"], marker="o", color=BLUE)
    current = per_batch.index[per_batch["batch"] == str(batch)[:12]]
    if len(current):
        i = int(current[-1])
        a.plot([i], [per_batch["rows"].iloc[i]], marker="o", markersize=11, color=RED)
    a.set_xticks(list(x), per_batch["batch"], rotation=45, ha="right", fontsize=8)
    a.set_title("Trend: rows ingested per batch")

    tmp = f"{path}.tmp.png"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
