"""``clusters.<name>.executor`` and ``datasets.<name>.executor``: validated once at load (the
error names the file, the key and what was expected) and resolved per (dataset, target)."""

from __future__ import annotations

from pathlib import Path

import pytest

from platform_assets.config import SpecError, load_spec
from platform_assets.datasets import resolve

SPEC = """\
version: 1
platform:
  dataproc: {staging: gs://dp-staging/replication}
clusters:
  onprem: {uri: onprem}
  gcs:
    uri: gs://bucket
    executor: {kind: spark, master: "local[2]", conf: {spark.executor.memory: 1g, spark.x.flag: true}}
  dr:
    uri: hdfs://127.0.0.1:8020
    executor: {kind: distcp, hadoop_conf_dir: hadoop-conf, maps: 3}
  cloud:
    uri: gs://other
    executor:
      kind: dataproc
      project: acme-data
      region: europe-west1
      endpoint: "127.0.0.1:8123"
      cluster_labels: {pool: dr-copy}
      job: replicator
  plain: {uri: plain}
datasets:
  events:
    source: {cluster: onprem, path: events}
    partitions: "dt=*"
    targets: [{cluster: gcs, path: events}, {cluster: dr, path: events}, {cluster: cloud},
              {cluster: plain}]
  logs:
    source: {cluster: onprem, path: logs}
    executor: {kind: local}
    targets: [{cluster: gcs, path: logs}, {cluster: dr, path: logs}]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "replication.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, text))
    return str(err.value)


def test_each_target_resolves_its_clusters_executor_and_a_dataset_override_wins(tmp_path: Path) -> None:
    resolved = resolve(load_spec(write(tmp_path, SPEC)))
    events = resolved["events"]
    gcs, dr, cloud, plain = (events.target(c) for c in ("gcs", "dr", "cloud", "plain"))
    assert (gcs.executor.kind, gcs.executor.master) == ("spark", "local[2]")
    # YAML booleans become Spark's spelling
    assert gcs.executor.engine_options() == {
        "master": "local[2]", "conf": {"spark.executor.memory": "1g", "spark.x.flag": "true"}}
    assert gcs.executor.declared_at == "clusters.gcs.executor"
    assert (dr.executor.kind, dr.executor.maps) == ("distcp", 3)
    # relative to the spec's directory, like every other path in it
    assert dr.executor.hadoop_conf_dir == str(tmp_path / "hadoop-conf")
    assert dr.executor.engine_options() == {"hadoop_conf_dir": str(tmp_path / "hadoop-conf")}
    dp = cloud.executor.dataproc
    assert dp is not None and cloud.executor.kind == "dataproc"
    assert (dp.project, dp.region, dp.endpoint, dict(dp.cluster_labels), dp.job) == (
        "acme-data", "europe-west1", "127.0.0.1:8123", {"pool": "dr-copy"}, "replicator")
    assert (plain.executor.kind, plain.executor.declared_at) == ("local", "default")
    assert plain.executor.engine_options() == {}
    logs = resolved["logs"]
    for t in logs.targets:
        assert (t.executor.kind, t.executor.declared_at) == ("local", "datasets.logs.executor")


def test_the_executor_kind_alone_may_be_written_as_a_string(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SPEC.replace(
        "executor: {kind: distcp, hadoop_conf_dir: hadoop-conf, maps: 3}", "executor: distcp")))
    view = resolve(spec)["events"].target("dr").executor
    assert (view.kind, view.maps, view.hadoop_conf_dir) == ("distcp", None, None)
    assert view.runs_on() == "the local MapReduce runner"


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("kind: distcp, hadoop_conf_dir", "kind: dsitcp, hadoop_conf_dir",
         "clusters.dr.executor: kind: expected one of local, spark, distcp, dataproc, got 'dsitcp'"),
        ("maps: 3", "maps: 0", "clusters.dr.executor.maps: Input should be greater than or equal to 1"),
        ("maps: 3", "maps: many", "clusters.dr.executor.maps: Input should be a valid integer"),
        ("maps: 3", "master: yarn",
         "clusters.dr.executor.master: unknown key for executor kind distcp "
         "(expected hadoop_conf_dir, maps)"),
        ('master: "local[2]"', 'master: "local[two]"',
         "clusters.gcs.executor.master: expected a Spark master such as local[2]"),
        ("spark.executor.memory: 1g", "executor.memory: 1g",
         "clusters.gcs.executor.conf: conf key 'executor.memory': expected a Spark property name"),
        ("spark.x.flag: true", "spark.speculation: true",
         "clusters.gcs.executor.conf: conf spark.speculation: expected false"),
        ("project: acme-data", "project: Acme Data",
         "clusters.cloud.executor.project: expected a Google Cloud project id"),
        ("      region: europe-west1\n", "",
         "clusters.cloud.executor.region: required key is missing"),
        ('endpoint: "127.0.0.1:8123"', 'endpoint: "127.0.0.1"',
         "clusters.cloud.executor.endpoint: expected host:port, got '127.0.0.1'"),
        ("cluster_labels: {pool: dr-copy}", "cluster_labels: {}",
         "clusters.cloud.executor.cluster_labels: Dictionary should have at least 1 item"),
        ("cluster_labels: {pool: dr-copy}", "cluster_labels: {Pool: dr-copy}",
         "clusters.cloud.executor.cluster_labels: label key 'Pool': expected lower-case"),
        ("job: replicator", "job: hive",
         "clusters.cloud.executor.job: Input should be 'distcp' or 'replicator'"),
        ("executor: {kind: local}", "executor: [local]",
         "datasets.logs.executor: expected a mapping with kind (local, spark, distcp, dataproc), got list"),
        ("executor: {kind: local}", "executor: {kind: local, maps: 2}",
         "datasets.logs.executor.maps: unknown key for executor kind local (expected no other key than kind)"),
    ],
)
def test_malformed_executor_names_file_key_and_expectation(tmp_path: Path, replace: str, by: str,
                                                          expected: str) -> None:
    assert replace in SPEC
    msg = error_of(tmp_path, SPEC.replace(replace, by, 1))
    assert msg.startswith(f"{tmp_path / 'replication.yaml'}: "), msg
    assert expected in msg, msg


def test_transforms_refuse_a_non_local_executor_at_load(tmp_path: Path) -> None:
    text = SPEC.replace("    executor: {kind: local}\n", "    transforms: [gunzip]\n")
    msg = error_of(tmp_path, text)
    assert "clusters.gcs.executor: expected kind local for dataset 'logs', whose transforms (gunzip)" in msg
    assert "clusters.dr.executor: expected kind local for dataset 'logs'" in msg
    # a dataset override to local makes it loadable again
    load_spec(write(tmp_path, text.replace("    transforms: [gunzip]\n",
                                           "    transforms: [gunzip]\n    executor: local\n")))


def test_the_old_dataproc_pool_key_is_refused_pointing_to_executor(tmp_path: Path) -> None:
    msg = error_of(tmp_path, SPEC.replace(
        "  plain: {uri: plain}",
        "  plain: {uri: plain, dataproc_pool: {labels: {pool: repl}, region: europe-west1}}"))
    assert (f"{tmp_path / 'replication.yaml'}: clusters.plain: dataproc_pool: replaced by executor; "
            "write executor: {kind: dataproc, project: PROJECT, region: europe-west1, "
            "cluster_labels: {'pool': 'repl'}}") in msg
