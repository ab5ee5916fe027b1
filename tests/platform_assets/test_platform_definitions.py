"""The code location: one Definitions, the expected assets, policies, pools, sensors and checks."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg

from platform_assets.definitions import build_definitions
from platform_assets.operations import apply_pool_limits, pool_limits

REPO = Path(__file__).resolve().parents[2]


def _repo():
    from platform_assets.definitions import defs

    loaded = defs()
    return loaded, loaded.get_repository_def()


def test_repository_definitions_list_the_expected_assets() -> None:
    defs, repo = _repo()
    dg.Definitions.validate_loadable(defs)  # what the webserver / daemon do: every job resolves
    assert {j.name for j in repo.get_all_jobs()} >= {
        "copy_events", "copy_customers", "replication_lag_checks",
    }
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {"onprem/events", "onprem/customers", "gcs/events", "dr/events", "gcs/customers",
                    # the Hive dataset (platform_assets/hive.py): import on onprem, table on dr
                    "onprem/sales", "onprem/sales/import", "dr/sales", "dr/sales/hive_table",
                    "dr/sales/etl_summary",
                    # the landing dataset (platform_assets/landing.py)
                    "landing/orders/ingested", "landing/orders/parquet", "landing/orders/report"}
    assert {s.name for s in defs.sensors} == {
        "replication_change_sensor", "replication_audit_file_sensor",
        "notify_run_success", "notify_run_failure", "hive_copy_slave_sensor",
        "landing_orders_sensor",
    }
    assert "landing_orders" in {j.name for j in repo.get_all_jobs()}


def test_replicas_carry_partitions_freshness_pool_retries_and_checks() -> None:
    _, repo = _repo()
    graph = repo.asset_graph
    gcs = graph.get(dg.AssetKey(["gcs", "events"]))
    dr = graph.get(dg.AssetKey(["dr", "events"]))
    assert isinstance(gcs.partitions_def, dg.DynamicPartitionsDefinition)
    assert gcs.partitions_def.name == "events_copies" and dr.partitions_def == gcs.partitions_def
    assert isinstance(graph.get(dg.AssetKey(["gcs", "customers"])).partitions_def,
                      dg.StaticPartitionsDefinition)
    policy = gcs.freshness_policy
    assert policy.fail_window.to_timedelta() == timedelta(hours=6)
    assert policy.warn_window.to_timedelta() == timedelta(hours=2)
    assert gcs.pools == {"copy_to_gcs"} and dr.pools == {"copy_to_dr"}
    # the dr replica imports from the GCS replica: multi-cluster sync is a dependency
    assert dg.AssetKey(["gcs", "events"]) in dr.parent_keys
    assert dg.AssetKey(["onprem", "events"]) in gcs.parent_keys
    source = graph.get(dg.AssetKey(["onprem", "events"]))
    assert source.is_external and not source.is_materializable  # the sensor observes it
    assert source.partitions_def == gcs.partitions_def
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == gcs.key}
    assert checks == {"copy_verified", "no_temporary_files", "replication_lag"}
    assets_def = repo.assets_defs_by_key[gcs.key]
    op = assets_def.op
    assert op.retry_policy is not None and op.retry_policy.max_retries == 3


def test_pool_limits_come_from_the_spec(instance) -> None:
    from platform_assets.config import load_spec

    spec = load_spec(REPO / "replication.yaml")
    assert pool_limits(spec) == {"copy_to_gcs": 8, "copy_to_dr": 2}
    apply_pool_limits(instance, spec)
    assert instance.event_log_storage.get_concurrency_info("copy_to_dr").slot_count == 2


def test_import_needs_no_environment() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"}
    code = "import platform_assets.definitions as d; print(len(d.defs().sensors))"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "6"


def test_workspace_loads_the_one_definitions_module() -> None:
    import yaml

    ws = yaml.safe_load((REPO / "workspace.yaml").read_text())
    assert ws == {"load_from": [{"python_module": "platform_assets.definitions"}]}
    defs_files = [p for p in (REPO / "platform_assets").glob("*.py") if "dg.Definitions(" in p.read_text()]
    assert [p.name for p in defs_files] == ["definitions.py"]


def test_spec_without_audit_has_no_audit_sensor(tmp_path) -> None:
    spec = tmp_path / "r.yaml"
    spec.write_text(
        "clusters:\n  a: {uri: a}\n  b: {uri: b}\n"
        "datasets:\n  d:\n    source: {cluster: a}\n    targets: [{cluster: b}]\n"
    )
    defs = build_definitions(spec)
    assert {s.name for s in defs.sensors} == {
        "replication_change_sensor", "notify_run_success", "notify_run_failure",
    }


def _imports(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_layout_one_folder_per_kind_and_no_imports_back_and_forth() -> None:
    """platform_assets/ has one folder per dataset kind, each with its own definitions.py;
    sensors/ and resources/ never import platform_assets/ (it imports them), resources/ never
    imports sensors/; the second tree walker is gone."""
    pa = REPO / "platform_assets"
    for kind in ("replication", "landing", "hive"):
        assert (pa / kind / "definitions.py").is_file(), kind
    assert not (pa / "listing.py").exists() and not (pa / "factory.py").exists()
    for package, forbidden in (("sensors", ("platform_assets",)),
                               ("resources", ("platform_assets", "sensors"))):
        for path in sorted((REPO / package).rglob("*.py")):
            bad = {m for m in _imports(path) if m.split(".")[0] in forbidden}
            assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
    # only the root definitions module assembles across kinds
    for path in sorted(pa.rglob("definitions.py")):
        if path.parent == pa:
            continue
        others = {m for m in _imports(path)
                  if m.startswith("platform_assets.") and m.split(".")[1] in ("replication", "landing", "hive")
                  and m.split(".")[1] != path.parent.name}
        assert not others, (path, others)
