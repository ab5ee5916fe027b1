"""Local benchmarks of ``replicator copy`` against ``cp -r``, ``rsync -a`` and
``rclone copy --transfers 8``, each figure a ratio against the anchor tool of the same run.

Scenarios (sizes scale with ``BENCH_SCALE``, e.g. 0.1 for a smoke run); target is
median replicator seconds / median anchor seconds:

  a  initial copy, 20,000 x 4 KiB in 200 dirs, disk            anchor cp     <= 1.0x
  h  the same on a tmpfs                                        anchor cp     <= 1.0x
  b  initial copy, one 2 GiB file, verified (--verify-checksum) anchor cp     <= 1.1x
  c  no-op re-sync of 200,000 x 1 KiB, disk                     anchor rsync  <= 1.0x
  d  the same tree with 1% changed (content and mtime), disk    anchor rsync  <= 1.0x
  e  initial copy, 200,000 x 1 KiB, tmpfs                       anchor rsync  <= 1.0x
  f  no-op re-sync of that tree, tmpfs                          anchor rsync  <= 1.0x
  g  1% changed re-sync, tmpfs                                  anchor rsync  <= 1.0x
  m  peak RSS of ``replicator plan`` over 250k, 500k, 1M files on a tmpfs: < 200 MiB, flat

Honesty: the tools run interleaved, round by round (the order rotates each round, so
none is always first), ``BENCH_REPEAT`` rounds (default 3) per scenario, and each figure
is the median of its runs; the 1-minute load average before each run is printed beside
it (the machine is shared: a ratio means something only within one run). Every tool
reads the same source, warmed into the page cache; every tool writes a fresh destination
on the source's file system; dirty pages are flushed (``sync``, untimed) between runs.
For c/d (f/g) each tool first syncs its own destination (untimed; replicator with its own
state store); every round of d (g) changes a new 1% sample, then each tool re-syncs.
On this VM's disk, creating small files costs every tool the file system's journal
alike; the tmpfs scenarios show the tools' own per-file overhead. The ``cpu s`` column is
the median user + system time of each tool's runs: under load it judges a change better
than wall time. Each replicator is run once, untimed, before the first round, so its
bytecode is compiled as in an installed copy (PYTHONDONTWRITEBYTECODE is dropped).

Environment: ``BENCH_DIR`` (work directory; default ``.bench/`` at the repository
root), ``BENCH_TMPFS`` (default /dev/shm; skipped unless it is a tmpfs with room),
``BENCH_SCALE``, ``BENCH_REPEAT``, ``BENCH_SCENARIOS`` (e.g. ``ab``), ``BENCH_TOOLS``
(e.g. ``replicator,cp``; ``replicator@DIR`` adds the replicator of another source tree,
e.g. ``git archive main | tar -x -C DIR``, to compare versions in the same run),
``BENCH_MEMORY_FILES`` (sizes for m), ``BENCH_KEEP=0`` (also remove the generated disk
sources, otherwise kept for the next run), ``BENCH_STRICT=1`` (exit 1 when a target is
missed), ``REPLICATOR_ARGS`` (extra arguments for ``replicator copy``).
"""

from __future__ import annotations

import json
import os
import platform
import random
import shlex
import shutil
import statistics
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
REPEAT = max(1, int(_env_float("BENCH_REPEAT", 3)))


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
    pool = rng.randbytes(size * 64 + 1)
    for d in range(dirs):
        sub = path / f"dir{d:05d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            off = rng.randrange(0, len(pool) - size)
            # unique content per file: a header with the name, then bytes from the pool
            head = f"{d}/{i}\n".encode()[:size]
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


def change_files(tree: Tree, share: float, seed: int = 0) -> int:
    """Rewrite ``share`` of the files (same size, new bytes) and move their mtime back an hour."""
    paths = sorted(p for p in tree.path.rglob("*.bin"))
    n = max(1, int(len(paths) * share))
    rng = random.Random(4 + seed)
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
class Run:
    seconds: float
    load: float  # 1-minute load average just before the run
    rss_kib: int | None
    cpu: float | None = None  # user + system seconds (what the tool itself spent, load or not)


@dataclass
class Figure:
    """One tool in one scenario: every timed run, interleaved with the other tools'."""

    scenario: str
    tool: str
    runs: list[Run] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def loads(self) -> str:
        lo, hi = min(r.load for r in self.runs), max(r.load for r in self.runs)
        return f"{lo:.1f}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f}"

    @property
    def rss_kib(self) -> int:
        return max((r.rss_kib or 0) for r in self.runs)

    @property
    def cpu(self) -> float | None:
        cpus = [r.cpu for r in self.runs if r.cpu is not None]
        return statistics.median(cpus) if cpus else None


def other_tree(tool: str) -> Path | None:
    """``replicator@DIR``: the replicator of another source tree (an older commit, e.g.
    ``git archive main | tar -x -C DIR``), run with this venv, to compare versions in one run."""
    return Path(tool.split("@", 1)[1]).resolve() if tool.startswith("replicator@") else None


def tool_available(tool: str) -> bool:
    if tool == "replicator":
        return True
    tree = other_tree(tool)
    if tree is not None:
        return (tree / "replicator" / "cli.py").is_file()
    return shutil.which(tool) is not None


def tool_label(tool: str) -> str:
    tree = other_tree(tool)
    return f"repl@{tree.name}" if tree is not None else tool


def tool_argv(tool: str, src: Path, dst: Path, state: Path, extra: list[str]) -> list[str]:
    if tool == "replicator" or other_tree(tool) is not None:
        cmd = replicator_cmd() if tool == "replicator" else [sys.executable, "-m", "replicator.cli"]
        extra = extra + shlex.split(os.environ.get("REPLICATOR_ARGS", ""))
        return [*cmd, "copy", str(src), str(dst), "--state", str(state), "--json", "-q", *extra]
    if tool == "cp":
        return ["cp", "-r", str(src), str(dst)]
    if tool == "rsync":
        return ["rsync", "-a", f"{src}/", f"{dst}/"]
    if tool == "rclone":
        return ["rclone", "copy", "--transfers", "8", "--config", os.devnull, "-q",
                str(src), str(dst)]
    raise ValueError(tool)


def run_argv(tool: str, argv: list[str], work: Path) -> tuple[Run, str]:
    """Run one command, timed; return the run and its stdout."""
    rss_file = work / ".rss"
    timed = ([TIME_BIN, "-f", "%M %U %S", "-o", str(rss_file), *argv] if os.access(TIME_BIN, os.X_OK)
             else argv)
    env, cwd = None, None
    tree = other_tree(tool)
    if tree is not None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        cwd = tree
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(timed, capture_output=True, text=True, env=env, cwd=cwd)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    rss = cpu = None
    if timed is not argv:
        try:
            kib, user, system = rss_file.read_text().split()[-3:]
            rss, cpu = int(kib), float(user) + float(system)
        except (OSError, ValueError):
            pass
    return Run(took, load, rss, cpu), proc.stdout


def run_tool(tool: str, src: Path, dst: Path, state: Path, work: Path,
             extra: list[str] = ()) -> tuple[Run, dict]:
    """Run one tool; return the run and (for replicator) its JSON report."""
    run, out = run_argv(tool, tool_argv(tool, src, dst, state, list(extra)), work)
    report: dict = {}
    if tool == "replicator" or other_tree(tool) is not None:
        lines = out.strip().splitlines()
        report = json.loads(lines[-1]) if lines else {}
    flush()
    return run, report


def _check(report: dict, expect_copied: int) -> str:
    if not report:
        return ""
    got = report.get("files_copied")
    if got != expect_copied or report.get("files_failed"):
        return f"copied {got}, expected {expect_copied}; failed {report.get('files_failed')}"
    return ""


def _order(tools: list[str], round_: int) -> list[str]:
    """The tools in a different order each round, so none always runs first (cold) or last."""
    k = round_ % len(tools)
    return tools[k:] + tools[:k]


def _clear_state(work: Path, name: str) -> None:
    for p in work.glob(f"state-{name}-*.db*"):
        p.unlink()


def bench_initial(name: str, tree: Tree, tools: list[str], work: Path, dst_base: Path,
                  extra: list[str] = ()) -> list[Figure]:
    """Fresh destination (and state) per run, under ``dst_base`` (the source's file system);
    tools interleaved round by round."""
    warm(tree.path)
    figs = {t: Figure(name, t) for t in tools}
    for round_ in range(REPEAT):
        for tool in _order(tools, round_):
            dst, state = dst_base / f"dst-{name}-{tool_label(tool)}", work / f"state-{name}-x.db"
            rmtree(dst)
            _clear_state(work, name)
            flush()
            run, report = run_tool(tool, tree.path, dst, state, work, extra)
            figs[tool].runs.append(run)
            figs[tool].note = figs[tool].note or _check(report, tree.files)
            rmtree(dst)
            flush()
            print(f"  {name} round {round_ + 1} {tool_label(tool):<14} {run.seconds:8.2f}s "
                  f"load {run.load:.1f}", flush=True)
    _clear_state(work, name)
    return list(figs.values())


def bench_resync(noop: str, changed: str, tree: Tree, tools: list[str], work: Path,
                 scenarios: str) -> list[Figure]:
    """``noop``: each tool syncs its own destination (untimed), then re-syncs it with nothing
    changed; ``changed``: each round, 1% of the source changes (a new sample each round),
    then every tool re-syncs. Tools interleaved round by round."""
    dst_base = tree.path.parent.parent
    dsts: dict[str, tuple[Path, Path]] = {}
    for tool in tools:
        label = tool_label(tool)
        dst, state = dst_base / f"dst-{noop}-{label}", work / f"state-{noop}-{label}.db"
        rmtree(dst)
        for p in work.glob(f"{state.name}*"):
            p.unlink()
        run, _ = run_tool(tool, tree.path, dst, state, work)
        print(f"  initial sync {label:<14} {run.seconds:8.2f}s (untimed)", flush=True)
        dsts[tool] = (dst, state)
    figs: list[Figure] = []
    if noop in scenarios:
        noops = {t: Figure(noop, t) for t in tools}
        for round_ in range(REPEAT):
            for tool in _order(tools, round_):
                run, report = run_tool(tool, tree.path, *dsts[tool], work)
                noops[tool].runs.append(run)
                noops[tool].note = noops[tool].note or _check(report, 0)
                print(f"  {noop} round {round_ + 1} {tool_label(tool):<14} {run.seconds:8.2f}s "
                      f"load {run.load:.1f}", flush=True)
        figs += noops.values()
    if changed in scenarios:
        changes = {t: Figure(changed, t) for t in tools}
        for round_ in range(REPEAT):
            n = change_files(tree, 0.01, seed=round_)
            flush()
            for tool in _order(tools, round_):
                run, report = run_tool(tool, tree.path, *dsts[tool], work)
                changes[tool].runs.append(run)
                changes[tool].note = changes[tool].note or _check(report, n)
                print(f"  {changed} round {round_ + 1} {tool_label(tool):<14} {run.seconds:8.2f}s "
                      f"load {run.load:.1f} ({n:,} changed)", flush=True)
        figs += changes.values()
    for dst, state in dsts.values():
        rmtree(dst)
        for p in work.glob(f"{state.name}*"):
            p.unlink()
    flush()
    return figs


def bench_memory(base: Path, sizes: list[int], work: Path) -> list[tuple[int, Run]]:
    """Peak RSS of ``replicator plan`` (list + diff, nothing copied) over trees of growing size
    on a tmpfs: flat means the plan streams through the scratch database."""
    out = []
    for n in sizes:
        tree = small_tree(base / f"src-m{n}" / "data", max(1, n // 1000), min(n, 1000), 0)
        argv = [*replicator_cmd(), "plan", str(tree.path), str(base / "dst-m-none"),
                "--state", str(work / "state-m.db"), "--json"]
        _clear_state(work, "m")
        run, stdout = run_argv("replicator", argv, work)
        planned = json.loads(stdout.strip().splitlines()[-1]).get("files_copied")
        out.append((tree.files, run))
        print(f"  m {tree.files:>9,} files: plan {run.seconds:6.1f}s, peak RSS "
              f"{(run.rss_kib or 0) / 1024:.0f} MiB, load {run.load:.1f} (planned {planned:,})",
              flush=True)
        rmtree(base / f"src-m{n}")
    (work / "state-m.db").unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------- reporting
# scenario: (title, anchor tool, target ratio replicator/anchor or None, where)
SCENARIOS = {
    "a": ("initial copy, {a_files:,} x 4 KiB in {a_dirs} dirs", "cp", 1.0, "disk"),
    "b": ("initial copy, one {gib:.2f} GiB file, verified", "cp", 1.1, "disk"),
    "c": ("re-sync {c_files:,} x 1 KiB, nothing changed", "rsync", 1.0, "disk"),
    "d": ("re-sync {c_files:,} x 1 KiB, 1% changed", "rsync", 1.0, "disk"),
    "e": ("initial copy, {c_files:,} x 1 KiB", "rsync", 1.0, "tmpfs"),
    "f": ("re-sync {c_files:,} x 1 KiB, nothing changed", "rsync", 1.0, "tmpfs"),
    "g": ("re-sync {c_files:,} x 1 KiB, 1% changed", "rsync", 1.0, "tmpfs"),
    "h": ("initial copy, {a_files:,} x 4 KiB in {a_dirs} dirs", "cp", 1.0, "tmpfs"),
}
MEMORY_LIMIT_MIB = 200


def print_table(figs: list[Figure], titles: dict[str, str]) -> list[str]:
    header = (f"{'scenario':<50} {'tool':<14} {'median s':>8} {'runs (s)':<24} {'load':>9} "
              f"{'/anchor':>8} {'cpu s':>6} {'peak RSS':>9}")
    print("\n" + header)
    print("-" * len(header))
    missed = []
    for scenario in SCENARIOS:
        rows = [f for f in figs if f.scenario == scenario]
        if not rows:
            continue
        anchor_tool = SCENARIOS[scenario][1]
        anchor = next((f for f in rows if f.tool == anchor_tool), None)
        for f in rows:
            ratio = f"{f.median / anchor.median:.2f}x" if anchor else "-"
            runs = " ".join(f"{r.seconds:.2f}" for r in f.runs)
            rss = f"{f.rss_kib / 1024:.0f} MiB" if f.rss_kib else "-"
            cpu = f"{f.cpu:.2f}" if f.cpu is not None else "-"
            print(f"{titles[scenario]:<50} {tool_label(f.tool):<14} {f.median:8.2f} {runs:<24} "
                  f"{f.loads:>9} {ratio:>8} {cpu:>6} {rss:>9}" + (f"  !! {f.note}" if f.note else ""))
    print(f"\nTargets (ratio = median replicator seconds / median anchor seconds, same run, "
          f"{REPEAT} interleaved runs each):")
    for scenario, (_title, anchor_tool, limit, _where) in SCENARIOS.items():
        mine = next((f for f in figs if f.scenario == scenario and f.tool == "replicator"), None)
        anchor = next((f for f in figs if f.scenario == scenario and f.tool == anchor_tool), None)
        if mine is None or anchor is None or limit is None:
            continue
        ratio = mine.median / anchor.median
        ok = ratio <= limit
        if not ok:
            missed.append(f"{scenario}: <= {limit:.2f}x {anchor_tool}")
        print(f"  ({scenario}) {titles[scenario]:<50} replicator/{anchor_tool} = {ratio:5.2f}x "
              f"(need <= {limit:.2f}x, load {mine.loads})  {'met' if ok else 'MISSED'}")
    return missed


def tmpfs_dir() -> Path | None:
    """A directory on a tmpfs (``BENCH_TMPFS``, default /dev/shm), or None."""
    base = Path(os.environ.get("BENCH_TMPFS", "/dev/shm"))
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    real = os.path.realpath(base)
    best = max((m for m in mounts if real == m[1] or real.startswith(m[1].rstrip("/") + "/")),
               key=lambda m: len(m[1]), default=None)
    if best is None or best[2] != "tmpfs":
        return None
    path = base / f"replicator-bench-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tmpfs_room(path: Path, need: int) -> bool:
    return shutil.disk_usage(path).free >= need


def warm_bytecode(tools: list[str], work: Path) -> None:
    """Run each replicator once on a tiny tree (untimed) with bytecode writing allowed, so
    no timed run compiles its modules: an installed replicator has its ``.pyc`` files (pip
    and uv write them), and this machine sets PYTHONDONTWRITEBYTECODE, which made every
    run compile ~70 modules (~0.35 s CPU, more than cp's whole 20k-file copy)."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    src = work / "warm-src"
    small_tree(src / "data", 1, 2, 16)
    for tool in tools:
        if tool == "replicator" or other_tree(tool) is not None:
            dst, state = work / "warm-dst", work / "warm-state.db"
            run_tool(tool, src / "data", dst, state, work)
            rmtree(dst)
            for p in work.glob("warm-state.db*"):
                p.unlink()


def main() -> int:
    work = work_dir()
    scenarios = os.environ.get("BENCH_SCENARIOS", "abcdefgm")
    tools = [t for t in os.environ.get("BENCH_TOOLS", ",".join(TOOLS)).split(",") if t]
    missing = [t for t in tools if not tool_available(t)]
    if missing:
        print(f"bench_local: not installed, skipped: {', '.join(missing)} (make sysdeps installs them)")
        tools = [t for t in tools if t not in missing]
    versions = {"cp": "cp --version", "rsync": "rsync --version", "rclone": "rclone version"}
    print(f"bench_local: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}, work dir {work}, scale {SCALE}, "
          f"{REPEAT} interleaved runs per tool (median), load {os.getloadavg()[0]:.1f}")
    for t in tools:
        if t in versions:
            out = subprocess.run(shlex.split(versions[t]), capture_output=True, text=True).stdout
            print(f"  {out.splitlines()[0] if out else t}")
    print(f"  replicator: {shlex.join(replicator_cmd())} copy SRC DST --state S --json -q "
          f"{os.environ.get('REPLICATOR_ARGS', '')}".rstrip())

    a_dirs, a_per = _scaled(200), 100
    b_size = _scaled(2 * GiB)
    c_dirs, c_per = _scaled(2000), 100
    fmt = {"a_files": a_dirs * a_per, "a_dirs": a_dirs, "gib": b_size / GiB, "c_files": c_dirs * c_per}
    titles = {k: f"{v[0].format(**fmt)} ({v[3]})" for k, v in SCENARIOS.items()}
    keep = os.environ.get("BENCH_KEEP", "1") != "0"
    tmpfs = tmpfs_dir() if set(scenarios) & set("efghm") else None
    if set(scenarios) & set("efghm") and tmpfs is None:
        print("bench_local: no tmpfs (BENCH_TMPFS, default /dev/shm): scenarios e-h and m skipped")
        scenarios = "".join(s for s in scenarios if s not in "efghm")
    # a tmpfs holds its files in RAM: each small file takes at least a page, and each tool
    # writes a copy beside the source
    need_tmpfs = 3 * c_dirs * c_per * 4 * KiB + GiB
    if tmpfs is not None and set(scenarios) & set("efgh") and not tmpfs_room(tmpfs, need_tmpfs):
        print(f"bench_local: under {need_tmpfs / GiB:.1f} GiB free on {tmpfs}: scenarios e-h skipped")
        scenarios = "".join(s for s in scenarios if s not in "efgh")
    warm_bytecode(tools, work)
    figs: list[Figure] = []
    memory: list[tuple[int, Run]] = []
    t_start = time.perf_counter()
    resync_tools = [t for t in tools if t != "cp"]
    try:
        if "a" in scenarios:
            print(f"\n(a) {titles['a']}", flush=True)
            tree = small_tree(work / "src-a" / "data", a_dirs, a_per, 4 * KiB)
            figs += bench_initial("a", tree, tools, work, work)
            if not keep:
                rmtree(work / "src-a")
        if "h" in scenarios:
            print(f"\n(h) {titles['h']}", flush=True)
            tree = small_tree(tmpfs / "src-h" / "data", a_dirs, a_per, 4 * KiB)
            figs += bench_initial("h", tree, tools, work, tmpfs)
            rmtree(tmpfs / "src-h")
        if "b" in scenarios:
            print(f"\n(b) {titles['b']}", flush=True)
            tree = big_file(work / "src-b", b_size)
            try:
                figs += bench_initial("b", tree, tools, work, work, ["--verify-checksum"])
            finally:
                rmtree(work / "src-b")  # big: never kept
        if "c" in scenarios or "d" in scenarios:
            print(f"\n(c, d) {titles['c']}; then 1% changed", flush=True)
            tree = small_tree(work / "src-cd" / "data", c_dirs, c_per, 1 * KiB)
            figs += bench_resync("c", "d", tree, resync_tools, work, scenarios)
            if not keep:
                rmtree(work / "src-cd")
        if set(scenarios) & set("efg"):
            tree = small_tree(tmpfs / "src-efg" / "data", c_dirs, c_per, 1 * KiB)
            if "e" in scenarios:
                print(f"\n(e) {titles['e']}", flush=True)
                figs += bench_initial("e", tree, tools, work, tmpfs)
            if "f" in scenarios or "g" in scenarios:
                print(f"\n(f, g) {titles['f']}; then 1% changed", flush=True)
                figs += bench_resync("f", "g", tree, resync_tools, work, scenarios)
        if "m" in scenarios:
            sizes = [int(s) for s in os.environ.get("BENCH_MEMORY_FILES",
                                                    "250000,500000,1000000").split(",") if s]
            sizes = [max(1000, int(n * SCALE)) for n in sizes]
            print(f"\n(m) memory: peak RSS of replicator plan over {', '.join(f'{n:,}' for n in sizes)} "
                  f"files (tmpfs)", flush=True)
            memory = bench_memory(tmpfs, sizes, work)
    finally:
        if tmpfs is not None:
            rmtree(tmpfs)
    print(f"\nbench_local: {time.perf_counter() - t_start:.0f}s in total")
    missed = print_table(figs, titles)
    if memory:
        peaks = [(n, (r.rss_kib or 0) / 1024) for n, r in memory]
        ok = all(p < MEMORY_LIMIT_MIB for _n, p in peaks)
        print("\nMemory (m): replicator plan peak RSS "
              + ", ".join(f"{n:,} files {p:.0f} MiB (load {r.load:.1f})"
                          for (n, p), (_n, r) in zip(peaks, memory, strict=True))
              + f"; need < {MEMORY_LIMIT_MIB} MiB  {'met' if ok else 'MISSED'}")
        if not ok:
            missed.append(f"m: plan peak RSS < {MEMORY_LIMIT_MIB} MiB")
    errors = [f for f in figs if f.note]
    if errors:
        print(f"\nbench_local: {len(errors)} figure(s) did not do what was expected (!! above)")
        return 1
    if missed and os.environ.get("BENCH_STRICT") == "1":
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
