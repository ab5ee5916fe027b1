"""The landing report: one self-contained HTML page with inline SVG charts (no JavaScript, no
CDN: it renders offline), the same charts as a PNG (``report_charts``) and a CSV summary,
written next to the data (through the output's :class:`Store`: a local folder or HDFS).

Charts: rows per file of the batch, validation outcomes (files accepted / rejected per batch,
and violations per rule over all recorded batches), and trends across runs (rows and files
per batch). The history of batches is a JSON-lines file next to the data (``history.jsonl``),
appended by the ingest step whether a batch was accepted or rejected.

Pure Python, no Dagster.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from platform_assets.landing.store import Store
from platform_assets.landing.validation import RULES

GREEN = "#2e7d32"
RED = "#c62828"
BLUE = "#1565c0"
GREY = "#9e9e9e"


@dataclass(frozen=True)
class ReportPaths:
    html: str
    csv: str
    png: str


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_time(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(label: str, n: int = 28) -> str:
    return label if len(label) <= n else "…" + label[-(n - 1):]


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str,
              color: str = BLUE, unit: str = "") -> str:
    """Horizontal bars, one per label."""
    width, left, right, bar_h, gap, top = 760, 220, 80, 22, 8, 36
    height = top + max(1, len(labels)) * (bar_h + gap) + 10
    vmax = max([*values, 0]) or 1
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="20" class="title">{_esc(title)}</text>']
    if not labels:
        parts.append(f'<text x="{left}" y="{top + 15}" fill="{GREY}">no data</text>')
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * (bar_h + gap)
        w = (width - left - right) * (value / vmax)
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{_esc(_short(label))}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" '
                     f'fill="{color}"><title>{_esc(label)}: {value:g}</title></rect>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}">{value:,.0f}{_esc(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_columns(labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], *,
                    title: str) -> str:
    """Vertical stacked columns: ``series`` is (name, colour, values per label)."""
    width, height, left, bottom, top = 760, 300, 50, 70, 50
    n = max(1, len(labels))
    slot = (width - left - 10) / n
    col_w = min(48.0, slot * 0.7)
    totals = [sum(s[2][i] for s in series) for i in range(len(labels))]
    vmax = max([*totals, 0]) or 1
    plot_h = height - top - bottom
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="20" class="title">{_esc(title)}</text>']
    lx = left
    for name, color, _ in series:
        parts.append(f'<rect x="{lx}" y="30" width="12" height="12" fill="{color}"/>'
                     f'<text x="{lx + 16}" y="40">{_esc(name)}</text>')
        lx += 30 + 8 * len(name)
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
                 f'stroke="{GREY}"/>')
    parts.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{vmax:g}</text>'
                 f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>')
    if not labels:
        parts.append(f'<text x="{left + 10}" y="{top + plot_h / 2}" fill="{GREY}">no data</text>')
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - col_w) / 2
        y = top + plot_h
        for name, color, values in series:
            h = plot_h * (values[i] / vmax)
            if h > 0:
                y -= h
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{col_w:.1f}" height="{h:.1f}" '
                             f'fill="{color}"><title>{_esc(label)} {_esc(name)}: {values[i]:g}'
                             f'</title></rect>')
        parts.append(f'<text x="{x + col_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="end" '
                     f'transform="rotate(-35 {x + col_w / 2:.1f} {top + plot_h + 14})" '
                     f'class="small">{_esc(_short(label, 16))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(labels: Sequence[str], values: Sequence[float], *, title: str,
               color: str = BLUE, highlight: int | None = None) -> str:
    """A line with points, one per label (oldest first)."""
    width, height, left, bottom, top = 760, 260, 60, 60, 40
    plot_w, plot_h = width - left - 60, height - top - bottom
    vmax = max([*values, 0]) or 1
    n = len(values)
    step = plot_w / max(1, n - 1)
    pts = [(left + (i * step if n > 1 else plot_w / 2), top + plot_h - plot_h * (v / vmax))
           for i, v in enumerate(values)]
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="20" class="title">{_esc(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{GREY}"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="{GREY}"/>',
             f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{vmax:,.0f}</text>',
             f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>']
    if not values:
        parts.append(f'<text x="{left + 10}" y="{top + plot_h / 2}" fill="{GREY}">no data</text>')
    if len(pts) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>')
    for i, ((x, y), label) in enumerate(zip(pts, labels, strict=True)):
        fill = "#ef6c00" if i == highlight else color
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{fill}"><title>{_esc(label)}: '
                     f'{values[i]:g}</title></circle>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                     f'class="small">{_esc(_short(label, 10))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def read_history(store: Store, rel: str) -> list[dict[str, Any]]:
    """Batches recorded so far (oldest first); a torn last line is ignored."""
    out: list[dict[str, Any]] = []
    for line in (store.read_bytes(rel) or b"").decode("utf-8", "replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def append_history(store: Store, rel: str, entry: dict[str, Any]) -> None:
    store.append_line(rel, json.dumps(entry, sort_keys=True, default=str))


def latest_per_batch(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per batch (its latest record; a rerun replaces it), in first-seen order."""
    by_batch: dict[str, dict[str, Any]] = {}
    for h in history:
        by_batch[str(h.get("batch"))] = h
    return list(by_batch.values())


def summary_csv(files: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "rows", "bytes", "status", "violations", *RULES, "parquet_files"])
    for f in files:
        counts = f.get("rule_counts", {})
        w.writerow([f["file"], f["rows"], f["bytes"], f["status"], f.get("violations", 0),
                    *(counts.get(r, 0) for r in RULES), f.get("parquet_files", 0)])
    return buf.getvalue()


def render_html(*, dataset: str, batch: str, files: list[dict[str, Any]],
                history: list[dict[str, Any]], generated_at: float, output_uri: str,
                partition_by: str | None, csv_name: str = "summary.csv") -> str:
    batches = latest_per_batch(history)[-30:]
    labels = [str(b.get("batch"))[:12] for b in batches]
    current = next((i for i, b in enumerate(batches) if b.get("batch") == batch), None)
    rule_totals = {r: 0 for r in RULES}
    for b in batches:
        for r, c in (b.get("rule_counts") or {}).items():
            rule_totals[r] = rule_totals.get(r, 0) + int(c)
    total_rows = sum(int(f["rows"]) for f in files)
    charts = [
        bar_chart([f["file"] for f in files], [float(f["rows"]) for f in files],
                  title=f"Rows per file (batch {batch})"),
        stacked_columns(labels, [
            ("files accepted", GREEN, [float(b.get("files_ok", 0)) for b in batches]),
            ("files rejected", RED, [float(b.get("files_rejected", 0)) for b in batches]),
        ], title="Validation outcomes per batch"),
        bar_chart(list(rule_totals), [float(v) for v in rule_totals.values()],
                  title="Violations per rule (all recorded batches)", color=RED),
        line_chart(labels, [float(b.get("rows", 0)) for b in batches],
                   title="Trend: rows ingested per batch", highlight=current),
    ]
    file_rows = "".join(
        f"<tr><td>{_esc(f['file'])}</td><td class=num>{int(f['rows']):,}</td>"
        f"<td class=num>{int(f['bytes']):,}</td><td class={_esc(f['status'])}>{_esc(f['status'])}</td>"
        f"<td class=num>{int(f.get('parquet_files', 0))}</td></tr>"
        for f in files
    )
    hist_rows = "".join(
        f"<tr><td>{_esc(b.get('batch'))}</td><td>{_esc(_fmt_time(b.get('at')))}</td>"
        f"<td class={'ok' if b.get('status') == 'accepted' else 'rejected'}>{_esc(b.get('status'))}</td>"
        f"<td class=num>{int(b.get('files', 0))}</td><td class=num>{int(b.get('rows', 0)):,}</td>"
        f"<td>{_esc(b.get('first_violation') or '')}</td></tr>"
        for b in reversed(batches)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Landing report: {_esc(dataset)} batch {_esc(batch)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #212121; }}
h1 {{ font-size: 22px; margin: 0 0 4px 0; }}
.meta {{ color: #555; margin-bottom: 16px; }}
.chart {{ display: block; margin: 18px 0; font-size: 13px; }}
.chart .title {{ font-size: 15px; font-weight: bold; }}
.chart .small {{ font-size: 11px; }}
table {{ border-collapse: collapse; margin: 10px 0 24px 0; font-size: 13px; }}
td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
td.num {{ text-align: right; }}
td.ok, td.accepted {{ color: {GREEN}; font-weight: bold; }}
td.rejected {{ color: {RED}; font-weight: bold; }}
</style></head>
<body>
<h1>Landing report: {_esc(dataset)}</h1>
<div class="meta">batch <b>{_esc(batch)}</b> &middot; {len(files)} files &middot; {total_rows:,} rows
&middot; generated {_esc(_fmt_time(generated_at))} &middot; Parquet at {_esc(output_uri)}
{f"(partitioned by {_esc(partition_by)})" if partition_by else ""}
&middot; <a href="{_esc(csv_name)}">CSV summary</a></div>
{"".join(charts)}
<h2>Files in this batch</h2>
<table><tr><th>file</th><th>rows</th><th>bytes</th><th>status</th><th>parquet files</th></tr>
{file_rows}</table>
<h2>Batches</h2>
<table><tr><th>batch</th><th>at</th><th>outcome</th><th>files</th><th>rows</th><th>first violation</th></tr>
{hist_rows}</table>
</body></html>
"""


def write_report(store: Store, directory: str, **kwargs: Any) -> ReportPaths:
    """Write ``report.html``, ``summary.csv`` and ``charts.png`` (the charts as an image, for
    chats and mail) into ``directory`` (relative to ``store``), each via a temporary name;
    returns their URIs (absolute paths on a local store)."""
    from platform_assets.report_charts import render_png

    names = {"html": "report.html", "csv": "summary.csv", "png": "charts.png"}
    with tempfile.TemporaryDirectory(prefix="landing-report-") as tmp:
        png = os.path.join(tmp, names["png"])
        render_png(png, dataset=kwargs["dataset"], batch=kwargs["batch"], files=kwargs["files"],
                   batches=latest_per_batch(kwargs["history"])[-30:], rules=tuple(RULES))
        with open(png, "rb") as f:
            png_bytes = f.read()
        content = {"csv": summary_csv(kwargs["files"]).encode("utf-8"),
                   "html": render_html(**kwargs).encode("utf-8"), "png": png_bytes}
    for key in ("csv", "html", "png"):
        store.write_bytes(f"{directory}/{names[key]}", content[key])
    return ReportPaths(**{k: store.uri(f"{directory}/{n}") for k, n in names.items()})
