"""replication.yaml validation: every mistake names the file, the key path and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from platform_assets.config import SpecError, load_spec

REPO = Path(__file__).resolve().parents[2]
BASE = """\
version: 1
clusters:
  onprem: {uri: onprem}
  gcs: {uri: gs://bucket}
datasets:
  events:
    source: {cluster: onprem, path: warehouse/events}
    partitions: "dt=*"
    targets: [{cluster: gcs, path: events}]
"""


def load_text(tmp_path: Path, text: str):
    p = tmp_path / "replication.yaml"
    p.write_text(text)
    return load_spec(p), p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as err:
        load_text(tmp_path, text)
    return str(err.value)


def test_the_repository_spec_loads_with_paths_under_the_repo() -> None:
    spec = load_spec(REPO / "replication.yaml")
    assert {"onprem", "gcs", "dr"} <= set(spec.clusters)
    assert spec.cluster_root("onprem") == str(REPO / ".demo" / "onprem")
    assert spec.state_path.startswith(str(REPO / ".demo"))
    assert spec.datasets["events"].partitioned


def test_valid_spec_resolves_relative_paths_and_uris(tmp_path: Path) -> None:
    spec, _p = load_text(tmp_path, BASE)
    ds = spec.datasets["events"]
    assert spec.endpoint_uri(ds.source, "dt=1") == f"{tmp_path}/onprem/warehouse/events/dt=1"
    assert spec.endpoint_uri(ds.targets[0], "dt=1") == "gs://bucket/events/dt=1"
    assert ds.matches_partition("dt=2026-01-01") and not ds.matches_partition("x=1")


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("targets: [{cluster: gcs, path: events}]", "targets: [{cluster: gcss, path: events}]",
         "datasets.events.targets[0].cluster: expected one of the declared clusters (gcs, onprem), got 'gcss'"),
        ("source: {cluster: onprem, path: warehouse/events}",
         "source: {cluster: onprem, path: ../etc}", "datasets.events.source.path: expected a relative path"),
        ('partitions: "dt=*"', 'partitions: "dt=*"\n    mode: fast', "datasets.events.mode: Input should be 'sync' or 'async'"),
        ('partitions: "dt=*"', 'partitions: "dt=*"\n    freshness: {fail_window: soon}',
         "datasets.events.freshness.fail_window: expected a duration"),
        ('partitions: "dt=*"', 'partitions: "dt=*"\n    freshness: {fail_window: 1h, warn_window: 2h}',
         "datasets.events.freshness: expected warn_window shorter than fail_window"),
        ('partitions: "dt=*"', 'partitions: "dt=*"\n    colour: blue',
         "datasets.events.colour: unknown key"),
        ("targets: [{cluster: gcs, path: events}]", "targets: []",
         "datasets.events.targets: List should have at least 1 item"),
        ("targets: [{cluster: gcs, path: events}]", "targets: [{cluster: onprem}]",
         "datasets.events.targets[0].cluster: expected a cluster other than the source cluster"),
        ("targets: [{cluster: gcs, path: events}]", "targets: [{cluster: gcs, via: dr}]",
         "datasets.events.targets[0].via: expected the cluster of an earlier target"),
        ('partitions: "dt=*"', 'partitions: "dt=*"\n    hive_table: {database: "a;drop", table: t}',
         "datasets.events.hive_table.database: expected a Hive identifier"),
        ('partitions: "dt=*"', 'partitions: "../*"', "datasets.events.partitions: expected one glob per directory level"),
        ("  events:\n", "  bad-name:\n", "datasets: name 'bad-name': expected letters"),
        ("gcs: {uri: gs://bucket}", "gcs: {}", "clusters.gcs.uri: required key is missing"),
    ],
)
def test_malformed_spec_names_file_key_and_expectation(tmp_path: Path, replace: str, by: str, expected: str) -> None:
    assert replace in BASE
    message = error_of(tmp_path, BASE.replace(replace, by))
    assert str(tmp_path / "replication.yaml") in message
    assert expected in message


def test_missing_sections_and_wrong_top_level(tmp_path: Path) -> None:
    assert "clusters: required key is missing" in error_of(tmp_path, "version: 1\n")
    assert "(top level): expected a mapping" in error_of(tmp_path, "- just\n- a list\n")
    assert "version: Input should be 1" in error_of(tmp_path, BASE.replace("version: 1", "version: 2"))


def test_yaml_syntax_error_gives_file_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE + "  broken: [unclosed\n")
    assert f"{tmp_path / 'replication.yaml'}:" in message and "expected valid YAML" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the replication spec"):
        load_spec(tmp_path / "nope.yaml")


def test_config_module_does_not_import_dagster() -> None:
    code = "import sys, platform_assets.config; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
