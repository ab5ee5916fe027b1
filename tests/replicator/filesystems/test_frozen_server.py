"""An object-store server that freezes mid-run (SIGSTOP: connections are accepted by the
kernel, nothing answers): the run gives up at its deadline, lists what was not done, exits 3
with the pair lock released, and once the server is back a plain rerun finishes the copy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from replicator.state import open_store
from tests.replicator.conftest import cli_command
from tests.replicator.filesystems.servers import FakeGCS, Moto

KiB = 1 << 10
FILES = 24
# 24 files of 16 KiB at --bandwidth 0.02 MiB/s need ~19 s of transfer: the server is frozen once
# two objects are in (~1-9 s into the run, depending on load), so only the deadline can end it
DEADLINE_S = 20


def _objects(kind: str, srv, bucket: str) -> int:
    if kind == "s3":
        return srv.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    import requests

    r = requests.get(f"{srv.url}/storage/v1/b/{bucket}/o", timeout=10)
    return len(r.json().get("items", []))


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_frozen_server_gives_up_at_the_deadline(tmp_path, run_cli, remotes_file, kind) -> None:
    (tmp_path / kind).mkdir()
    srv = (Moto if kind == "s3" else FakeGCS)(tmp_path / kind)
    srv.start()
    bucket = "frozen-bucket"
    try:
        srv.create_bucket(bucket)
        src = tmp_path / "src"
        src.mkdir()
        for i in range(FILES):
            (src / f"f{i:02d}.bin").write_bytes(os.urandom(16 * KiB))
        if kind == "s3":
            remote = {"type": "s3", "endpoint_url": srv.url, "access_key_id": srv.access_key,
                      "secret_access_key": srv.secret_key, "region": "us-east-1",
                      "read_timeout": 600}
        else:
            remote = {"type": "gs", "endpoint": srv.url, "anonymous": True, "timeout": 600}
        remote["root"] = bucket
        env = run_cli.env  # the reruns below see the remote too
        env.update(REPLICATOR_REMOTES=str(remotes_file({"lake": remote})), AWS_CA_BUNDLE="")
        state = tmp_path / "state.db"
        # request timeouts far beyond the deadline: only the deadline can end this run
        args = ["copy", str(src), "lake:/t", "--workers", "4", "--bandwidth", "0.02",
                "--deadline", str(DEADLINE_S), "--state", str(state), "--json"]
        proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=tmp_path)
        try:
            limit = time.monotonic() + 120
            while _objects(kind, srv, bucket) < 2:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < limit, "copy did not start"
                time.sleep(0.1)
            os.kill(srv.proc.pid, signal.SIGSTOP)
            out, err = proc.communicate(timeout=300)  # the deadline counts from the run's start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.kill(srv.proc.pid, signal.SIGCONT)
        assert proc.returncode == 3, err
        assert "Traceback" not in err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["deadline_exceeded"] is True and report["ok"] is False
        assert f"deadline of {DEADLINE_S}s exceeded" in report["error"]
        assert report["files_not_done"] > 0
        assert report["files_copied"] + report["files_failed"] + report["files_not_done"] == FILES
        assert len(report["not_done"]) == report["files_not_done"]
        store = open_store(str(state))
        try:
            assert not store.lock_held(report["source"], report["destination"])
        finally:
            store.close()
        again = run_cli("copy", str(src), "lake:/t", "--state", str(state), "--json")
        assert "Traceback" not in again.stderr and "another replicator run" not in again.stderr
        # uploads the frozen server had buffered complete when it resumes: the rerun adopts
        # them (same bytes) rather than failing on its must-not-exist precondition
        assert again.returncode == 0, again.stderr
        assert again.report["files_failed"] == 0
        assert _objects(kind, srv, bucket) == FILES
    finally:
        srv.stop()
