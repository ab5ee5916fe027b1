"""File names that are not valid UTF-8 (bytes on a local file system) are copied like cp and
rsync copy them, byte for byte, local to local; the state store keeps them losslessly (a
rerun copies nothing, a change is seen); to a store that needs UTF-8 names that file alone
fails, with a clear error."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from replicator import api
from replicator.filesystems.local import native_path, text_path
from replicator.options import CopyOptions
from tests.replicator.conftest import write

T0 = 1_700_000_000
BAD = b"latin1-\xe9t\xe9.txt"
BAD_DIR = b"dir-\xff\xfe"


def _bytes_tree(root: Path) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), base)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, base)] = fh.read()
    return out


def _make(src: Path) -> None:
    write(src / "ok.txt", b"ok", T0)
    base = os.fsencode(src)
    os.makedirs(os.path.join(base, BAD_DIR))
    for rel, data in ((BAD, b"hello"), (os.path.join(BAD_DIR, BAD), b"nested"),
                      (b"lit-\xf4\x8f\xbf\xbdE9.txt", b"a literal U+10FFFD in the name")):
        with open(os.path.join(base, rel), "wb") as f:
            f.write(data)
        os.utime(os.path.join(base, rel), (T0, T0))


def test_text_and_native_paths_round_trip() -> None:
    for raw in (BAD, b"plain.txt", b"\xf4\x8f\xbf\xbd\xf4\x8f\xbf\xbdE9", "日本".encode(), b"\xc3"):
        native = os.fsdecode(raw)
        text = text_path(native)
        text.encode("utf-8")  # storable anywhere
        assert native_path(text) == native


def test_non_utf8_names_copied_byte_for_byte(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make(src)
    args = ("copy", str(src), str(dst), "--state", str(tmp_path / "s.db"), "--json")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.report["files_copied"] == 4
    assert _bytes_tree(dst) == _bytes_tree(src)
    again = run_cli(*args)
    assert again.returncode == 0 and again.report["files_copied"] == 0
    assert again.report["files_skipped"] == 4  # the manifest kept the names losslessly
    with open(os.path.join(os.fsencode(src), BAD), "wb") as f:
        f.write(b"changed")
    third = run_cli(*args)
    assert third.report["files_copied"] == 1 and third.report["files_updated"] == 1
    assert _bytes_tree(dst) == _bytes_tree(src)
    plain = run_cli("copy", str(src), str(tmp_path / "dst2"), "--state", str(tmp_path / "s.db"))
    assert plain.returncode == 0 and "Traceback" not in plain.stderr  # human summary too
    v = run_cli("verify", str(src), str(dst), "--json")
    assert v.returncode == 0 and v.report["identical"], v.stdout
    os.unlink(os.path.join(os.fsencode(dst), BAD))
    v = run_cli("verify", str(src), str(dst), "--json")
    assert v.returncode == 1 and len(v.report["missing"]) == 1
    json.dumps(v.report)


def test_utf8_only_destination_fails_that_file_alone(tmp_path: Path, monkeypatch) -> None:
    """A destination that needs UTF-8 names (object stores, HDFS): stood in for here by a
    local file system that declares it, so the rule is tested without a server."""
    from replicator.filesystems import local as local_mod
    from replicator.filesystems.registry import register

    class Utf8Only(local_mod.LocalFileSystem):
        scheme = "utf8only"
        capabilities = dataclasses.replace(local_mod.LocalFileSystem.capabilities, byte_names=False)

        @classmethod
        def from_uri(cls, uri: str):
            return cls(), os.path.normpath(uri.split("://", 1)[1])

    register("utf8only", Utf8Only)
    src = tmp_path / "src"
    _make(src)
    rep = api.copy(str(src), f"utf8only://{tmp_path / 'dst'}",
                   CopyOptions(state_path=str(tmp_path / "s.db")))
    assert rep.files_copied == 1  # ok.txt
    failed = {f.path: f for f in rep.failures}
    # the directory and the two files with byte names, and the literal U+10FFFD name
    assert len(failed) == 4, rep.failures
    for f in failed.values():
        assert "UTF-8" in f.error and f.side == "destination"
    assert any("\\xe9t\\xe9" in f.error for f in failed.values())  # shown as bytes
