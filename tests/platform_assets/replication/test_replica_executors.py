"""A replica partition runs its copy with the executor the spec gives its target: local
threads, Spark local[2], real DistCp on the local MapReduce runner into a real HDFS
(MiniDFSCluster). Every executor leaves the same bytes, and the materialisation says which
executor ran the copy and where."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.definitions import build_definitions
from platform_assets.replication.names import partitions_def_name
from replicator.filesystems.base import DIR
from replicator.filesystems.registry import resolve
from resources.replicator import ReplicatorResource

PART = "dt=2026-11-20"
FILES = {
    "part-00000.parquet": os.urandom(300_000),
    "part-00001.parquet": os.urandom(2_000),
    "empty": b"",
    "nested/deeper/leaf.bin": os.urandom(70_000),
    "name with space \u00e9.csv": "caf\u00e9,1\n".encode(),
}
SPEC = """\
version: 1
platform:
  state_path: state/replicator.db
  marker: _SUCCESS.json
  retries: {{max_retries: 0, delay_s: 0}}
clusters:
  onprem: {{uri: onprem}}
  loc: {{uri: loc}}
  spk:
    uri: spk
    executor:
      kind: spark
      master: "local[2]"
      conf: {{spark.ui.enabled: false, spark.driver.memory: 512m, spark.driver.host: 127.0.0.1}}
  hdfs:
    uri: {hdfs}
    executor: {{kind: distcp, maps: 2}}
datasets:
  events:
    source: {{cluster: onprem, path: warehouse/events}}
    partitions: "dt=*"
    targets: [{{cluster: loc}}, {{cluster: spk}}, {{cluster: hdfs}}]
  pinned:
    source: {{cluster: onprem, path: warehouse/events}}
    partitions: "dt=*"
    executor: local
    targets: [{{cluster: spk, path: pinned}}]
"""


def tree_of(uri: str) -> dict[str, bytes]:
    """Every file under ``uri`` (any back end), the platform's marker left out."""
    fs, root = resolve(uri)
    out: dict[str, bytes] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        for info in fs.list_dir(fs.join(root, rel) if rel else root):
            name = info.name
            child = f"{rel}/{name}" if rel else name
            if info.kind == DIR:
                stack.append(child)
            elif name != "_SUCCESS.json":
                with fs.open_read(info.path) as f:
                    out[child] = f.read()
    return out


@pytest.fixture
def executors_platform(tmp_path: Path, hdfs_cluster, monkeypatch: pytest.MonkeyPatch):
    from scripts.maven import classpath

    if not shutil.which("java"):
        pytest.skip("no Java runtime")
    monkeypatch.setenv("REPLICATOR_HADOOP_CLASSPATH", classpath("hadoop"))
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    root = tmp_path / "platform"
    src = root / "onprem" / "warehouse" / "events" / PART
    for rel, data in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    hdfs_root = hdfs_cluster.uri(hdfs_cluster.fresh_dir("exec"))
    spec_path = root / "replication.yaml"
    spec_path.write_text(SPEC.format(hdfs=hdfs_root))
    return spec_path, root, hdfs_root


def materialize(spec_path: Path, root: Path, instance: dg.DagsterInstance, dataset: str,
                key: dg.AssetKey) -> dg.ExecuteInJobResult:
    instance.add_dynamic_partitions(partitions_def_name(dataset), [PART])
    defs = build_definitions(spec_path)
    replica = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and key in a.keys]
    resources = {"replicator": ReplicatorResource(state_path=str(root / "state.db"), workers=2)}
    return dg.materialize(replica, instance=instance, resources=resources, partition_key=PART,
                          selection=[key], raise_on_error=False)



def test_local_spark_and_distcp_replicas_are_byte_identical_and_say_who_ran_them(
        executors_platform, instance) -> None:
    spec_path, root, hdfs_root = executors_platform
    runs_on = {"loc": "threads in the Dagster run process", "spk": "Spark local[2]",
               "hdfs": "the local MapReduce runner"}
    kinds = {"loc": "local", "spk": "spark", "hdfs": "distcp"}
    trees = {}
    for cluster in ("loc", "spk", "hdfs"):
        key = dg.AssetKey([cluster, "events"])
        result = materialize(spec_path, root, instance, "events", key)
        assert result.success, cluster
        [mat] = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
        md = {k: v.value for k, v in mat.metadata.items()}
        assert md["executor"] == kinds[cluster], (cluster, md)
        assert md["executor_runs_on"] == runs_on[cluster], (cluster, md)
        assert md["executor_from"] == ("default" if cluster == "loc" else f"clusters.{cluster}.executor")
        assert md["files_copied"] == len(FILES) and md["verified"] is True, (cluster, md)
        if cluster == "hdfs":  # DistCp's own job ran it (the local runner's job ids)
            assert str(md["executor_jobs"]).startswith("job_local"), md
        else:
            assert "executor_jobs" not in md
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert all(checks.values()), (cluster, checks)
        dst = str(root / cluster / PART) if cluster != "hdfs" else f"{hdfs_root}/{PART}"
        trees[cluster] = tree_of(dst)
    assert trees["loc"] == FILES
    assert trees["spk"] == trees["loc"]
    assert trees["hdfs"] == trees["loc"]


def test_a_dataset_executor_overrides_the_target_clusters(executors_platform, instance) -> None:
    spec_path, root, _ = executors_platform
    key = dg.AssetKey(["spk", "pinned"])
    result = materialize(spec_path, root, instance, "pinned", key)
    assert result.success
    [mat] = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    assert mat.metadata["executor"].value == "local"
    assert mat.metadata["executor_from"].value == "datasets.pinned.executor"
    assert tree_of(str(root / "spk" / "pinned" / PART)) == FILES
