"""Stream transforms: gunzip, untar, gpg-encrypt/decrypt on the copy path."""

from __future__ import annotations

import gzip
import io
import os
import sqlite3
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from replicator import api
from replicator.errors import UsageError
from replicator.filesystems.local import LocalFileSystem
from replicator.options import CopyOptions
from replicator.state import open_store
from replicator.transforms import (
    DIR_STAGING,
    DIR_SWAP,
    TransformError,
    _gunzip,
    aside_name,
    parse_chain,
    plan_output,
    swap_dir,
)
from tests.replicator.conftest import temp_names, tree, write

T0 = 1_700_000_000


def opts(tmp_path: Path, *transforms: str, **kw) -> CopyOptions:
    return CopyOptions(state_path=str(tmp_path / "state.db"), transforms=transforms, **kw)


def make_tar(path: Path, members: dict[str, bytes], mtime: float = T0, **extra: tarfile.TarInfo) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), T0
            tf.addfile(info, io.BytesIO(data))
        for info in extra.values():
            tf.addfile(info)
    os.utime(path, (mtime, mtime))
    return path


# ------------------------------------------------------------------------ the chain
def test_chain_parsing_and_names() -> None:
    chain = parse_chain(["gunzip", "untar"])
    assert plan_output("a/x.csv.gz", chain) == ("a/x.csv", False, chain[:1])
    assert plan_output("a/x.tar.gz", chain) == ("a/x", True, chain)
    assert plan_output("x.tgz", chain) == ("x", True, chain)
    assert plan_output("x.tar", chain) == ("x", True, chain[1:])
    assert plan_output("x.csv", chain) is None  # copied unchanged
    assert plan_output(".gz", chain) is None
    enc = parse_chain(["gunzip", "gpg-encrypt=ops@example.com"])
    assert plan_output("x.csv.gz", enc)[0] == "x.csv.gpg" and plan_output("y", enc)[0] == "y.gpg"
    assert plan_output("x.csv.gpg", parse_chain(["gpg-decrypt"]))[0] == "x.csv"


@pytest.mark.parametrize(("specs", "why"), [
    (["zip"], "unknown"), (["untar", "gunzip"], "last step"), (["gpg-encrypt"], "RECIPIENT"),
    (["gpg-encrypt="], "RECIPIENT"), (["gpg-encrypt=--homedir=/x"], "RECIPIENT"),
    (["gpg-encrypt=a b"], "RECIPIENT"), (["gunzip=9"], "takes no argument"),
])
def test_bad_chains_refused(specs, why) -> None:
    with pytest.raises(UsageError, match=why):
        parse_chain(specs)


def test_bad_transform_exits_2_and_spark_refused(tmp_path: Path, run_cli) -> None:
    write(tmp_path / "src" / "a.gz", gzip.compress(b"a"))
    r = run_cli("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "-t", "bunzip2")
    assert r.returncode == 2 and "--transform" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(UsageError, match="executor local only"):
        CopyOptions(transforms=("gunzip",), executor="spark").validated()


def test_gunzip_is_bounded_and_multi_member() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(b"\0" * (64 << 20)) + bomb.flush()  # 64 MiB of zeros in ~64 KiB
    sizes = [len(c) for c in _gunzip(iter([data]), "bomb.gz", 1 << 20)]
    assert sum(sizes) == 64 << 20 and max(sizes) <= 1 << 20
    two = gzip.compress(b"one\n") + gzip.compress(b"two\n") + b"\0" * 512
    assert b"".join(_gunzip(iter([two[:7], two[7:]]), "two.gz", 1 << 20)) == b"one\ntwo\n"
    for bad, why in ((b"plain text", "not valid gzip"), (gzip.compress(b"x" * 1000)[:-12], "truncated"),
                     (b"", "empty"), (gzip.compress(b"a") + b"junk", "not valid gzip")):
        with pytest.raises(TransformError, match=why):
            list(_gunzip(iter([bad]), "bad.gz", 1 << 20))


# ------------------------------------------------------------------------ gunzip
def test_gunzip_copy_rerun_is_noop_and_verify(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    body = os.urandom(300_000) + b"tail"
    write(src / "dt=1" / "x.csv.gz", gzip.compress(body), T0)
    write(src / "plain.csv", "p", T0)
    r = run_cli("copy", str(src), str(dst), "--transform", "gunzip", "--verify-checksum", "--json")
    assert r.returncode == 0, r.stderr
    assert r.report["files_copied"] == 2 and r.report["files_verified"] == 2 and r.report["verified"]
    assert tree(dst) == {"dt=1": None, "dt=1/x.csv": body, "plain.csv": b"p"}
    assert os.stat(dst / "dt=1" / "x.csv").st_mtime == T0
    again = run_cli("copy", str(src), str(dst), "-t", "gunzip", "--json").report
    assert again["files_copied"] == 0 and again["files_skipped"] == 2
    v = run_cli("verify", str(src), str(dst), "-t", "gunzip", "--json")
    assert v.returncode == 0 and v.report["identical"], v.stdout
    # the destination is damaged: verify compares it with the recorded written checksum
    (dst / "dt=1" / "x.csv").write_bytes(body[:-4] + b"TAIL")
    v = run_cli("verify", str(src), str(dst), "-t", "gunzip", "--json").report
    assert [d["path"] for d in v["differing"]] == ["dt=1/x.csv"]
    assert v["differing"][0]["reason"] == "checksum"
    # the source is rewritten with the same size and mtime: verify reports the source
    (dst / "dt=1" / "x.csv").write_bytes(body)
    zipped = bytearray((src / "dt=1" / "x.csv.gz").read_bytes())
    zipped[-8] ^= 1  # the CRC in the gzip trailer
    write(src / "dt=1" / "x.csv.gz", bytes(zipped), T0)
    v = run_cli("verify", str(src), str(dst), "-t", "gunzip", "--json").report
    assert [(d["path"], d["reason"]) for d in v["differing"]] == [("dt=1/x.csv.gz", "source-changed")]


def test_corrupt_gz_fails_alone_previous_copy_stays(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.csv.gz", gzip.compress(b"good a"), T0)
    write(src / "b.csv.gz", gzip.compress(b"good b"), T0)
    assert run_cli("copy", str(src), str(dst), "-t", "gunzip").returncode == 0
    write(src / "a.csv.gz", gzip.compress(b"new a" * 1000)[:-20], T0 + 10)  # truncated
    write(src / "b.csv.gz", gzip.compress(b"new b"), T0 + 10)
    write(src / "c.csv.gz", b"not gzip at all", T0)
    r = run_cli("copy", str(src), str(dst), "-t", "gunzip", "--json")
    assert r.returncode == 1
    errors = {f["path"]: f["error"] for f in r.report["failures"]}
    assert set(errors) == {"a.csv.gz", "c.csv.gz"}
    assert "gunzip a.csv.gz: truncated" in errors["a.csv.gz"]
    assert "gunzip c.csv.gz: not valid gzip" in errors["c.csv.gz"]
    assert tree(dst) == {"a.csv": b"good a", "b.csv": b"new b"}  # nothing partial published
    assert temp_names(dst) == []
    # fixed upstream: the next run copies it
    write(src / "a.csv.gz", gzip.compress(b"fixed a"), T0 + 20)
    (src / "c.csv.gz").unlink()
    assert run_cli("copy", str(src), str(dst), "-t", "gunzip").returncode == 0
    assert (dst / "a.csv").read_bytes() == b"fixed a"


def test_delete_with_transforms_keeps_outputs_removes_orphans(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "x.csv.gz", gzip.compress(b"x"), T0)
    make_tar(src / "t.tar", {"m.txt": b"m"})
    write(src / "keep.txt", "k", T0)
    o = opts(tmp_path, "gunzip", "untar", delete=True, max_delete="100%")
    assert api.copy(str(src), str(dst), o).ok
    rep = api.copy(str(src), str(dst), o)  # x.csv is not deleted because x.csv.gz is not there
    assert rep.ok and rep.files_deleted == 0 and rep.files_copied == 0
    assert tree(dst) == {"x.csv": b"x", "t": None, "t/m.txt": b"m", "keep.txt": b"k"}
    (src / "x.csv.gz").unlink()
    (src / "t.tar").unlink()
    rep = api.copy(str(src), str(dst), o)
    assert rep.ok and rep.files_deleted == 2
    assert tree(dst) == {"keep.txt": b"k"}


def test_chain_added_to_an_existing_replica(tmp_path: Path) -> None:
    """A replica made by plain copies, then the chain is set: the sources are transformed on
    the next run and, with --delete, the old plain copies (no output of anything) go."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    zipped = gzip.compress(b"x")
    write(src / "x.csv.gz", zipped, T0)
    assert api.copy(str(src), str(dst), opts(tmp_path)).files_copied == 1
    planned = api.plan(str(src), str(dst), opts(tmp_path, "gunzip", delete=True, max_delete="100%"))
    assert sorted((a["action"], a["path"]) for a in planned.actions) == [
        ("delete", "x.csv.gz"), ("update", "x.csv.gz")]
    rep = api.copy(str(src), str(dst), opts(tmp_path, "gunzip", delete=True, max_delete="100%"))
    assert rep.ok and rep.files_copied == 1 and rep.files_deleted == 1
    assert tree(dst) == {"x.csv": b"x"}
    rep = api.copy(str(src), str(dst), opts(tmp_path))  # and back: plain copies again
    assert rep.ok and rep.files_copied == 1
    rep = api.copy(str(src), str(dst), opts(tmp_path, delete=True, max_delete="100%"))
    assert rep.ok and rep.files_deleted == 1 and tree(dst) == {"x.csv.gz": zipped}


def test_output_name_collision_fails_the_transformed_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "x.csv", "plain", T0)
    write(src / "x.csv.gz", gzip.compress(b"zipped"), T0)
    rep = api.copy(str(src), str(dst), opts(tmp_path, "gunzip"))
    assert [f.path for f in rep.failures] == ["x.csv.gz"] and "also another source path" in rep.failures[0].error
    assert tree(dst) == {"x.csv": b"plain"}


def test_dry_run_lists_transformed_names(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "x.csv.gz", gzip.compress(b"x"), T0)
    rep = api.plan(str(src), str(dst), opts(tmp_path, "gunzip"))
    assert rep.files_copied == 1 and rep.actions[0]["to"] == "x.csv" and not dst.exists()


# ------------------------------------------------------------------------ untar
def test_untar_expands_rerun_noop_and_update_replaces_directory(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tar(src / "batch.tar", {"a.csv": b"a", "sub/b.csv": b"b" * 100_000, "old.csv": b"old"})
    r = run_cli("copy", str(src), str(dst), "-t", "untar", "--json")
    assert r.returncode == 0, r.stderr
    assert tree(dst) == {"batch": None, "batch/a.csv": b"a", "batch/sub": None,
                         "batch/sub/b.csv": b"b" * 100_000, "batch/old.csv": b"old"}
    assert os.stat(dst / "batch" / "a.csv").st_mtime == T0  # member mtimes kept
    again = run_cli("copy", str(src), str(dst), "-t", "untar", "--json").report
    assert again["files_copied"] == 0 and again["files_skipped"] == 1
    assert run_cli("verify", str(src), str(dst), "-t", "untar").returncode == 0
    make_tar(src / "batch.tar", {"a.csv": b"A2", "new.csv": b"n"}, mtime=T0 + 60)
    r = run_cli("copy", str(src), str(dst), "-t", "untar", "--json")
    assert r.returncode == 0 and r.report["files_updated"] == 1
    assert tree(dst) == {"batch": None, "batch/a.csv": b"A2", "batch/new.csv": b"n"}
    assert temp_names(dst) == []
    v = run_cli("verify", str(src), str(dst), "-t", "untar", "--json")
    assert v.returncode == 0, v.stdout
    write(dst / "batch" / "intruder.csv", "x")
    v = run_cli("verify", str(src), str(dst), "-t", "untar", "--json").report
    assert v["extra"] == ["batch/intruder.csv"]


def test_tgz_is_gunzipped_then_expanded(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    raw = make_tar(tmp_path / "t.tar", {"x/y.txt": b"y"})
    write(src / "t.tgz", gzip.compress(raw.read_bytes()), T0)
    assert api.copy(str(src), str(dst), opts(tmp_path, "gunzip", "untar")).ok
    assert tree(dst) == {"t": None, "t/x": None, "t/x/y.txt": b"y"}


def test_truncated_tar_leaves_previous_directory(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tar(src / "t.tar", {"a.csv": b"old a"})
    write(src / "ok.csv.gz", gzip.compress(b"ok"), T0)
    assert run_cli("copy", str(src), str(dst), "-t", "gunzip", "-t", "untar").returncode == 0
    big = make_tar(tmp_path / "big.tar", {"a.csv": b"new a", "b.bin": os.urandom(200_000)})
    write(src / "t.tar", big.read_bytes()[:150_000], T0 + 60)  # cut inside member b.bin
    write(src / "junk.tar", b"\x01" * 2000, T0)
    r = run_cli("copy", str(src), str(dst), "-t", "gunzip", "-t", "untar", "--json")
    assert r.returncode == 1
    errors = {f["path"]: f["error"] for f in r.report["failures"]}
    assert set(errors) == {"t.tar", "junk.tar"}
    assert "untar t.tar" in errors["t.tar"] and "untar junk.tar" in errors["junk.tar"]
    assert tree(dst) == {"t": None, "t/a.csv": b"old a", "ok.csv": b"ok"}  # previous good copy
    assert temp_names(dst) == []


@pytest.mark.parametrize(("name", "kind", "link", "why"), [
    ("../evil.sh", tarfile.REGTYPE, "", "escapes"),
    ("/etc/evil", tarfile.REGTYPE, "", "absolute"),
    ("a/../../evil", tarfile.REGTYPE, "", "escapes"),
    ("ln", tarfile.SYMTYPE, "../../outside", "pointing outside"),
    ("ln", tarfile.SYMTYPE, "/etc/passwd", "pointing outside"),
    ("ln", tarfile.SYMTYPE, "a.csv", "symlink"),
    ("hl", tarfile.LNKTYPE, "../outside", "escapes"),
    ("hl", tarfile.LNKTYPE, "/etc/passwd", "absolute"),
    ("dev", tarfile.CHRTYPE, "", "device"),
    ("fifo", tarfile.FIFOTYPE, "", "FIFO"),
])
def test_tar_slip_refused(tmp_path: Path, name, kind, link, why) -> None:
    src, dst = tmp_path / "src", tmp_path / "out" / "dst"
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind == tarfile.REGTYPE:
        info.size = 4
    path = src / "t.tar"
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w") as tf:
        ok = tarfile.TarInfo("a.csv")
        ok.size = 1
        tf.addfile(ok, io.BytesIO(b"a"))
        tf.addfile(info, io.BytesIO(b"evil") if kind == tarfile.REGTYPE else None)
    rep = api.copy(str(src), str(dst), opts(tmp_path, "untar"))
    assert [f.path for f in rep.failures] == ["t.tar"]
    assert why in rep.failures[0].error and "refused" in rep.failures[0].error
    assert tree(tmp_path / "out") == {"dst": None}  # nothing published, nothing outside
    assert not Path("/etc/evil").exists()


def test_hard_link_to_earlier_member_is_copied(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    path = make_tar(src / "t.tar", {"a.csv": b"data"})
    with tarfile.open(path, "a") as tf:
        info = tarfile.TarInfo("again.csv")
        info.type, info.linkname = tarfile.LNKTYPE, "a.csv"
        tf.addfile(info)
    assert api.copy(str(src), str(dst), opts(tmp_path, "untar")).ok
    assert tree(dst) == {"t": None, "t/a.csv": b"data", "t/again.csv": b"data"}


def test_untar_swap_is_idempotent_after_a_crash(tmp_path: Path) -> None:
    fs = LocalFileSystem()
    final, run = str(tmp_path / "x"), "r1"
    staged = str(tmp_path / ".rtmp-r1-x")
    write(Path(final) / "old.csv", "old")
    write(Path(staged) / "new.csv", "new")
    os.rename(final, aside_name(final, run))  # crashed after moving the old copy aside
    swap_dir(fs, staged, final, run)
    assert tree(tmp_path) == {"x": None, "x/new.csv": b"new"}
    swap_dir(fs, staged, final, run)  # and again: nothing left to do
    assert tree(tmp_path) == {"x": None, "x/new.csv": b"new"}


@pytest.mark.parametrize("state", [DIR_STAGING, DIR_SWAP])
def test_journal_recovery_of_untar_directory(tmp_path: Path, state) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tar(src / "t.tar", {"a.csv": b"v1"})
    o = opts(tmp_path, "untar")
    assert api.copy(str(src), str(dst), o).ok
    # an interrupted run left a staged directory (and for a swap, the old copy aside)
    staged = dst / ".rtmp-run9-t"
    write(staged / "a.csv", "v2")
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("INSERT INTO journal (pair_id, path, run_id, state, tmp) VALUES (1, 't', 'run9', ?, ?)",
               (state, str(staged)))
    db.commit()
    db.close()
    if state == DIR_SWAP:
        os.rename(dst / "t", aside_name(str(dst / "t"), "run9"))
    rep = api.copy(str(src), str(dst), o)
    assert rep.ok, rep.failures
    assert temp_names(dst) == []
    # staging: dropped, previous copy kept; swap: finished; either way the record is redone
    assert tree(dst) == {"t": None, "t/a.csv": b"v1"}
    assert rep.files_copied == 1
    store = open_store(str(tmp_path / "state.db"))
    assert store.journal_entries(1) == []
    store.close()


# ------------------------------------------------------------------------ gpg
@pytest.fixture
def gnupg_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("gpg")
    os.chmod(home, 0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Replicator Test <rt@example.com>",
                    "future-default", "default", "never"], check=True, env=env, capture_output=True)
    yield str(home)
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True)


def test_gpg_round_trip_gives_original_bytes(tmp_path: Path, run_cli, gnupg_home) -> None:
    src, enc, dec = tmp_path / "src", tmp_path / "enc", tmp_path / "dec"
    body = os.urandom(3_000_000)
    write(src / "d" / "x.bin", body, T0)
    write(src / "y.csv.gz", gzip.compress(b"y,z\n"), T0)
    run_cli.env["GNUPGHOME"] = gnupg_home
    r = run_cli("copy", str(src), str(enc), "-t", "gpg-encrypt=rt@example.com", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(p for p, v in tree(enc).items() if v is not None) == ["d/x.bin.gpg", "y.csv.gz.gpg"]
    assert body[:64] not in (enc / "d" / "x.bin.gpg").read_bytes()
    assert run_cli("verify", str(src), str(enc), "-t", "gpg-encrypt=rt@example.com").returncode == 0
    r = run_cli("copy", str(enc), str(dec), "-t", "gpg-decrypt", "-t", "gunzip", "--json")
    assert r.returncode == 0, r.stderr
    assert tree(dec) == {"d": None, "d/x.bin": body, "y.csv": b"y,z\n"}
    again = run_cli("copy", str(enc), str(dec), "-t", "gpg-decrypt", "-t", "gunzip", "--json").report
    assert again["files_copied"] == 0


def test_gpg_failures_fail_the_file_alone(tmp_path: Path, gnupg_home, monkeypatch) -> None:
    monkeypatch.setenv("GNUPGHOME", gnupg_home)
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "bad.gpg", b"this is not an OpenPGP message", T0)
    write(src / "ok.txt", "ok", T0)
    rep = api.copy(str(src), str(dst), opts(tmp_path, "gpg-decrypt"))
    assert [f.path for f in rep.failures] == ["bad.gpg"]
    assert "gpg-decrypt bad.gpg: gpg failed" in rep.failures[0].error
    assert tree(dst) == {"ok.txt": b"ok"} and temp_names(dst) == []
    rep = api.copy(str(src), str(tmp_path / "enc"), opts(tmp_path, "gpg-encrypt=nobody@example.com"))
    assert rep.files_failed == 2 and "gpg failed" in rep.failures[0].error
    assert not [p for p in tree(tmp_path / "enc") if p.endswith(".gpg")]


def test_gpg_decrypt_of_tampered_file_publishes_nothing(tmp_path: Path, gnupg_home, monkeypatch) -> None:
    monkeypatch.setenv("GNUPGHOME", gnupg_home)
    src, enc, dec = tmp_path / "src", tmp_path / "enc", tmp_path / "dec"
    write(src / "x.bin", os.urandom(500_000), T0)
    assert api.copy(str(src), str(enc), opts(tmp_path, "gpg-encrypt=rt@example.com")).ok
    data = bytearray((enc / "x.bin.gpg").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (enc / "x.bin.gpg").write_bytes(bytes(data))
    rep = api.copy(str(enc), str(dec), opts(tmp_path, "gpg-decrypt"))
    assert [f.path for f in rep.failures] == ["x.bin.gpg"]
    assert not (dec / "x.bin").exists() and (not dec.exists() or temp_names(dec) == [])


def test_kill_9_during_untar_keeps_previous_directory_and_next_run_finishes(tmp_path: Path, run_cli) -> None:
    """A real SIGKILL while a tar is being expanded (slowed by --bandwidth): the previous
    directory stays whole, and the next run removes the staged one and publishes the new."""
    import signal
    import time

    from tests.replicator.conftest import cli_command

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tar(src / "t.tar", {"a.csv": b"v1"})
    assert run_cli("copy", str(src), str(dst), "-t", "untar").returncode == 0
    payload = os.urandom(40 << 20)  # several 8 MiB read chunks, so --bandwidth paces the expansion
    make_tar(src / "t.tar", {"a.csv": b"v2", "big.bin": payload}, mtime=T0 + 60)
    proc = subprocess.Popen(cli_command("copy", str(src), str(dst), "-t", "untar", "--bandwidth", "1"),
                            env=run_cli.env, cwd=str(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".rtmp-") and (p / "a.csv").exists() for p in dst.iterdir()):
            assert proc.poll() is None, "the copy ended before it could be interrupted"
            assert time.monotonic() < deadline, "no staged directory appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert tree(dst / "t") == {"a.csv": b"v1"}  # the previous good copy, whole
    assert temp_names(dst)  # the staged directory of the killed run
    r = run_cli("copy", str(src), str(dst), "-t", "untar", "--json")
    assert r.returncode == 0, r.stderr
    assert tree(dst / "t") == {"a.csv": b"v2", "big.bin": payload} and temp_names(dst) == []


def test_gpg_key_with_passphrase_fails_the_file_without_asking(tmp_path: Path, monkeypatch) -> None:
    """No one can type a passphrase in a copy: a protected key fails the file promptly."""
    home = tmp_path / "gpg"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "s3cret",
                    "--quick-gen-key", "Locked <locked@example.com>", "future-default", "default", "never"],
                   check=True, env=env, capture_output=True)
    monkeypatch.setenv("GNUPGHOME", str(home))
    try:
        src, enc, dec = tmp_path / "src", tmp_path / "enc", tmp_path / "dec"
        write(src / "x.txt", "secret data", T0)
        assert api.copy(str(src), str(enc), opts(tmp_path, "gpg-encrypt=locked@example.com")).ok
        rep = api.copy(str(enc), str(dec), opts(tmp_path, "gpg-decrypt"))
        assert [f.path for f in rep.failures] == ["x.txt.gpg"] and "gpg failed" in rep.failures[0].error
        assert "s3cret" not in rep.failures[0].error and not (dec / "x.txt").exists()
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True)


def test_untar_member_with_non_utf8_name(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    raw = b"caf\xe9.csv"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        info = tarfile.TarInfo(raw.decode("utf-8", "surrogateescape"))
        info.size = 2
        tf.addfile(info, io.BytesIO(b"ok"))
    write(src / "t.tar", buf.getvalue(), T0)
    o = opts(tmp_path, "untar")
    rep = api.copy(str(src), str(dst), o)
    assert rep.ok, rep.failures
    with open(os.path.join(os.fsencode(dst / "t"), raw), "rb") as f:
        assert f.read() == b"ok"
    assert api.copy(str(src), str(dst), o).files_copied == 0
    assert api.verify(str(src), str(dst), o).identical
