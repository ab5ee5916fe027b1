"""No-op re-sync of N small files on each state store: SQLite (the default) and
PostgreSQL (a private server started here, as the tests do), with ``rsync -a`` as the
anchor in the same run. Interleaved, median of ``BENCH_REPEAT`` (default 3) timed runs.

    python -m bench.bench_state [--files 100000]

Prints one line per store and, last, one JSON line with the medians and the ratios to
rsync. The tree and destinations live under ``BENCH_DIR`` (default ``.bench/state``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_tree(root: Path, files: int, per_dir: int = 500) -> None:
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(files):
        return
    shutil.rmtree(root, ignore_errors=True)
    payload = b"x" * 1024
    for i in range(files):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"f{i:07d}.csv").write_bytes(payload)
    marker.write_text(str(files))


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {proc.stderr[-2000:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    work = Path(os.environ.get("BENCH_DIR", REPO / ".bench" / "state"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"src-{args.files}"
    make_tree(src, args.files)

    sys.path.insert(0, str(REPO))
    from tests.fixtures.postgres import start_postgres

    server, stop = start_postgres()
    try:
        db = server.create_database(f"bench_{uuid.uuid4().hex[:8]}")
        env_url = f"postgresql://{server.user}@{server.host}:{server.port}/{db}"
        os.environ["PGPASSWORD"] = server.password  # the password never on a command line
        stores = {"sqlite": str(work / "state.db"), "postgresql": env_url}
        for p in work.glob("state.db*"):
            p.unlink()
        replicator = [sys.executable, "-m", "replicator.cli", "copy", "-q"]
        argv = {name: [*replicator, str(src), str(work / f"dst-{name}"), "--state", spec]
                for name, spec in stores.items()}
        argv["rsync"] = ["rsync", "-a", f"{src}/", f"{work / 'dst-rsync'}/"]
        for name in argv:
            shutil.rmtree(work / f"dst-{name}", ignore_errors=True)
            timed(argv[name])  # the initial copy, untimed
        times: dict[str, list[float]] = {name: [] for name in argv}
        for _ in range(repeat):
            for name, command in argv.items():  # interleaved
                times[name].append(timed(command))
    finally:
        stop()
    medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
    for name in stores:
        print(f"no-op re-sync {args.files:,} files, {name} state: {medians[name]:.2f} s "
              f"(rsync {medians['rsync']:.2f} s, {medians[name] / medians['rsync']:.2f}x)")
    print(json.dumps({"files": args.files, "repeat": repeat, "median_s": medians,
                      "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
                      "ratio_to_rsync": {n: round(medians[n] / medians["rsync"], 2) for n in stores}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
