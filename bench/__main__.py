"""Run every benchmark: ``python -m bench [NAME ...]`` (``make bench``).

Each ``bench/bench_*.py`` module's ``main()`` runs in its own subprocess, one after
the other, so one failing benchmark does not stop the others. Names given on the
command line (``local``, ``bench_local``) select a subset. Exit status is non-zero
when any benchmark failed. Work directories live under ``.bench/`` at the repository
root, or under ``$BENCH_DIR``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

RUNNER = (
    "import importlib, sys\n"
    "rc = importlib.import_module(sys.argv[1]).main()\n"
    "sys.exit(rc if isinstance(rc, int) else 0)\n"
)


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = discover()
    if argv:
        wanted = {a if a.startswith("bench_") else f"bench_{a}" for a in argv}
        unknown = sorted(wanted - set(names))
        if unknown:
            print(f"bench: unknown benchmark(s) {', '.join(unknown)}; have {', '.join(names)}",
                  file=sys.stderr)
            return 2
        names = [n for n in names if n in wanted]
    env = dict(os.environ)
    env.setdefault("BENCH_DIR", str(ROOT / ".bench"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    failed: list[tuple[str, str]] = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run([sys.executable, "-c", RUNNER, f"bench.{name}"],
                                cwd=ROOT, env=env).returncode
        except KeyboardInterrupt:
            print(f"=== {name}: interrupted ===", flush=True)
            failed.append((name, "interrupted"))
            break
        took = time.perf_counter() - t0
        if rc == 0:
            print(f"=== {name}: ok ({took:.0f}s) ===", flush=True)
        else:
            why = f"exit {rc}" if rc > 0 else f"signal {-rc}"
            print(f"=== {name}: FAILED ({why}, {took:.0f}s) ===", flush=True)
            failed.append((name, why))
    print()
    if failed:
        print(f"bench: {len(failed)} of {len(names)} benchmark(s) failed: "
              + ", ".join(f"{n} ({why})" for n, why in failed))
        return 1
    print(f"bench: all {len(names)} benchmark(s) passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
