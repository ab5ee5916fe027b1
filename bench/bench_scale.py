"""Scale measurements for the copy engine (issue 6).

1. Listing + diff of synthetic trees of 100 k and 1 M entries (10 M with ``--sizes``), each
   size and scenario in its own subprocess so ``ru_maxrss`` is that run's peak:
   * ``first``: no manifest; the source is listed, the (empty) destination is listed, and
     every file is planned as a copy;
   * ``incremental``: a manifest of N rows exists (written by a separate setup process) and
     1 % of the files changed: the source is listed and joined against the manifest.
   The synthetic file system (``synth://``) yields entries from arithmetic, touching no disk,
   so the figures are the engine's own cost (listing pipeline, SQLite, diff), not a store's.
2. Spark executor overhead against the local executor on a real 20,000-file tree
   (local -> local, ``local[2]``): session start-up, a full copy, and a no-op rerun.

Run: ``.venv/bin/python -m bench.bench_scale`` (``--quick`` for 10 k / 2 k files).
Prints a table and writes ``.bench/bench_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from replicator.filesystems.base import DIR, FILE, Capabilities, FileInfo, FileSystem, Writer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".bench"
BASE_MTIME_NS = 1_750_000_000_000_000_000


# ---------------------------------------------------------------------------- synthetic tree
class SyntheticFileSystem(FileSystem):
    """``synth:///n<N>?fanout=F&changed=P``: N files in directories of F files each.

    File i has a size derived from i and a fixed mtime; with ``changed=P`` every
    ``1/P``-th file has a newer mtime (an incremental run's changes). Read-only."""

    scheme = "synth"
    capabilities = Capabilities(mtime_precision_ns=1, atomic_rename=False, directories=True)

    def __init__(self, n: int, fanout: int = 1000, changed: float = 0.0) -> None:
        self.n, self.fanout, self.changed = int(n), int(fanout), float(changed)
        self.every = round(1 / self.changed) if self.changed > 0 else 0

    @classmethod
    def from_uri(cls, uri: str) -> tuple[FileSystem, str]:
        parts = urlsplit(uri)
        root = parts.path.rstrip("/") or "/"
        n = int(root.rsplit("/n", 1)[-1])
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        return cls(n, int(q.get("fanout", 1000)), float(q.get("changed", 0.0))), root

    def options(self) -> dict[str, Any]:
        return {"n": self.n, "fanout": self.fanout, "changed": self.changed}

    def uri(self, path: str) -> str:  # the pair key: independent of ``changed``
        return f"synth://{path.lstrip('/')}"

    @staticmethod
    def size_of(i: int) -> int:
        return (i * 2654435761) % 1_000_000 + 1

    def mtime_of(self, i: int) -> int:
        return BASE_MTIME_NS + (10**9 if self.every and i % self.every == 0 else 0)

    def _dirs(self) -> int:
        return (self.n + self.fanout - 1) // self.fanout

    def list_dir(self, path: str) -> list[FileInfo]:
        rel = path.rsplit("/", 1)[-1]
        if rel.startswith("n"):  # the root
            return [FileInfo(f"{path}/d{d:06d}", DIR, 0, BASE_MTIME_NS) for d in range(self._dirs())]
        d = int(rel[1:])
        lo, hi = d * self.fanout, min(self.n, (d + 1) * self.fanout)
        return [FileInfo(f"{path}/part-{i:09d}.parquet", FILE, self.size_of(i), self.mtime_of(i), 0o644)
                for i in range(lo, hi)]

    def stat(self, path: str) -> FileInfo | None:
        name = path.rsplit("/", 1)[-1]
        if name.startswith(("n", "d")):
            return FileInfo(path, DIR, 0, BASE_MTIME_NS)
        return None

    def manifest_rows(self, root: str):
        """Manifest rows of a completed copy of this tree, streamed (setup only)."""
        for i in range(self.n):
            d = i // self.fanout
            yield (f"d{d:06d}/part-{i:09d}.parquet", FILE, self.size_of(i), BASE_MTIME_NS, None)
        for d in range(self._dirs()):
            yield (f"d{d:06d}", DIR, 0, BASE_MTIME_NS, None)

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        raise NotImplementedError("synthetic tree: listing only")

    def open_write(self, path: str, *, mtime_ns: int | None = None,
                   expect_version: str | None = None) -> Writer:
        raise NotImplementedError("synthetic tree: read-only")

    def makedirs(self, path: str) -> None:
        raise NotImplementedError

    def rename(self, src: str, dst: str) -> None:
        raise NotImplementedError

    def delete_file(self, path: str) -> None:
        raise NotImplementedError


def _register() -> None:
    from replicator.filesystems.registry import register

    register("synth", SyntheticFileSystem)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


# ---------------------------------------------------------------------------- child processes
def child_setup_manifest(n: int, state: str, dst: str) -> dict[str, Any]:
    """Write the manifest of a completed copy of synth N -> dst (not measured)."""
    _register()
    from replicator.filesystems.registry import resolve
    from replicator.state import open_store

    fs, root = resolve(f"synth:///n{n}")
    store = open_store(state)
    pair = store.pair_id(fs.uri(root), os.path.realpath(dst))
    t0 = time.perf_counter()
    batch: list[tuple] = []
    for row in fs.manifest_rows(root):  # type: ignore[attr-defined]
        batch.append(row)
        if len(batch) >= 50_000:
            store.commit(pair, record=batch)
            batch = []
    if batch:
        store.commit(pair, record=batch)
    store.close()
    return {"setup_s": round(time.perf_counter() - t0, 2)}


def child_plan(n: int, state: str, dst: str, changed: float) -> dict[str, Any]:
    """List + diff through the engine (``replicator.api.plan``): measured."""
    _register()
    from replicator import api
    from replicator.options import CopyOptions

    base_rss = _current_rss_mib()
    t0 = time.perf_counter()
    report = api.plan(f"synth:///n{n}?changed={changed}", dst,
                      CopyOptions(state_path=state, listing_workers=4))
    elapsed = time.perf_counter() - t0
    return {
        "n": n, "seconds": round(elapsed, 2), "entries_per_s": round(n / elapsed),
        "peak_rss_mib": round(_rss_mib(), 1), "rss_before_mib": round(base_rss, 1),
        "files_listed": report.files_listed, "to_copy": report.files_copied,
        "updated": report.files_updated, "skipped": report.files_skipped,
        "error": report.error,
    }


def child_copy(src: str, dst: str, state: str, executor: str, workers: int) -> dict[str, Any]:
    from replicator import api
    from replicator.options import CopyOptions

    startup = 0.0
    executor_options: dict[str, Any] = {}
    if executor == "spark":
        from replicator.executors.spark import SparkExecutor

        t0 = time.perf_counter()
        SparkExecutor(workers=workers, conf={"spark.ui.enabled": "false"}).session()
        startup = time.perf_counter() - t0  # the session stays active: the copies reuse it
    opts = CopyOptions(state_path=state, executor=executor, workers=workers,
                       executor_options=executor_options)
    t0 = time.perf_counter()
    first = api.copy(src, dst, opts)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = api.copy(src, dst, opts)
    noop = time.perf_counter() - t0
    return {"executor": executor, "startup_s": round(startup, 2), "copy_s": round(full, 2),
            "noop_rerun_s": round(noop, 2), "files_copied": first.files_copied,
            "bytes_copied": first.bytes_copied, "ok": first.ok and again.ok,
            "rerun_copied": again.files_copied, "peak_rss_mib": round(_rss_mib(), 1)}


def _run_child(args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_scale", "--child", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- benchmarks
def bench_listing(sizes: list[int], work: Path) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        d = work / f"synth-{n}"
        shutil.rmtree(d, ignore_errors=True)
        (d / "dst").mkdir(parents=True)
        first = _run_child(["plan", str(n), str(d / "first.db"), str(d / "dst"), "0"])
        first["scenario"] = "first (no manifest)"
        rows.append(first)
        _print_row(first)
        setup = _run_child(["setup", str(n), str(d / "inc.db"), str(d / "dst")])
        inc = _run_child(["plan", str(n), str(d / "inc.db"), str(d / "dst"), "0.01"])
        inc["scenario"] = "incremental (1% changed)"
        inc["manifest_setup_s"] = setup["setup_s"]
        inc["state_db_mib"] = round(os.path.getsize(d / "inc.db") / (1 << 20), 1)
        rows.append(inc)
        _print_row(inc)
        shutil.rmtree(d, ignore_errors=True)
    return rows


def _print_row(r: dict[str, Any]) -> None:
    print(f"  {r['n']:>10,}  {r['scenario']:<26} {r['seconds']:>8.1f} s  "
          f"{r['entries_per_s']:>9,}/s  peak RSS {r['peak_rss_mib']:>7.1f} MiB "
          f"(after imports {r['rss_before_mib']:.0f})  plan: copy {r['to_copy']:,} "
          f"update {r['updated']:,} skip {r['skipped']:,}", flush=True)


def make_small_tree(root: Path, n: int, seed: int = 1) -> int:
    rnd = random.Random(seed)
    total = 0
    for i in range(n):
        p = root / f"dt={i % 20:02d}" / f"b{(i // 20) % 50:02d}" / f"f{i:06d}.dat"
        p.parent.mkdir(parents=True, exist_ok=True)
        data = rnd.randbytes(rnd.randint(512, 8192))
        p.write_bytes(data)
        total += len(data)
    return total


def bench_spark_overhead(n_files: int, work: Path, workers: int = 8) -> list[dict[str, Any]]:
    d = work / f"tree-{n_files}"
    shutil.rmtree(d, ignore_errors=True)
    src = d / "src"
    total = make_small_tree(src, n_files)
    env = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "REPLICATOR_SPARK_MASTER": os.environ.get("REPLICATOR_SPARK_MASTER", "local[2]")}
    rows = []
    for executor in ("local", "spark"):
        r = _run_child(["copy", str(src), str(d / f"dst-{executor}"), str(d / f"{executor}.db"),
                        executor, str(workers)], env=env)
        r["files"] = n_files
        r["bytes"] = total
        r["files_per_s"] = round(n_files / r["copy_s"]) if r["copy_s"] else None
        rows.append(r)
        print(f"  {executor:<6} {n_files:,} files ({total / 2**20:.0f} MiB): session start "
              f"{r['startup_s']:.1f} s, copy {r['copy_s']:.1f} s ({r['files_per_s']:,} files/s), "
              f"no-op rerun {r['noop_rerun_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, "
              f"ok={r['ok']}", flush=True)
    shutil.rmtree(d, ignore_errors=True)
    local, spark = rows
    if local["copy_s"]:
        print(f"  spark/local copy time: {spark['copy_s'] / local['copy_s']:.2f}x "
              f"(+{spark['startup_s']:.1f} s session start)")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma list of tree sizes")
    ap.add_argument("--spark-files", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true", help="10 k entries and 2 k files")
    ap.add_argument("--skip-spark", action="store_true")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "setup":
            out = child_setup_manifest(int(rest[0]), rest[1], rest[2])
        elif kind == "plan":
            out = child_plan(int(rest[0]), rest[1], rest[2], float(rest[3]))
        else:
            out = child_copy(rest[0], rest[1], rest[2], rest[3], int(rest[4]))
        print(json.dumps(out))
        return 0
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    spark_files = 2_000 if args.quick else args.spark_files
    work = OUT / "scale"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    print(f"listing + diff (synthetic trees, {os.cpu_count()} CPUs):", flush=True)
    results["listing_diff"] = bench_listing(sizes, work)
    if not args.skip_spark:
        print(f"spark executor overhead vs local ({spark_files:,} small files, local -> local):",
              flush=True)
        results["spark_overhead"] = bench_spark_overhead(spark_files, work)
    (OUT / "bench_scale.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT / 'bench_scale.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
