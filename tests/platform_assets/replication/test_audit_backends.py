"""Audit files in a bucket (fake-gcs-server: the real JSON API on loopback) and in an HDFS
directory (a real MiniDFSCluster): read, copied, then deleted by default or archived (copy,
check, delete on an object store; rename on HDFS), refused lines kept with their numbers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.datasets import resolve as resolve_spec
from platform_assets.definitions import build_definitions, build_resources
from platform_assets.replication.audit_sensor import AuditState, AuditStore
from platform_assets.runner import apply_sensor_result
from replicator.filesystems.base import FILE
from replicator.filesystems.registry import resolve
from tests.fixtures.gcs import BUCKET

SENSOR = "replication_audit_file_sensor"
SPEC = """\
version: 1
platform:
  state_path: state/replicator.db
  marker: _SUCCESS.json
  notifier: {{kind: jsonl, outbox: outbox/notifications.jsonl}}
  audit: {{dir: "{audit}", prefix: folders_to_copy_{archive}}}
  retries: {{max_retries: 0, delay_s: 0}}
clusters:
  onprem: {{uri: onprem}}
  gcs: {{uri: "{bucket}/replicas"}}
datasets:
  legacy:
    source: {{cluster: onprem, path: warehouse/legacy}}
    partitions: "part_*"
    targets: [{{cluster: gcs, path: legacy}}]
    mode: async
"""


def put(uri: str, data: bytes) -> None:
    fs, path = resolve(uri)
    with fs.open_write(path) as w:
        w.write(data)


def get(uri: str) -> bytes | None:
    fs, path = resolve(uri)
    info = fs.stat(path)
    if info is None or info.kind != FILE:
        return None
    with fs.open_read(path) as f:
        return f.read()


def names(uri: str) -> list[str]:
    fs, path = resolve(uri)
    try:
        return sorted(e.name for e in fs.list_dir(path))
    except FileNotFoundError:
        return []


@pytest.fixture
def gcs_platform(tmp_path: Path, gcs_server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    bucket = f"gs://{BUCKET}/audit-{uuid.uuid4().hex[:10]}"
    root = tmp_path / "platform"
    for part, data in (("part_1", b"one" * 1000), ("part_2", b"two")):
        src = root / "onprem" / "warehouse" / "legacy" / part
        src.mkdir(parents=True)
        (src / "data.bin").write_bytes(data)

    def make(archive: bool) -> tuple[Path, str]:
        spec = root / "replication.yaml"
        spec.write_text(SPEC.format(audit=f"{bucket}/incoming/", bucket=bucket,
                                    archive=f", archive_dir: \"{bucket}/done\"" if archive else ""))
        return spec, bucket

    return root, make


def tick(defs, spec_path: Path, instance, cursor):
    from platform_assets.config import load_spec

    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources=build_resources(load_spec(spec_path)))
    result = defs.resolve_sensor_def(SENSOR)(ctx)
    assert isinstance(result, dg.SensorResult), result
    return result


def audit_text(root: Path, bucket: str) -> str:
    src = root / "onprem" / "warehouse" / "legacy"
    dst = f"{bucket}/replicas/legacy"
    return "\n".join([
        f"{src}/part_1 {dst}/part_1",                       # 1 good
        f"{src}/part_2",                                    # 2 malformed: one field
        f"{root}/onprem/warehouse/other/part_1 {dst}/part_1",  # 3 outside the dataset's root
        f"{src}_evil/part_1 {dst}/part_1",                  # 4 a sibling sharing the prefix
        f"{src}/part_1 {bucket}/replicas/legacy_x/part_1",  # 5 destination outside the target
        f"{src}/part_2 {dst}/%2e%2e/part_2",                # 6 an encoded '..'
        f"{src}/part_2 {dst}/part_2",                       # 7 good
        "",
    ])


def test_audit_file_in_a_bucket_is_copied_then_deleted_and_bad_lines_kept(gcs_platform, instance) -> None:
    root, make = gcs_platform
    spec_path, bucket = make(archive=False)
    name = "folders_to_copy_20261201T2300"
    audit_uri = f"{bucket}/incoming/{name}"
    put(audit_uri, audit_text(root, bucket).encode())
    put(f"{bucket}/incoming/unrelated.txt", b"not an audit file")
    defs = build_definitions(spec_path)

    first = tick(defs, spec_path, instance, None)
    assert sorted(r.partition_key for r in first.run_requests) == ["part_1", "part_2"]
    [event] = [json.loads(x) for x in (root / "outbox" / "notifications.jsonl").read_text().splitlines()]
    assert event["event"] == "audit_lines_rejected" and event["audit_uri"] == audit_uri
    reasons = {r["line_no"]: r["reason"] for r in event["rejected"]}
    assert sorted(reasons) == [2, 3, 4, 5, 6], reasons
    assert "malformed pair" in reasons[2]
    assert "unknown source root" in reasons[3] and "unknown source root" in reasons[4]
    assert "unknown destination root" in reasons[5]
    assert "'..'" in reasons[6]
    assert event["accepted_lines"] == 2
    # the copies have not run: the file waits
    second = tick(defs, spec_path, instance, first.cursor)
    assert second.run_requests == [] and get(audit_uri) is not None

    launched = apply_sensor_result(defs, instance, first, sensor_name=SENSOR)
    assert [r.success for r in launched] == [True, True]
    assert get(f"{bucket}/replicas/legacy/part_1/data.bin") == b"one" * 1000
    assert get(f"{bucket}/replicas/legacy/part_2/data.bin") == b"two"

    third = tick(defs, spec_path, instance, second.cursor)
    assert AuditState.decode(third.cursor).pending == {}
    assert get(audit_uri) is None  # deleted once its copies succeeded
    kept = json.loads(get(f"{audit_uri}.rejected.json") or b"null")
    assert [r["line_no"] for r in kept] == [2, 3, 4, 5, 6]
    assert kept[0]["line"] == f"{root}/onprem/warehouse/legacy/part_2"
    assert names(f"{bucket}/incoming") == [f"{name}.rejected.json", "unrelated.txt"]
    events = [json.loads(x)["event"] for x in (root / "outbox" / "notifications.jsonl").read_text().splitlines()]
    assert events[-1] == "audit_file_deleted"
    # the rejected report is not taken for an audit file on later ticks
    fourth = tick(defs, spec_path, instance, third.cursor)
    assert fourth.run_requests == [] and AuditState.decode(fourth.cursor).pending == {}


def test_audit_file_in_a_bucket_is_archived_by_copy_then_delete(gcs_platform, instance) -> None:
    root, make = gcs_platform
    spec_path, bucket = make(archive=True)
    name = "folders_to_copy_1"
    src = root / "onprem" / "warehouse" / "legacy"
    text = f"{src}/part_2 {bucket}/replicas/legacy/part_2\n".encode()
    put(f"{bucket}/incoming/{name}", text)
    defs = build_definitions(spec_path)
    first = tick(defs, spec_path, instance, None)
    assert [r.success for r in apply_sensor_result(defs, instance, first, sensor_name=SENSOR)] == [True]
    tick(defs, spec_path, instance, first.cursor)
    assert get(f"{bucket}/incoming/{name}") is None
    assert get(f"{bucket}/done/{name}") == text  # the same bytes, under the archive prefix
    assert names(f"{bucket}/done") == [name]  # no rejected report: every line was good


def test_audit_store_on_hdfs_reads_renames_into_the_archive_and_deletes(hdfs_cluster, tmp_path) -> None:
    base = hdfs_cluster.uri(hdfs_cluster.fresh_dir("audit"))
    put(f"{base}/in/folders_to_copy_a", b"line a\n")
    put(f"{base}/in/folders_to_copy_b", b"line b\n")
    put(f"{base}/in/other", b"x")
    store = AuditStore(f"{base}/in", "folders_to_copy_", f"{base}/archive")
    assert store.names() == ["folders_to_copy_a", "folders_to_copy_b"]
    assert store.read("folders_to_copy_a") == "line a\n"
    assert store.finish("folders_to_copy_a", [{"line_no": 3, "line": "x", "reason": "r"}]) == \
        f"archived to {base}/archive/folders_to_copy_a"
    assert get(f"{base}/archive/folders_to_copy_a") == b"line a\n"
    assert json.loads(get(f"{base}/archive/folders_to_copy_a.rejected.json") or b"")[0]["line_no"] == 3
    deleting = AuditStore(f"{base}/in", "folders_to_copy_")
    assert deleting.finish("folders_to_copy_b", []) == "deleted"
    assert names(f"{base}/in") == ["other"]


def test_an_unreachable_audit_bucket_skips_the_tick_and_keeps_the_cursor(tmp_path, instance,
                                                                         monkeypatch) -> None:
    from scripts.jvm import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nothing there
    root = tmp_path / "platform"
    (root / "onprem").mkdir(parents=True)
    spec_path = root / "replication.yaml"
    spec_path.write_text(SPEC.format(audit="gs://nobody/incoming", bucket="gs://nobody",
                                     archive=""))
    defs = build_definitions(spec_path)
    from platform_assets.config import load_spec

    ctx = dg.build_sensor_context(instance=instance, cursor='{"v":1,"pending":{}}',
                                  resources=build_resources(load_spec(spec_path)))
    result = defs.resolve_sensor_def(SENSOR)(ctx)
    assert isinstance(result, dg.SkipReason), result
    assert "audit directory gs://nobody/incoming not readable this tick" in (result.skip_message or "")
    assert resolve_spec(load_spec(spec_path))  # the spec itself is fine


def test_audit_store_on_sftp_through_a_named_remote(sftp_server, tmp_path, monkeypatch) -> None:
    import yaml

    remotes = tmp_path / "remotes.yaml"
    remotes.write_text(yaml.safe_dump({"remotes": {"drop": {"type": "sftp", **sftp_server.fs_options()}}}))
    monkeypatch.setenv("REPLICATOR_REMOTES", str(remotes))
    base = sftp_server.root / f"audit-{uuid.uuid4().hex[:8]}"
    (base / "in").mkdir(parents=True)
    (base / "in" / "folders_to_copy_1").write_bytes(b"a b\n")
    (base / "in" / "folders_to_copy_2").write_bytes(b"c d\n")
    store = AuditStore(f"drop:{base}/in", "folders_to_copy_", f"drop:{base}/archive")
    assert store.names() == ["folders_to_copy_1", "folders_to_copy_2"]
    assert store.read("folders_to_copy_2") == "c d\n"
    assert store.finish("folders_to_copy_1", []).startswith("archived to drop:")
    assert (base / "archive" / "folders_to_copy_1").read_bytes() == b"a b\n"
    assert AuditStore(f"drop:{base}/in", "folders_to_copy_").finish("folders_to_copy_2", []) == "deleted"
    assert sorted(p.name for p in (base / "in").iterdir()) == []
