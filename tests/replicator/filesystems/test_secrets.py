"""Secret values configured for back ends never appear in logs, reports, exceptions or
``--json`` output."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from replicator.errors import describe
from replicator.filesystems.registry import resolve

FTP_SECRET = "s3cr3t-ftp-Pw-91x"
AWS_SECRET = "aws-SECRET-key-0042xyz"
WEBHDFS_TOKEN = "dt-TOKEN-7f7f7f7f"


def _all_text(root: Path) -> str:
    chunks = []
    for p in root.rglob("*"):
        if p.is_file():
            chunks.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


def test_secrets_never_leak(tmp_path, run_cli, remotes_file, ftp_server, s3_server, sftp_server):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_bytes(b"payload")
    env = run_cli.env
    remotes = remotes_file({
        "drop": {"type": "ftp", "host": "127.0.0.1", "port": ftp_server.port,
                 "user": ftp_server.user, "password": "${DROP_PASSWORD}"},
        "wrongdrop": {"type": "ftp", "host": "127.0.0.1", "port": ftp_server.port,
                      "user": ftp_server.user, "password": FTP_SECRET},
    })
    env.update({
        "REPLICATOR_REMOTES": str(remotes),
        "DROP_PASSWORD": ftp_server.password,
        "AWS_ACCESS_KEY_ID": "AKIASECRETTEST",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_ENDPOINT_URL_S3": s3_server.url,
        "AWS_CA_BUNDLE": "",
    })
    s3_server.create_bucket("secrets-test")
    outputs = []
    runs = [
        ("copy", str(src), "s3://secrets-test/run", "-vv", "--json"),     # env credentials
        ("verify", str(src), "s3://secrets-test/run", "--json"),
        ("copy", str(src), f"ftp://{ftp_server.user}:{ftp_server.password}@127.0.0.1:"
                           f"{ftp_server.port}/inline", "-vv", "--json"),   # password in the URI
        ("copy", str(src), "drop:/named", "-vv", "--json"),                  # ${VAR} in remotes
        ("copy", str(src), "wrongdrop:/x", "-vv", "--json"),                 # refused login
        ("copy", str(tmp_path / "missing"), "s3://secrets-test/x", "-vv", "--json"),
    ]
    codes = []
    for args in runs:
        r = run_cli(*args)
        codes.append(r.returncode)
        outputs += [r.stdout, r.stderr]
    assert codes[:4] == [0, 0, 0, 0], outputs
    assert codes[4] == 1 and "login refused" in outputs[9]
    assert codes[5] != 0
    assert ftp_server.password not in remotes.read_text()  # it came from ${DROP_PASSWORD}
    captured = "\n".join(outputs) + _all_text(Path(env["REPLICATOR_HOME"]))
    for value in (FTP_SECRET, AWS_SECRET, ftp_server.password):
        assert value not in captured
    assert "***" in captured or ftp_server.user in captured  # the runs did report something


def test_secrets_redacted_in_exceptions_and_reprs(tmp_path, ftp_server, webhdfs_server):
    from replicator.filesystems.ftp import FTPFileSystem
    from replicator.filesystems.webhdfs import WebHDFSFileSystem
    from replicator.secrets import redact

    fs, root = resolve(f"ftp://{ftp_server.user}:{FTP_SECRET}@127.0.0.1:{ftp_server.port}/x")
    assert isinstance(fs, FTPFileSystem)
    assert FTP_SECRET not in fs.uri(root) and FTP_SECRET not in repr(fs)
    with pytest.raises(Exception) as info:
        fs.list_dir(root)
    assert FTP_SECRET not in str(info.value) and FTP_SECRET not in describe(info.value)
    wh = WebHDFSFileSystem(host="127.0.0.1", port=webhdfs_server.port, token=WEBHDFS_TOKEN)
    with pytest.raises(FileNotFoundError) as info:  # the request URL carries the token
        wh.list_dir("/nope")
    assert WEBHDFS_TOKEN not in describe(info.value) and "/nope" in str(info.value)
    assert redact(f"url?delegation={WEBHDFS_TOKEN}") == "url?delegation=***"
    # options carry secrets to executors (pickled), never to text
    clone = pickle.loads(pickle.dumps(fs))
    assert clone.options()["password"] == FTP_SECRET
    assert FTP_SECRET not in redact(str(clone.options()))
