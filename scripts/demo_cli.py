"""`make demo`, part 1: the copy engine from its CLI on local folders.

Builds an "on-prem" tree of CSV partitions under .demo/cli/, replicates it, changes a
few files, replicates again (only those are touched), and ends with `verify`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / ".demo" / "cli"


def replicator(*args: str) -> dict:
    cmd = [sys.executable, "-m", "replicator.cli", *args]
    shown = " ".join(["replicator", *[os.path.relpath(a, REPO) if a.startswith("/") else a for a in args]])
    print(f"\n$ {shown}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    sys.stderr.write(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0:
        print(proc.stdout)
        raise SystemExit(f"demo: `{shown}` exited {proc.returncode}")
    return json.loads(lines[-1]) if lines else {}


def build_tree(root: Path, rng: random.Random) -> None:
    for day in range(1, 6):
        part = root / "sales" / f"dt=2026-11-{day:02d}"
        part.mkdir(parents=True, exist_ok=True)
        for n in range(4):
            rows = "\n".join(f"{day},{n},{rng.randint(1, 999)}" for _ in range(200))
            (part / f"part-{n:05d}.csv").write_text("day,shard,amount\n" + rows + "\n")
    (root / "customers").mkdir(parents=True, exist_ok=True)
    (root / "customers" / "customers.csv").write_text("id,name\n1,Ada\n2,Grace\n")


def main() -> None:
    rng = random.Random(7)
    shutil.rmtree(BASE, ignore_errors=True)
    onprem, replica, state = BASE / "onprem", BASE / "replica", BASE / "state.db"
    build_tree(onprem, rng)
    print(f"== engine demo: built {onprem.relative_to(REPO)} (21 CSV files)")
    common = ["--state", str(state), "--json", "--marker", "_SUCCESS.json"]
    first = replicator("copy", str(onprem), str(replica), *common)
    print(f"   first copy: {first['files_copied']} files, {first['bytes_copied']:,} bytes")

    (onprem / "sales" / "dt=2026-11-06").mkdir()
    (onprem / "sales" / "dt=2026-11-06" / "part-00000.csv").write_text("day,shard,amount\n6,0,42\n")
    with open(onprem / "customers" / "customers.csv", "a") as fh:
        fh.write("3,Edsger\n")
    (onprem / "sales" / "dt=2026-11-01" / "part-00003.csv").unlink()
    print("\n== changed the source: 1 file added, 1 appended to, 1 removed")
    plan = replicator("plan", str(onprem), str(replica), "--delete", "--state", str(state), "--json",
                      "--marker", "_SUCCESS.json")
    for a in plan["actions"]:
        print(f"   plan: {a['action']:<6} {a['path']}")
    second = replicator("copy", str(onprem), str(replica), "--delete", *common)
    print(f"   second copy: {second['files_copied']} copied ({second['files_updated']} updated), "
          f"{second['files_skipped']} unchanged, {second['files_deleted']} deleted")
    assert (second["files_copied"], second["files_deleted"]) == (2, 1), second
    verify = replicator("verify", str(onprem), str(replica), "--marker", "_SUCCESS.json", "--json")
    print(f"   verify: identical={verify['identical']} ({verify['files_compared']} files by CRC32C)")
    assert verify["identical"]


if __name__ == "__main__":
    main()
