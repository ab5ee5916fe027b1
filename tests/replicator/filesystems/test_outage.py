"""Outages: the server dies in the middle of a copy. Retryable errors are retried with
backoff, then the run fails with exit 1 and a clear message; nothing partial is visible
under a final name; once the server is back a rerun completes and verifies. Fatal errors
(missing bucket, bad credentials) fail at once."""

from __future__ import annotations

import json
import os
import subprocess
import time

import google_crc32c
import requests

from tests.replicator.conftest import cli_command
from tests.replicator.filesystems.conftest import BUCKET, make_backend

KiB = 1 << 10


def _objects(server, prefix: str) -> dict[str, dict]:
    r = requests.get(f"{server.url}/storage/v1/b/{BUCKET}/o", params={"prefix": prefix}, timeout=10)
    return {i["name"][len(prefix):]: i for i in r.json().get("items", [])}


def test_gcs_outage_mid_copy_then_rerun(request, tmp_path, run_cli, remotes_file, gcs_server):
    src = tmp_path / "src"
    src.mkdir()
    files = {f"part-{i:03d}.bin": os.urandom(512 * KiB) for i in range(12)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    b = make_backend("gs", request, tmp_path / "gs")
    remotes = remotes_file({"lake": b.remote})
    env = dict(run_cli.env, REPLICATOR_REMOTES=str(remotes))
    args = ["copy", str(src), "lake:/", "--workers", "2", "--bandwidth", "2", "--retries", "2",
            "--json"]
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    prefix = b.root.split("/", 1)[1] + "/"
    try:
        deadline = time.monotonic() + 30
        while len(_objects(gcs_server, prefix)) < 2:  # the copy is under way
            assert time.monotonic() < deadline, "copy did not start"
            time.sleep(0.05)
        gcs_server.stop()
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if not gcs_server.running:
            gcs_server.start()
    assert proc.returncode == 1, err
    report = json.loads(out.strip().splitlines()[-1])
    assert 0 < report["files_failed"] < len(files)
    failure = report["failures"][0]
    text = json.dumps(failure)
    assert "Connection" in text or "connect" in text.lower(), text  # says what happened
    assert time.monotonic() - stopped > 1.0  # it retried with backoff before giving up
    # nothing partial under a final name: every object there is complete and correct
    present = _objects(gcs_server, prefix)
    assert 0 < len(present) < len(files)
    for name, item in present.items():
        data = files[name]
        assert int(item["size"]) == len(data)
        crc = int.from_bytes(__import__("base64").b64decode(item["crc32c"]), "big")
        assert crc == google_crc32c.value(data)
    # the server is back: the rerun completes and verifies
    run_cli.env["REPLICATOR_REMOTES"] = str(remotes)
    again = run_cli("copy", str(src), "lake:/", "--json")
    assert again.returncode == 0, again.stderr
    assert again.report["files_failed"] == 0
    # every file the first run did not finish is copied; none it reported copied is copied
    # again. An object that landed while the client saw the outage (the answer was lost) may
    # go either way: the first run does not know it, so the rerun may write it once more
    assert len(files) - len(present) <= again.report["files_copied"] <= len(files) - report["files_copied"]
    v = run_cli("verify", str(src), "lake:/", "--json")
    assert v.returncode == 0, v.stdout + v.stderr


def test_missing_bucket_fails_at_once(tmp_path, run_cli, remotes_file, gcs_server):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x")
    remotes = remotes_file({"nob": {"type": "gs", "endpoint": gcs_server.url, "anonymous": True,
                                    "root": "no-such-bucket-xyz/p"}})
    run_cli.env["REPLICATOR_REMOTES"] = str(remotes)
    start = time.monotonic()
    # 12 retries with backoff take at least ~17 minutes (0.5 s x (2^12 - 1) x 0.5): a bound
    # of 2 minutes cannot be met by a run that retries, and holds on a loaded machine
    r = run_cli("copy", str(tmp_path / "src"), "nob:/", "--retries", "12", "--json")
    assert r.returncode in (1, 2), r.stderr
    assert "no-such-bucket-xyz" in (r.stdout + r.stderr) and "not found" in (r.stdout + r.stderr)
    assert time.monotonic() - start < 120


def test_bad_credentials_fail_at_once(tmp_path, run_cli, remotes_file, ftp_server):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x")
    remotes = remotes_file({"drop": {"type": "ftp", "host": "127.0.0.1", "port": ftp_server.port,
                                     "user": ftp_server.user, "password": "not-the-password"}})
    run_cli.env["REPLICATOR_REMOTES"] = str(remotes)
    start = time.monotonic()
    r = run_cli("copy", str(tmp_path / "src"), "drop:/x", "--retries", "12", "--json")
    assert r.returncode in (1, 2), r.stderr
    assert "login refused" in (r.stdout + r.stderr)
    assert "not-the-password" not in (r.stdout + r.stderr)
    # pyftpdlib delays each failed login by 3 s; 12 retries with backoff take over 17 minutes
    assert time.monotonic() - start < 120
