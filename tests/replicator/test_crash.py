"""SIGKILL `replicator copy` at many random moments; every rerun must converge.

After each kill: no final name holds bytes that were never a version of its source
file (nothing half-written is published). After the final rerun: the destination is
byte-identical, no temporary is left, the journal is empty, the manifest describes
exactly what is at the destination, and one more run copies nothing.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.replicator.conftest import cli_command, temp_names, tree, write

KILLS = 14


def test_sigkill_at_random_moments_then_rerun_converges(tmp_path: Path, run_cli) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state.db"
    versions: dict[str, set[bytes]] = {}

    def put(rel: str, data: bytes) -> None:
        write(src / rel, data)
        versions.setdefault(rel, set()).add(data)

    for i in range(240):
        put(f"d{i % 12}/f{i}.csv", rng.randbytes(rng.randrange(0, 48_000)))
    for i in range(3):
        put(f"big/b{i}.bin", rng.randbytes(6 << 20))

    args = ["copy", str(src), str(dst), "--state", str(state), "--workers", "4",
            "--bandwidth", "30", "--delete", "--max-delete", "100%", "-q"]
    for round_ in range(KILLS):
        # change some sources between rounds so updates and deletes are interrupted too
        for rel in rng.sample(sorted(versions), 6):
            if (src / rel).exists():
                put(rel, rng.randbytes(rng.randrange(1, 40_000)))
        victim = rng.choice(sorted(versions))
        if (src / victim).exists() and not victim.startswith("big/"):
            (src / victim).unlink()
        proc = subprocess.Popen(cli_command(*args), env=run_cli.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.15, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for path in dst.rglob("*"):
            if path.is_file() and not path.name.startswith(".rtmp-"):
                rel = str(path.relative_to(dst))
                assert path.read_bytes() in versions[rel], (
                    f"seed {seed} round {round_}: {rel} holds bytes that were never its source")

    final = run_cli(*args[:-1], "--json")
    assert final.returncode == 0, f"seed {seed}: {final.stderr}"
    assert tree(dst) == tree(src), f"seed {seed}"
    assert temp_names(dst) == [], f"seed {seed}"
    db = sqlite3.connect(state)
    assert db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    rows = {p: (s, m) for p, s, m in db.execute("SELECT path, size, mtime_ns FROM files WHERE kind='f'")}
    on_disk = {str(p.relative_to(dst)): (p.stat().st_size, p.stat().st_mtime_ns)
               for p in dst.rglob("*") if p.is_file()}
    assert rows == on_disk, f"seed {seed}: manifest and destination disagree"
    db.close()
    again = run_cli(*args[:-1], "--json").report
    assert again["files_copied"] == 0 and again["files_deleted"] == 0, f"seed {seed}"
    assert run_cli("verify", str(src), str(dst)).returncode == 0
