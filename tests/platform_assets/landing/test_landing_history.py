"""Two landing runs recording their batches at once on a remote output (sftp, a private
sshd): every entry stays in ``history.jsonl``. A remote append rewrites the whole file, so
without the dataset's lock each run wrote back the file it had read and entries were lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from platform_assets.landing.batches import LandingPaths
from platform_assets.landing.report import read_history

REPO = Path(__file__).resolve().parents[3]
N = 12

# argv: output URI, state path, writer name, start file, entries, as the validate step does
WRITER = """
import os, sys, time
from platform_assets.landing.batches import LandingPaths, record_history
out, state, who, go = sys.argv[1:5]
paths = LandingPaths(source="orders", raw=out + "/raw", output=out, name="orders")
paths.out_store.read_bytes(paths.history)  # connected before the start
open(go + "." + who, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
for i in range(int(sys.argv[5])):
    record_history(paths, state, {"batch": f"{who}-{i}", "files": 1})
print("ok")
"""


def test_two_runs_recording_history_at_once_on_sftp_keep_every_entry(sftp_server, tmp_path) -> None:
    remotes = tmp_path / "remotes.yaml"
    remotes.write_text(yaml.safe_dump({"remotes": {"lake": {"type": "sftp", **sftp_server.fs_options()}}}))
    base = sftp_server.root / f"landing-{uuid.uuid4().hex[:8]}"
    (base / "raw").mkdir(parents=True)
    out = f"lake:{base}"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "REPLICATOR_REMOTES": str(remotes)}
    state = str(tmp_path / "state.db")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, out, state, who, str(go), str(N)], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for who in ("trigger", "sensor")]
    try:
        while not all(Path(f"{go}.{who}").exists() for who in ("trigger", "sensor")):
            assert all(w.poll() is None for w in writers), [w.communicate() for w in writers]
            time.sleep(0.01)
        go.touch()
        done = [w.communicate(timeout=120) for w in writers]
    finally:
        for w in writers:
            w.kill()
    assert [d[0].strip() for d in done] == ["ok", "ok"], done
    paths = LandingPaths(source="orders", raw=f"{out}/raw", output=out, name="orders")
    os.environ["REPLICATOR_REMOTES"] = str(remotes)
    try:
        got = sorted(h["batch"] for h in read_history(paths.out_store, paths.history))
    finally:
        del os.environ["REPLICATOR_REMOTES"]
    assert got == sorted(f"{who}-{i}" for who in ("trigger", "sensor") for i in range(N))
