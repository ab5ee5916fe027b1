"""The distcp executor: real ``hadoop distcp`` (hadoop-distcp 3.5.0 from Maven Central) on the
local MapReduce runner, driven by our listing, diff and plan. Trees are local here (file://);
tests/replicator/executors/test_distcp_hdfs.py runs it between two real HDFS clusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from replicator import api
from replicator.executors.distcp import (
    distcp_tuning_args,
    hadoop_uri,
    parse_counters,
    parse_failures,
    path_part,
    preserve_flag,
)
from replicator.filesystems.local import LocalFileSystem
from replicator.options import CopyOptions
from replicator.state import open_store
from tests.replicator.conftest import tree

REPO = Path(__file__).resolve().parents[3]
MTIME_NS = 1_700_000_000_123_456_789
# names DistCp's own -f listing or a careless URI encoding would break
AWKWARD = {
    "a/x": b"hello",
    "empty": b"",
    "b c/\u00e9 f.txt": "caf\u00e9".encode(),
    "pct%20 #?*[x]{y}.txt": b"glob and escape characters",
    "new\nline": b"newline in a name",
    "deep/er/and/deeper/leaf.bin": os.urandom(70_000),
    "dt=2026-11-20/part-00000.parquet": os.urandom(3000),
}


@pytest.fixture(scope="module")
def hadoop_classpath() -> str:
    if not os.path.exists("/usr/bin/javac") and not os.environ.get("JAVA_HOME"):
        pytest.skip("no JDK")
    sys.path.insert(0, str(REPO))
    from scripts.maven import classpath

    return classpath("hadoop")


@pytest.fixture
def distcp_env(hadoop_classpath: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("REPLICATOR_HADOOP_CLASSPATH", hadoop_classpath)
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    return dict(os.environ)


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for n, (rel, data) in enumerate(sorted(files.items())):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, ns=(MTIME_NS + n * 1_000_000, MTIME_NS + n * 1_000_000))


def files_of(root: Path) -> dict[str, bytes]:
    return {rel: data for rel, data in tree(root).items() if data is not None}


def manifest(state: Path, src: Path, dst: Path) -> list[tuple]:
    store = open_store(str(state), read_only=True)
    try:
        pair = store.find_pair(str(src), str(dst))
        assert pair is not None, f"no manifest for {src} -> {dst}"
        return [row[:5] for row in store.manifest_rows(pair)]
    finally:
        store.close()


def opts(state: Path, executor: str, **kw) -> CopyOptions:
    return CopyOptions(state_path=str(state), executor=executor, workers=2, **kw).validated()


# ---------------------------------------------------------------------------- pure parts
def test_flags_map_our_options():
    assert preserve_flag(frozenset({"times", "perms"})) == "-ppt"
    assert preserve_flag(frozenset()) is None
    assert preserve_flag(frozenset({"owner", "group", "xattr", "acl", "replication",
                                    "blocksize", "times"})) == "-prbugaxt"
    assert distcp_tuning_args(4, 100.0, frozenset({"times"})) == ["-pt", "-m", "4",
                                                                  "-bandwidth", "25"]
    assert distcp_tuning_args(3, None, frozenset()) == ["-m", "3"]
    with pytest.raises(Exception, match="cannot preserve bogus"):
        preserve_flag(frozenset({"bogus"}))


def test_hadoop_uris_are_percent_encoded_and_decode_back():
    fs = LocalFileSystem()
    uri = hadoop_uri(fs, "/data/b c/\u00e9 #?%.txt")
    assert uri == "file:///data/b%20c/%C3%A9%20%23%3F%25.txt"
    assert path_part("file:/data/b c/x") == "/data/b c/x"
    assert path_part("hdfs://127.0.0.1:9000/data/x - y") == "/data/x - y"


def test_counters_and_failure_lines_are_parsed():
    text = ("INFO Job: Counters: 3\n\tDistCp Counters\n\t\tBytes Copied=12\n\t\tFiles Copied=2\n"
            "\tFile Input Format Counters \n\t\tBytes Read=5\nINFO DistCp: done\n")
    assert parse_counters(text) == {"DistCp Counters": {"Bytes Copied": 12, "Files Copied": 2},
                                    "File Input Format Counters": {"Bytes Read": 5}}
    log = ("FAIL: file:/src/a - b - java.io.IOException: Can't replace x\n\tat Foo\n"
           "FAIL: hdfs://nn:1/src/c - java.io.IOException: denied\n")
    assert parse_failures(log, {"/src/a - b": "a - b", "/src/c": "c", "/src/a": "a"}) == {
        "a - b": "distcp: java.io.IOException: Can't replace x",
        "c": "distcp: java.io.IOException: denied",
    }
    mapper_log = ("ERROR CopyMapper: Failure in copying file:/s/b to c to file:/d/b to c\n"
                  "java.io.IOException: File copy failed\n\tat X\n"
                  "Caused by: java.io.IOException: No space left\n\tat Y\n"
                  "WARN LocalJobRunner: job_local1\njava.lang.Exception: DistCp failure\n")
    assert parse_failures(mapper_log, {"/s/b to c": "b to c"}, separator=" to ",
                          marker="ERROR CopyMapper: Failure in copying ") == {
        "b to c": "distcp: java.io.IOException: No space left"}


# ---------------------------------------------------------------------------- real DistCp
def test_distcp_and_local_executor_agree_and_rerun_copies_nothing(tmp_path: Path, distcp_env):
    src, by_local, by_distcp = tmp_path / "src", tmp_path / "local", tmp_path / "distcp"
    write_tree(src, AWKWARD)
    (src / "empty_dir").mkdir()
    state_l, state_d = tmp_path / "l.db", tmp_path / "d.db"

    # --checksum: the local executor records CRC32Cs local -> local too (else a kernel copy)
    local = api.copy(str(src), str(by_local), opts(state_l, "local", marker="_COPY_DONE",
                                                   checksum=True))
    report = api.copy(str(src), str(by_distcp), opts(state_d, "distcp", marker="_COPY_DONE",
                                                     checksum=True))
    assert report.ok, report.failures or report.error
    assert local.ok
    assert report.executor == "distcp"
    assert report.files_copied == local.files_copied == len(AWKWARD)
    assert report.bytes_copied == local.bytes_copied == sum(map(len, AWKWARD.values()))
    details = report.executor_details
    assert details["exit_code"] == 0 and details["job_id"].startswith("job_local")
    assert details["counters"]["DistCp Counters"]["Files Copied"] == len(AWKWARD)
    assert details["counters"]["DistCp Counters"]["Bytes Copied"] == report.bytes_copied

    # byte-identical trees (no .crc sidecars, no .distcp.tmp leftovers), same manifest
    got = files_of(by_distcp)
    marker = json.loads(got.pop("_COPY_DONE"))
    assert marker["executor"] == "distcp" and marker["files_copied"] == len(AWKWARD)
    want = files_of(by_local)
    want.pop("_COPY_DONE")
    assert got == want == AWKWARD
    assert (by_distcp / "empty_dir").is_dir()
    assert manifest(state_d, src, by_distcp) == manifest(state_l, src, by_local)
    # DistCp -pt kept the source mtimes (at the millisecond: Hadoop's precision)
    for rel in AWKWARD:
        assert (by_distcp / rel).stat().st_mtime_ns // 10**6 == (src / rel).stat().st_mtime_ns // 10**6

    # a re-run with either executor after the other copies nothing
    again = api.copy(str(src), str(by_local), opts(state_l, "distcp"))
    assert again.ok and again.files_copied == 0 and again.files_skipped == len(AWKWARD)
    assert again.executor_details == {}  # no job was started for nothing
    again = api.copy(str(src), str(by_distcp), opts(state_d, "local"))
    assert again.ok and again.files_copied == 0 and again.files_skipped == len(AWKWARD)

    # a changed file (and only it) is copied by DistCp; verify agrees
    (src / "a" / "x").write_bytes(b"changed!")
    changed = api.copy(str(src), str(by_distcp), opts(state_d, "distcp"))
    assert changed.ok and changed.files_copied == 1 and changed.files_updated == 1
    assert (by_distcp / "a" / "x").read_bytes() == b"changed!"
    assert changed.executor_details["counters"]["DistCp Counters"]["Files Copied"] == 1
    check = api.verify(str(src), str(by_distcp), CopyOptions(marker="_COPY_DONE"))
    assert check.identical, (check.missing, check.extra, check.differing)


def test_one_bad_file_fails_alone_and_the_rest_is_published(tmp_path: Path, distcp_env):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "s.db"
    write_tree(src, {"ok/one": b"1", "ok/two": b"2", "bad": b"b", "colon:name": b"c"})
    first = api.copy(str(src), str(dst), opts(state, "local"))
    assert first.ok
    (src / "colon:name").write_bytes(b"c, changed")  # Hadoop's Path refuses ':' in a name
    # someone replaced the copy of "bad" with a non-empty directory; both files change
    (dst / "bad").unlink()
    (dst / "bad" / "inner").mkdir(parents=True)
    (src / "bad").write_bytes(b"bad, changed")
    (src / "ok" / "two").write_bytes(b"two, changed")

    report = api.copy(str(src), str(dst), opts(state, "distcp"))
    assert not report.ok and report.exit_code == 1
    errors = {f.path: f.error for f in report.failures}
    assert sorted(errors) == ["bad", "colon:name"]
    assert "cannot hold ':'" in errors["colon:name"]
    assert "is a directory" in errors["bad"], errors  # refused before the job, by the engine
    assert report.files_copied == 1
    assert (dst / "ok" / "two").read_bytes() == b"two, changed"
    assert (dst / "bad" / "inner").is_dir()  # left alone
    assert not [p for p in dst.rglob(".distcp.tmp.*")]
    rows = {r[0]: r for r in manifest(state, src, dst)}
    assert rows["ok/two"][2] == len(b"two, changed")
    assert rows["bad"][2] == 1  # still the old record: the next run tries again


def test_a_failing_job_fails_every_file_cleanly(tmp_path: Path, distcp_env):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "s.db"
    write_tree(src, {"a": b"a", "b/c": b"c"})
    bad = opts(state, "distcp").with_(executor_options={
        "properties": {"mapreduce.framework.name": "no-such-framework"}})
    report = api.copy(str(src), str(dst), bad)
    assert not report.ok and report.files_failed == 2 and report.files_copied == 0
    assert report.executor_details["exit_code"] != 0
    assert "Cannot initialize Cluster" in report.executor_details["error"]
    assert all("distcp" in f.error for f in report.failures)
    assert not (dst / "a").exists()
    assert [r for r in manifest(state, src, dst) if r[1] == "f"] == []
    # nothing was lost: the next (working) run copies both
    good = api.copy(str(src), str(dst), opts(state, "distcp"))
    assert good.ok and good.files_copied == 2


def test_cli_without_hadoop_jars_is_a_usage_error(tmp_path: Path):
    src = tmp_path / "src"
    write_tree(src, {"a": b"a"})
    env = {k: v for k, v in os.environ.items()
           if k not in ("REPLICATOR_HADOOP_CLASSPATH", "HADOOP_CONF_DIR")}
    env.update(PATH="/usr/bin:/bin", REPLICATOR_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "replicator.cli", "copy", str(src),
                           str(tmp_path / "dst"), "--executor", "distcp", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "REPLICATOR_HADOOP_CLASSPATH" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_roots_with_hive_partition_and_percent_names_land_where_they_say(tmp_path: Path, distcp_env):
    # DistCp reads its target argument with new Path(String): a percent-encoded root
    # (dt%3D2026-11-20) was written as a directory of that literal name, and every file was
    # then "not written" where the engine looked
    src = tmp_path / "src" / "dt=2026-11-20"
    dst = tmp_path / "dst" / "dt=2026-11-20" / "100% done"
    write_tree(src, {"part-0": b"zero", "sub/part-1": b"one"})
    report = api.copy(str(src), str(dst), opts(tmp_path / "s.db", "distcp"))
    assert report.ok, report.failures or report.error
    assert files_of(dst) == {"part-0": b"zero", "sub/part-1": b"one"}
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["dt=2026-11-20"]
