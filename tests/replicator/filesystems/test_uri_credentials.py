"""Credentials written into a URI (``s3://KEY:SECRET@bucket``, ``gs://u:SECRET@...``,
``hdfs://u:SECRET@...``) are never stored in clear text in the state store and never reach
stdout, stderr, the ``--json`` report or the logs, client library error text included."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.replicator.filesystems.conftest import BUCKET

KEY = "AKIAURIKEY0042"
SECRET = "uri-SECRET-0ff-the-record"


def _state_text(home: Path) -> str:
    chunks = []
    for db in home.rglob("*.db"):
        con = sqlite3.connect(db)
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            for row in con.execute(f"SELECT * FROM {table}"):
                chunks.append(repr(row))
        con.close()
    for p in home.rglob("*"):
        if p.is_file():
            chunks.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


def test_uri_credentials_never_stored_or_shown(tmp_path, run_cli, s3_server) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_bytes(b"payload")
    env = run_cli.env
    env.update({"AWS_ENDPOINT_URL_S3": s3_server.url, "AWS_CA_BUNDLE": ""})
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(k, None)
    dst = f"s3://{KEY}:{SECRET}@{BUCKET}/uri-creds"
    ok = run_cli("copy", str(src), dst, "-vv", "--json")
    assert ok.returncode == 0, ok.stderr
    assert ok.report["destination"] == f"s3://{BUCKET}/uri-creds"  # the canonical pair key
    again = run_cli("copy", str(src), dst, "--json")
    assert again.report["files_copied"] == 0  # same pair: the credentials are not part of it
    outputs = [ok.stdout, ok.stderr, again.stdout, again.stderr]
    runs = [
        ("copy", str(src), f"s3://{KEY}:{SECRET}@no-such-bucket-x/p", "-vv", "--json"),  # client error
        ("verify", str(src), dst, "--json"),
        ("copy", str(src), f"gs://user:{SECRET}@{BUCKET}/x", "-vv", "--json"),
        ("copy", str(src), f"hdfs://user:{SECRET}@127.0.0.1:9/x", "-vv", "--json"),
        ("copy", str(src), f"webhdfs://user:{SECRET}@127.0.0.1:9/x", "-vv", "--json"),
        ("copy", f"s3://{KEY}:{SECRET}@{BUCKET}/missing-prefix", str(tmp_path / "out"), "--json"),
    ]
    codes = []
    for args in runs:
        r = run_cli(*args)
        codes.append(r.returncode)
        outputs += [r.stdout, r.stderr]
        assert "Traceback" not in r.stderr, r.stderr
    assert codes[0] == 1 and codes[1] == 0, outputs
    assert codes[2:5] == [2, 2, 2], outputs  # refused: these schemes take no password
    assert codes[5] in (1, 2)
    captured = "\n".join(outputs)
    assert "no user or password" in captured and "take no password" in captured
    assert "no-such-bucket-x" in captured  # the client error is shown, only redacted
    stored = _state_text(Path(env["REPLICATOR_HOME"]))
    assert SECRET not in captured and SECRET not in stored
    assert f"{BUCKET}/uri-creds" in stored
