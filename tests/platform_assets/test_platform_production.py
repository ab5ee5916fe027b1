"""The code location's production face: the spec named by REPLICATION_SPEC (HDFS, GCS and S3
URIs, thrift metastores) loads without contacting anything and without a single warning, with
kinds that say where each asset lives, owners and descriptions from the spec, standard
metadata, and `dg check defs` / `dg list defs` working."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "tests" / "fixtures" / "production.yaml"


def _refuse(*args, **kwargs):
    raise AssertionError(f"network call while loading the code location: {args!r}")


def test_production_spec_loads_with_warnings_as_errors_and_contacts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from platform_assets.definitions import defs

    monkeypatch.setenv("REPLICATION_SPEC", str(PRODUCTION))
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = defs()
        dg.Definitions.validate_loadable(loaded)
        graph = loaded.get_repository_def().asset_graph

    def node(path: str):
        return graph.get(dg.AssetKey(path.split("/")))

    # kinds from each cluster's scheme (sources and replicas), hive on tables
    assert node("onprem/events").kinds == {"hdfs"}
    assert node("gcs/events").kinds == {"gcs"}
    assert node("dr/events").kinds == {"s3"}
    assert node("analytics/sales/hive_table").kinds == {"hive", "hdfs"}
    # owners and descriptions from the spec
    assert node("dr/events").owners == ["data-platform@acme.example", "team:web"]
    assert "Click events from the web front ends" in node("gcs/events").description
    # standard metadata
    assert node("dr/events").metadata["dagster/uri"] == "s3://acme-prod-dr/events"
    assert node("onprem/events").metadata["dagster/uri"] == (
        "hdfs://namenode.prod.example.internal:8020/warehouse/events")
    assert node("analytics/sales/hive_table").metadata["dagster/table_name"] == "finance.sales"
    # the Hive import on the source cluster and the remote table: where each lives, whose
    assert node("onprem/sales/import").kinds == {"hive", "hdfs"}
    assert node("onprem/sales/import").metadata["dagster/uri"] == (
        "hdfs://namenode.prod.example.internal:8020/warehouse/sales")
    assert node("analytics/sales/hive_table").metadata["dagster/uri"] == (
        "hdfs://namenode.analytics.example.internal:8020/replica/sales")
    assert node("analytics/sales/hive_table").owners == ["team:finance"]
    assert "Sales ledger imported nightly" in node("analytics/sales").description
    # freshness on replicas and on the remote Hive table
    assert node("analytics/sales/hive_table").freshness_policy is not None
    assert node("gcs/events").freshness_policy is not None
    # the production spec starts with every sensor and schedule stopped
    assert {s.default_status for s in loaded.sensors} == {dg.DefaultSensorStatus.STOPPED}
    assert {s.default_status for s in loaded.schedules} == {dg.DefaultScheduleStatus.STOPPED}


def test_a_fresh_interpreter_imports_and_loads_with_deprecations_as_errors() -> None:
    env = {**os.environ, "REPLICATION_SPEC": str(PRODUCTION)}
    code = ("import warnings, dagster as dg\n"
            "warnings.simplefilter('error')\n"
            "import platform_assets.definitions as d\n"
            "loaded = d.defs()\n"
            "dg.Definitions.validate_loadable(loaded)\n"
            "print(len(loaded.resolve_all_asset_keys()))\n")
    out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) == 10


def test_no_private_dagster_import_in_the_code_location() -> None:
    for package in ("platform_assets", "resources", "sensors"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "dagster._" not in text, f"{path.relative_to(REPO)} imports a private dagster module"


def _dg(home: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("dg")
    if not exe.exists():
        exe = Path(shutil.which("dg") or "dg")
    # an instance of its own (the repository's dagster.yaml wants PostgreSQL), this venv
    env = {**os.environ, "REPLICATION_SPEC": str(PRODUCTION), "DAGSTER_HOME": str(home),
           "VIRTUAL_ENV": sys.prefix}
    return subprocess.run([str(exe), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=840)


@pytest.mark.timeout(1800)  # two dg processes each load the code location (minutes under load)
def test_dg_check_and_list_defs_load_the_code_location(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    check = _dg(tmp_path, "check", "defs")
    assert check.returncode == 0, (check.stdout + check.stderr)[-3000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = _dg(tmp_path, "list", "defs", "--json")
    assert listed.returncode == 0, (listed.stdout + listed.stderr)[-3000:]
    data = json.loads(listed.stdout[listed.stdout.index("{"):])
    keys = {a["asset_key"] for a in data["assets"]}
    assert {"onprem/events", "gcs/events", "dr/events", "analytics/sales/hive_table"} <= keys


SECRETS = ("Pa55w0rdXYZ", "S3cr3tKeyXYZ", "FtpPa55XYZ")
SPEC_WITH_CREDENTIALS = f"""\
platform: {{state_path: state.db}}
clusters:
  onprem: {{uri: "sftp://alice:{SECRETS[0]}@127.0.0.1:2222/data", hive_metastore: embedded}}
  gcs: {{uri: "s3://AKIAEXAMPLE:{SECRETS[1]}@bucket-x/rep", hive_metastore: embedded}}
  dr: {{uri: "ftp://bob:{SECRETS[2]}@127.0.0.1:2121/dr"}}
datasets:
  events:
    source: {{cluster: onprem, path: warehouse/events}}
    partitions: "dt=*"
    targets: [{{cluster: gcs, path: events}}, {{cluster: dr, path: events, via: gcs}}]
    hive_table: {{database: a, table: e}}
landing:
  drops:
    source: {{cluster: onprem, path: landing}}
    raw: {{cluster: dr, path: raw}}
    output: {{cluster: gcs, path: out}}
    columns: {{id: int}}
"""


def test_credentials_in_cluster_uris_never_reach_the_definitions(tmp_path: Path) -> None:
    """Passwords and keys written into cluster URIs stay out of everything the UI shows of the
    definitions: asset metadata (dagster/uri, locations), descriptions, tags, check
    descriptions, job and sensor descriptions, across the three kinds."""
    from platform_assets.definitions import build_definitions

    spec = tmp_path / "replication.yaml"
    spec.write_text(SPEC_WITH_CREDENTIALS)
    repo = build_definitions(spec).get_repository_def()
    graph = repo.asset_graph
    shown = [f"{n.key.to_user_string()}: {n.metadata!r} {n.description!r} {n.tags!r} {n.owners!r}"
             for n in graph.asset_nodes]
    assert {"onprem/events/import", "gcs/events/hive_table", "landing/drops/ingested", "dr/events"} <= {
        n.key.to_user_string() for n in graph.asset_nodes}
    assert any("sftp://alice:***@127.0.0.1:2222" in s for s in shown)  # shown, redacted
    shown += [f"{k}: {graph.get_check_spec(k).description!r}" for k in graph.asset_check_keys]
    shown += [f"{j.name}: {j.description!r} {j.tags!r}" for j in repo.get_all_jobs()]
    shown += [f"{s.name}: {s.description!r}" for s in repo.sensor_defs]
    leaked = [s for s in shown if any(secret in s for secret in SECRETS)]
    assert not leaked, leaked
