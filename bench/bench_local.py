"""Local-disk benchmarks of ``replicator copy`` against ``cp -r``, ``rsync -a`` and
``rclone copy --transfers 8`` (issue 2, item 6).

Scenarios (sizes can be scaled down with ``BENCH_SCALE``, e.g. 0.1 for a smoke run):

  a  initial copy of 20,000 files of 4 KiB in 200 directories
  b  initial copy of one 2 GiB file
  c  re-sync of 200,000 small files (1 KiB) with nothing changed
  d  the same tree with 1% changed (content and mtime of 2,000 files)

Fairness: every tool reads the same source, warmed into the page cache before the
first timed run; every tool writes a fresh destination directory; dirty pages are
flushed (``sync``, untimed) between runs so one tool's write-back does not land in
another's timing. For c and d each tool first syncs its own destination (untimed;
replicator with a fresh state store), then the re-sync is timed; d reuses those
destinations after changing the source.

Environment: ``BENCH_DIR`` (work directory; default ``.bench/`` at the repository
root), ``BENCH_SCALE`` (file counts and sizes, default 1), ``BENCH_REPEAT`` (timed runs
per tool and scenario, the best is kept; default 1), ``BENCH_SCENARIOS`` (e.g. ``ab``),
``BENCH_TOOLS`` (e.g. ``replicator,cp``), ``BENCH_KEEP=0`` (also remove the generated
small-file sources, which are otherwise kept for the next run), ``BENCH_STRICT=1``
(exit 1 when a target is missed), ``REPLICATOR_ARGS`` (extra arguments for
``replicator copy``).
"""

from __future__ import annotations

import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
TOOLS = ("replicator", "cp", "rsync", "rclone")
TIME_BIN = "/usr/bin/time"


# ---------------------------------------------------------------------- set-up
def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


SCALE = _env_float("BENCH_SCALE", 1.0)
REPEAT = max(1, int(_env_float("BENCH_REPEAT", 1)))


def _scaled(n: int, minimum: int = 1) -> int:
    return max(minimum, int(n * SCALE))


def work_dir() -> Path:
    base = Path(os.environ.get("BENCH_DIR") or ROOT / ".bench")
    path = base / "local"
    path.mkdir(parents=True, exist_ok=True)
    return path


def replicator_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("replicator")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("replicator")
    if found:
        return [found]
    return [sys.executable, "-m", "replicator.cli"]


def rmtree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def flush() -> None:
    """Write dirty pages back now (untimed), so the next run does not pay for them."""
    os.sync()


def warm(path: Path) -> None:
    """Read every file once so that every tool starts from the same warm page cache."""
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                while f.read(8 * MiB):
                    pass


@dataclass
class Tree:
    path: Path
    files: int
    bytes: int


def _spec_ok(path: Path, spec: dict) -> bool:
    try:
        return json.loads((path / ".bench-spec.json").read_text()) == spec
    except (OSError, ValueError):
        return False


def small_tree(path: Path, dirs: int, per_dir: int, size: int) -> Tree:
    """``dirs`` directories of ``per_dir`` random files of ``size`` bytes (kept for reuse)."""
    spec = {"dirs": dirs, "per_dir": per_dir, "size": size}
    files = dirs * per_dir
    if _spec_ok(path.parent, {**spec, "name": path.name}) and path.is_dir():
        print(f"  reusing {path} ({files:,} files)", flush=True)
        return Tree(path, files, files * size)
    rmtree(path)
    t0 = time.perf_counter()
    rng = random.Random(len(path.name))
    pool = rng.randbytes(size * 64)
    for d in range(dirs):
        sub = path / f"dir{d:05d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            off = rng.randrange(0, len(pool) - size)
            # unique content per file: a header with the name, then bytes from the pool
            head = f"{d}/{i}\n".encode()
            with open(sub / f"part-{i:05d}.bin", "wb", buffering=0) as f:
                f.write(head + pool[off:off + size - len(head)])
    (path.parent / ".bench-spec.json").write_text(json.dumps({**spec, "name": path.name}))
    print(f"  generated {files:,} files of {size:,} B in {dirs:,} dirs under {path} "
          f"in {time.perf_counter() - t0:.1f}s", flush=True)
    return Tree(path, files, files * size)


def big_file(path: Path, size: int) -> Tree:
    rmtree(path)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    block = random.Random(2).randbytes(16 * MiB)
    written = 0
    with open(path / "big.bin", "wb", buffering=0) as f:
        n = 0
        while written < size:
            chunk = n.to_bytes(8, "little") + block[8:min(len(block), size - written)]
            f.write(chunk)
            written += len(chunk)
            n += 1
    print(f"  generated one file of {size / GiB:.2f} GiB in {time.perf_counter() - t0:.1f}s",
          flush=True)
    return Tree(path, 1, size)


def change_files(tree: Tree, share: float) -> int:
    """Rewrite ``share`` of the files (same size, new bytes) and move their mtime back an hour."""
    paths = sorted(p for p in tree.path.rglob("*.bin"))
    n = max(1, int(len(paths) * share))
    rng = random.Random(4)
    for p in rng.sample(paths, n):
        st = p.stat()
        data = bytearray(p.read_bytes())
        data[-16:] = rng.randbytes(min(16, len(data)))
        p.write_bytes(bytes(data))
        mtime = st.st_mtime_ns - 3600 * 10**9 - rng.randrange(10**9)
        os.utime(p, ns=(mtime, mtime))
    return n


# ---------------------------------------------------------------------- running tools
@dataclass
class Result:
    scenario: str
    tool: str
    seconds: float
    rss_kib: int | None
    files: int
    bytes: int
    note: str = ""
    report: dict = field(default_factory=dict)


def tool_available(tool: str) -> bool:
    if tool == "replicator":
        return True
    return shutil.which(tool) is not None


def tool_argv(tool: str, src: Path, dst: Path, state: Path) -> list[str]:
    if tool == "replicator":
        extra = shlex.split(os.environ.get("REPLICATOR_ARGS", ""))
        return [*replicator_cmd(), "copy", str(src), str(dst), "--state", str(state),
                "--json", "-q", *extra]
    if tool == "cp":
        return ["cp", "-r", str(src), str(dst)]
    if tool == "rsync":
        return ["rsync", "-a", f"{src}/", f"{dst}/"]
    if tool == "rclone":
        return ["rclone", "copy", "--transfers", "8", "--config", os.devnull, "-q",
                str(src), str(dst)]
    raise ValueError(tool)


def run_tool(tool: str, src: Path, dst: Path, state: Path, work: Path) -> tuple[float, int | None, dict]:
    """Run one tool; return (wall seconds, peak RSS KiB, replicator's JSON report)."""
    argv = tool_argv(tool, src, dst, state)
    rss_file = work / ".rss"
    timed = [TIME_BIN, "-f", "%M", "-o", str(rss_file), *argv] if os.access(TIME_BIN, os.X_OK) else argv
    t0 = time.perf_counter()
    proc = subprocess.run(timed, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    rss = None
    if timed is not argv:
        try:
            rss = int(rss_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
    report: dict = {}
    if tool == "replicator":
        lines = proc.stdout.strip().splitlines()
        report = json.loads(lines[-1]) if lines else {}
    flush()
    return took, rss, report


def _check(report: dict, expect_copied: int) -> str:
    if not report:
        return ""
    got = report.get("files_copied")
    if got != expect_copied or report.get("files_failed"):
        return f"copied {got}, expected {expect_copied}; failed {report.get('files_failed')}"
    return ""


def bench_initial(name: str, tree: Tree, tools: list[str], work: Path) -> list[Result]:
    """Fresh destination (and state) per run; the best of BENCH_REPEAT runs is kept."""
    warm(tree.path)
    results = []
    for tool in tools:
        best: Result | None = None
        for _ in range(REPEAT):
            dst, state = work / f"dst-{name}-{tool}", work / f"state-{name}.db"
            rmtree(dst)
            for p in work.glob(f"state-{name}.db*"):
                p.unlink()
            flush()
            took, rss, report = run_tool(tool, tree.path, dst, state, work)
            res = Result(name, tool, took, rss, tree.files, tree.bytes,
                         _check(report, tree.files), report)
            rmtree(dst)
            flush()
            if best is None or res.seconds < best.seconds:
                best = res
        assert best is not None
        results.append(best)
        print(f"  {name} {tool:<10} {best.seconds:8.2f}s", flush=True)
    return results


def bench_resync(tree: Tree, tools: list[str], work: Path) -> list[Result]:
    """c: each tool syncs its own destination (untimed), then re-syncs it (timed);
    d: 1% of the source changes, each tool re-syncs again (timed)."""
    results = []
    dsts = {}
    for tool in tools:
        dst, state = work / f"dst-cd-{tool}", work / "state-cd.db"
        rmtree(dst)
        for p in work.glob("state-cd.db*"):
            p.unlink()
        t0 = time.perf_counter()
        run_tool(tool, tree.path, dst, state, work)
        print(f"  initial sync {tool:<10} {time.perf_counter() - t0:8.2f}s (untimed)", flush=True)
        dsts[tool] = (dst, state)
    for tool in tools:
        dst, state = dsts[tool]
        best = None
        for _ in range(REPEAT):
            took, rss, report = run_tool(tool, tree.path, dst, state, work)
            res = Result("c", tool, took, rss, tree.files, 0, _check(report, 0), report)
            if best is None or res.seconds < best.seconds:
                best = res
        results.append(best)
        print(f"  c {tool:<10} {best.seconds:8.2f}s", flush=True)
    changed = change_files(tree, 0.01)
    flush()
    print(f"  changed {changed:,} of {tree.files:,} source files", flush=True)
    for tool in tools:
        dst, state = dsts[tool]
        took, rss, report = run_tool(tool, tree.path, dst, state, work)
        results.append(Result("d", tool, took, rss, tree.files, 0, _check(report, changed), report))
        print(f"  d {tool:<10} {took:8.2f}s", flush=True)
    for dst, _state in dsts.values():
        rmtree(dst)
    for p in work.glob("state-cd.db*"):
        p.unlink()
    flush()
    return results


# ---------------------------------------------------------------------- reporting
TARGETS = {
    # scenario: [(tool, max ratio replicator/tool, wording)]
    "a": [("cp", 2.0, "within 2x of cp -r"), ("rclone", 1 / 3, ">= 3x faster than rclone")],
    "b": [("cp", 1.1, "within 1.1x of cp")],
    "c": [("rsync", 1.0, "no slower than rsync")],
    "d": [("rsync", 1.0, "no slower than rsync")],
}
SCENARIO_TITLES = {
    "a": "initial copy, {files:,} x 4 KiB in {dirs} dirs",
    "b": "initial copy, one {gib:.2f} GiB file",
    "c": "re-sync {files:,} files, nothing changed",
    "d": "re-sync {files:,} files, 1% changed",
}


def rate(r: Result) -> str:
    if r.scenario in ("a", "c", "d"):
        return f"{r.files / r.seconds:,.0f} files/s"
    return f"{r.bytes / MiB / r.seconds:,.0f} MB/s"


def print_table(results: list[Result], titles: dict[str, str]) -> list[str]:
    rep = {r.scenario: r for r in results if r.tool == "replicator"}
    header = f"{'scenario':<44} {'tool':<11} {'seconds':>8} {'rate':>16} {'repl/tool':>9} {'peak RSS':>9}"
    print("\n" + header)
    print("-" * len(header))
    for r in results:
        mine = rep.get(r.scenario)
        ratio = f"{mine.seconds / r.seconds:.2f}x" if mine else "-"
        rss = f"{r.rss_kib / 1024:.0f} MiB" if r.rss_kib else "-"
        print(f"{titles[r.scenario]:<44} {r.tool:<11} {r.seconds:8.2f} {rate(r):>16} {ratio:>9} {rss:>9}"
              + (f"  !! {r.note}" if r.note else ""))
    missed = []
    print("\nTargets (ratio = replicator seconds / tool seconds):")
    for scenario, targets in TARGETS.items():
        mine = rep.get(scenario)
        for tool, limit, words in targets:
            other = next((r for r in results if r.scenario == scenario and r.tool == tool), None)
            if mine is None or other is None:
                continue
            ratio = mine.seconds / other.seconds
            ok = ratio <= limit
            if not ok:
                missed.append(f"{scenario}: {words}")
            print(f"  ({scenario}) {words:<26} replicator/{tool} = {ratio:5.2f}x "
                  f"(need <= {limit:.2f}x)  {'met' if ok else 'MISSED'}")
    peak = max((r.rss_kib or 0 for r in results if r.tool == "replicator"), default=0)
    if peak:
        print(f"\nreplicator peak RSS: {peak / 1024:.0f} MiB (max over scenarios, /usr/bin/time %M)")
    return missed


def main() -> int:
    work = work_dir()
    scenarios = os.environ.get("BENCH_SCENARIOS", "abcd")
    tools = [t for t in os.environ.get("BENCH_TOOLS", ",".join(TOOLS)).split(",") if t]
    missing = [t for t in tools if not tool_available(t)]
    if missing:
        print(f"bench_local: not installed, skipped: {', '.join(missing)} (make sysdeps installs them)")
        tools = [t for t in tools if t not in missing]
    versions = {
        "cp": "cp --version", "rsync": "rsync --version", "rclone": "rclone version",
    }
    print(f"bench_local: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}, work dir {work}, scale {SCALE}, repeat {REPEAT}")
    for t in tools:
        if t in versions:
            out = subprocess.run(shlex.split(versions[t]), capture_output=True, text=True).stdout
            print(f"  {out.splitlines()[0] if out else t}")
    print(f"  replicator: {shlex.join(replicator_cmd())} copy SRC DST --state S --json -q "
          f"{os.environ.get('REPLICATOR_ARGS', '')}".rstrip())

    a_dirs, a_per = _scaled(200), 100
    b_size = _scaled(2 * GiB)
    c_dirs, c_per = _scaled(2000), 100
    titles = {
        "a": SCENARIO_TITLES["a"].format(files=a_dirs * a_per, dirs=a_dirs),
        "b": SCENARIO_TITLES["b"].format(gib=b_size / GiB),
        "c": SCENARIO_TITLES["c"].format(files=c_dirs * c_per),
        "d": SCENARIO_TITLES["d"].format(files=c_dirs * c_per),
    }
    keep = os.environ.get("BENCH_KEEP", "1") != "0"
    results: list[Result] = []
    t_start = time.perf_counter()
    if "a" in scenarios:
        print(f"\n(a) {titles['a']}", flush=True)
        tree = small_tree(work / "src-a" / "data", a_dirs, a_per, 4 * KiB)
        results += bench_initial("a", tree, tools, work)
        if not keep:
            rmtree(work / "src-a")
    if "b" in scenarios:
        print(f"\n(b) {titles['b']}", flush=True)
        tree = big_file(work / "src-b", b_size)
        try:
            results += bench_initial("b", tree, [t for t in tools], work)
        finally:
            rmtree(work / "src-b")  # big: never kept
    if "c" in scenarios or "d" in scenarios:
        print(f"\n(c, d) {titles['c']}; then 1% changed", flush=True)
        tree = small_tree(work / "src-cd" / "data", c_dirs, c_per, 1 * KiB)
        results += [r for r in bench_resync(tree, [t for t in tools if t != "cp"], work)
                    if r.scenario in scenarios]
        if not keep:
            rmtree(work / "src-cd")
    print(f"\nbench_local: {time.perf_counter() - t_start:.0f}s in total")
    missed = print_table(results, titles)
    errors = [r for r in results if r.note]
    if errors:
        print(f"\nbench_local: {len(errors)} run(s) did not do what was expected (!! above)")
        return 1
    if missed and os.environ.get("BENCH_STRICT") == "1":
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
