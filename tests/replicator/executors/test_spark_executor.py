"""The Spark executor on local[2]: same bytes and same manifest as the local executor,
Spark retries of failed tasks never publish twice or lose a file, and the CLI copies
and verifies with ``--executor spark``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from replicator import api
from replicator.errors import UsageError
from replicator.executors.spark import (
    InjectFailure,
    SparkExecutor,
    local_master_with_retries,
    resolve_settings,
)
from replicator.options import CopyOptions
from tests.replicator.executors.executor_helpers import (
    MTIME_NS,
    make_tree,
    spark_env,
    tree_state,
    write_file,
)

MiB = 1 << 20
# small ranges so the 12 MiB file is copied as three ranges by three Spark tasks
RANGED = {"multipart_threshold": 5 * MiB, "part_size": 5 * MiB}


def opts(tmp_path: Path, executor: str, **kw: Any) -> CopyOptions:
    base: dict[str, Any] = {
        "state_path": str(tmp_path / "state.db"),
        "executor": executor,
        "workers": 4,
        "preserve": frozenset({"times", "perms"}),
        **RANGED,
    }
    if executor == "spark":
        base["executor_options"] = {"wave_bins": 2}  # several Spark jobs per run
    base.update(kw)
    return CopyOptions(**base).validated()


def manifest(state: Path, source: Path, destination: Path) -> list[tuple]:
    db = sqlite3.connect(state)
    try:
        row = db.execute("SELECT id FROM pairs WHERE source=? AND destination=?",
                         (str(source), str(destination))).fetchone()
        assert row is not None, f"no manifest for {source} -> {destination}"
        return db.execute("SELECT path, kind, size, mtime_ns, checksum FROM files WHERE pair_id=?"
                          " ORDER BY path", (row[0],)).fetchall()
    finally:
        db.close()


def journal_rows(state: Path) -> int:
    db = sqlite3.connect(state)
    try:
        return db.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
    finally:
        db.close()


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".rtmp-*")]


# ---------------------------------------------------------------------------- settings
def test_settings_refuse_speculation_and_enable_local_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATOR_SPARK_MASTER", raising=False)
    monkeypatch.delenv("REPLICATOR_SPARK_CONF", raising=False)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    master, conf = resolve_settings(None, None)
    assert master == "local[2,4]"  # local[N] alone never retries a failed task
    assert conf["spark.speculation"] == "false"
    assert conf["spark.task.maxFailures"] == "4"
    assert local_master_with_retries("local[*]", 3) == "local[*,3]"
    assert local_master_with_retries("yarn", 3) == "yarn"
    with pytest.raises(UsageError, match="speculation"):
        resolve_settings("local[2]", {"spark.speculation": "true"})

    monkeypatch.setenv("REPLICATOR_SPARK_MASTER", "spark://head:7077")
    monkeypatch.setenv("REPLICATOR_SPARK_CONF", '{"spark.executor.memory": "2g", "spark.task.maxFailures": 8}')
    master, conf = resolve_settings(None, {"spark.executor.cores": 2})
    assert master == "spark://head:7077"
    assert conf["spark.executor.memory"] == "2g" and conf["spark.task.maxFailures"] == "8"
    assert conf["spark.executor.cores"] == "2"
    monkeypatch.setenv("REPLICATOR_SPARK_CONF", "[1]")
    with pytest.raises(UsageError, match="REPLICATOR_SPARK_CONF"):
        resolve_settings(None, None)

    # inside spark-submit (a Dataproc PySpark job) the launcher's master stands
    monkeypatch.delenv("REPLICATOR_SPARK_MASTER")
    monkeypatch.delenv("REPLICATOR_SPARK_CONF")
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "12345")
    assert resolve_settings(None, None)[0] is None


def test_replicator_imports_without_pyspark_grpc_or_dagster() -> None:
    code = ("import sys, replicator.api, replicator.engine, replicator.executors.spark, "
            "replicator.executors.dataproc; "
            "bad = [m for m in ('pyspark', 'dagster', 'grpc', 'google.cloud.dataproc_v1') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- Spark runs
def test_spark_copy_matches_local_executor(spark_session: Any, tmp_path: Path) -> None:
    src, dst_local, dst_spark = tmp_path / "src", tmp_path / "local", tmp_path / "spark"
    files = make_tree(src)
    state = tmp_path / "state.db"

    local = api.copy(str(src), str(dst_local), opts(tmp_path, "local", checksum=True))
    spark = api.copy(str(src), str(dst_spark), opts(tmp_path, "spark", checksum=True))

    assert local.ok and spark.ok, (local.failures, spark.failures)
    assert spark.executor == "spark"
    assert spark.files_copied == local.files_copied == len(files)
    assert spark.bytes_copied == local.bytes_copied == sum(len(b) for b in files.values())
    # byte-identical trees, with times, modes, the empty file and the empty directory
    assert tree_state(dst_spark) == tree_state(dst_local) == tree_state(src)
    # the same manifest (everything but copied_at), with checksums for every file
    rows_local = manifest(state, src, dst_local)
    rows_spark = manifest(state, src, dst_spark)
    assert rows_spark == rows_local
    assert sum(1 for r in rows_spark if r[1] == "f") == len(files)
    assert all(r[4] and r[4].startswith("crc32c:") for r in rows_spark if r[1] == "f")
    assert journal_rows(state) == 0 and leftovers(dst_spark) == []

    # incremental: nothing to do, then exactly the changed file
    again = api.copy(str(src), str(dst_spark), opts(tmp_path, "spark"))
    assert again.ok and again.files_copied == 0 and again.files_skipped == len(files)
    write_file(src / "dt=2026-11-18/part-00000.parquet", b"changed", MTIME_NS + 10**12)
    changed = api.copy(str(src), str(dst_spark), opts(tmp_path, "spark"))
    assert changed.ok and changed.files_copied == 1 and changed.files_updated == 1
    assert tree_state(dst_spark) == tree_state(src)


def test_task_failure_is_retried_by_spark_and_result_exact(spark_session: Any, tmp_path: Path) -> None:
    sc = spark_session.sparkContext
    if "," not in sc.master:  # pragma: no cover - a foreign session without local retries
        pytest.skip(f"session master {sc.master} does not retry tasks")
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = make_tree(src, small_files=120, big_bytes=11 * MiB)
    markers = tmp_path / "markers"
    # fail the first attempt of the Spark task holding this file, after it was staged
    hook = InjectFailure(rel="dt=2026-11-19/part-00010.parquet", marker_dir=str(markers))
    o = opts(tmp_path, "spark", executor_options={"wave_bins": 2, "task_hook": hook})
    report = api.copy(str(src), str(dst), o)

    assert (markers / "attempt-0-failed").exists(), "the injected failure did not fire"
    assert report.ok, report.failures
    assert report.files_copied == len(files) and report.files_failed == 0
    assert tree_state(dst) == tree_state(src)
    rows = manifest(tmp_path / "state.db", src, dst)
    assert sorted(r[0] for r in rows if r[1] == "f") == sorted(files)
    assert journal_rows(tmp_path / "state.db") == 0 and leftovers(dst) == []


def test_task_failing_every_attempt_fails_its_wave_only(spark_session: Any, tmp_path: Path) -> None:
    sc = spark_session.sparkContext
    if "," not in sc.master:  # pragma: no cover
        pytest.skip(f"session master {sc.master} does not retry tasks")
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = make_tree(src, small_files=300, big_bytes=1000)  # two bins of <= 256 files
    bad = "dt=2026-11-18/part-00003.parquet"
    hook = InjectFailure(rel=bad, marker_dir=str(tmp_path / "m"), attempts=99)
    o = opts(tmp_path, "spark", executor_options={"wave_bins": 1, "task_hook": hook})
    report = api.copy(str(src), str(dst), o)

    assert not report.ok
    failed = {f.path: f.error for f in report.failures}
    assert bad in failed and "injected failure" in failed[bad], failed
    assert all(f.retryable for f in report.failures)
    assert report.files_copied == len(files) - report.files_failed > 0
    # nothing half-published: no staged leftovers, no journal rows, failed files absent
    assert journal_rows(tmp_path / "state.db") == 0 and leftovers(dst) == []
    assert not (dst / bad).exists()
    # a rerun without the fault finishes the job
    fixed = api.copy(str(src), str(dst), opts(tmp_path, "spark"))
    assert fixed.ok and fixed.files_copied == report.files_failed
    assert tree_state(dst) == tree_state(src)


def test_executor_reuses_active_session_and_leaves_it_running(spark_session: Any) -> None:
    ex = SparkExecutor(workers=8)
    assert ex.session() is not None
    ex.close()
    assert spark_session.sparkContext._jsc is not None  # still alive
    assert spark_session.sparkContext.parallelize([1, 2], 2).sum() == 3


# ---------------------------------------------------------------------------- CLI
def test_cli_copy_with_spark_executor_then_verify(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    env = dict(os.environ)
    env.update(spark_env())
    env["REPLICATOR_SPARK_MASTER"] = "local[2]"
    env["REPLICATOR_SPARK_CONF"] = json.dumps({"spark.ui.enabled": "false",
                                               "spark.local.dir": str(tmp_path / "spark-local")})
    env["REPLICATOR_HOME"] = str(tmp_path / "home")
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = make_tree(src, small_files=60, big_bytes=300_000)
    cli = [sys.executable, "-m", "replicator.cli"]

    proc = subprocess.run([*cli, "copy", str(src), str(dst), "--executor", "spark", "--json", "-q"],
                          capture_output=True, text=True, env=env, timeout=480)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["executor"] == "spark" and report["status"] == "ok"
    assert report["files_copied"] == len(files)

    proc = subprocess.run([*cli, "verify", str(src), str(dst), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict = json.loads(proc.stdout.strip().splitlines()[-1])
    assert verdict["files_compared"] == len(files)


def test_retry_after_in_place_write_adopts_the_written_object(spark_session: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Object-store destinations have no staged name: the failed attempt already wrote the
    final object, and a plain retry would trip the must-not-exist precondition. The retry
    checks the bytes (CRC32C) and adopts them; the driver records each file once."""
    sc = spark_session.sparkContext
    if "," not in sc.master:  # pragma: no cover
        pytest.skip(f"session master {sc.master} does not retry tasks")
    from pyspark import cloudpickle

    from replicator.filesystems import registry
    from tests.replicator.executors import executor_helpers

    cloudpickle.register_pickle_by_value(executor_helpers)  # the test back end, into the tasks
    monkeypatch.setitem(registry._loaded, "inplace", executor_helpers.InPlaceFileSystem)
    try:
        src, dst = tmp_path / "src", tmp_path / "dst"
        files = make_tree(src, small_files=30, big_bytes=1000)
        (src / "empty_dir").rmdir()
        hook = InjectFailure(rel="dt=2026-11-19/part-00001.parquet", marker_dir=str(tmp_path / "m"))
        o = opts(tmp_path, "spark", checksum=True, executor_options={"task_hook": hook})
        report = api.copy(str(src), f"inplace://{dst}", o)
        assert (tmp_path / "m" / "attempt-0-failed").exists()
        assert report.ok, report.failures
        assert report.files_copied == len(files)
        assert {k: v[1] for k, v in tree_state(dst).items() if v[0] == "f"} == files
        rows = manifest(tmp_path / "state.db", src, dst)
        assert sorted(r[0] for r in rows if r[1] == "f") == sorted(files)
        assert all(r[4] and r[4].startswith("crc32c:") for r in rows if r[1] == "f")
    finally:
        cloudpickle.unregister_pickle_by_value(executor_helpers)
