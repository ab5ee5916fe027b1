"""End to end on a real PostgreSQL-backed instance (the repository's production dagster.yaml),
and a dagster-webserver answering GraphQL about the replicas and their ``copy_finished``."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests

from platform_assets.datasets import resolve
from platform_assets.definitions import build_definitions
from platform_assets.replication.checks import evaluate_lag
from platform_assets.replication.names import CHECK_LAG
from platform_assets.runner import apply_sensor_result
from tests.fixtures.platform import Platform, make_platform
from tests.fixtures.postgres import PostgresServer, free_port
from tests.fixtures.process import start_server, stop_group, wait_for_url

REPO = Path(__file__).resolve().parents[2]
SENSOR = "replication_change_sensor"


@pytest.fixture(scope="module")
def pg_home(postgres_server: PostgresServer, tmp_path_factory) -> Iterator[tuple[Path, dict[str, str]]]:
    db = postgres_server.create_database(f"dagster_{uuid.uuid4().hex[:8]}")
    home = tmp_path_factory.mktemp("pg_dagster_home")
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**postgres_server.env(db), "DAGSTER_HOME": str(home)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield home, env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def flow(pg_home, tmp_path_factory) -> Iterator[tuple[Platform, dg.Definitions, dg.DagsterInstance, dict]]:
    home, _ = pg_home
    platform = make_platform(tmp_path_factory.mktemp("pgflow") / "platform")
    platform.write("events", "dt=2026-11-19", "a.csv", "a" * 1000)
    platform.write("events", "dt=2026-11-19", "sub/b.csv", "b" * 2000)
    platform.write("events", "dt=2026-11-20", "c.csv", "c" * 3000)
    platform.write("customers", "", "customers.csv", "id,name\n1,x\n")
    defs = build_definitions(platform.spec_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        state: dict = {}
        yield platform, defs, instance, state


def test_instance_is_postgres_from_the_production_yaml(flow) -> None:
    _, _, instance, _ = flow
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert instance.run_retries_enabled
    # one copy per dataset partition, one landing run per landing dataset, at a time
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    per_value = {lim["key"]: lim["limit"] for lim in limits
                 if lim.get("value") == {"applyLimitPerUniqueValue": True}}
    assert per_value == {"replication/copy": 1, "landing/dataset": 1}


def test_sensor_tick_materializes_replicas_with_copy_finished(flow) -> None:
    platform, defs, instance, state = flow
    before = time.time()
    result = defs.resolve_sensor_def(SENSOR)(dg.build_sensor_context(instance=instance, definitions=defs))
    launched = apply_sensor_result(defs, instance, result, sensor_name=SENSOR)
    assert sorted(r.partition for r in launched) == ["all", "dt=2026-11-19", "dt=2026-11-20"]
    assert all(r.success for r in launched)
    state["cursor"] = result.cursor
    assert set(instance.get_dynamic_partitions("events_copies")) == {"dt=2026-11-19", "dt=2026-11-20"}

    for key in (dg.AssetKey(["gcs", "events"]), dg.AssetKey(["dr", "events"])):
        records = instance.fetch_materializations(key, limit=10).records
        by_part = {r.partition_key: r.asset_materialization.metadata for r in records}
        assert set(by_part) == {"dt=2026-11-19", "dt=2026-11-20"}
        md = by_part["dt=2026-11-19"]
        assert isinstance(md["copy_finished"], dg.TimestampMetadataValue)
        assert before <= md["copy_finished"].value <= time.time()
        assert md["files_copied"].value == 2 and md["bytes_copied"].value == 3000
        assert md["verified"].value is True
        for name in ("files_skipped", "files_deleted", "duration_s", "throughput_mb_s"):
            assert name in md
    assert (platform.root / "dr" / "events" / "dt=2026-11-19" / "sub" / "b.csv").read_text() == "b" * 2000
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey(["gcs", "events"]), "copy_verified")]
    )
    assert next(iter(checks.values())).status.value == "SUCCEEDED"


def test_second_tick_copies_only_the_changed_partition(flow) -> None:
    platform, defs, instance, state = flow
    quiet = defs.resolve_sensor_def(SENSOR)(
        dg.build_sensor_context(instance=instance, cursor=state["cursor"], definitions=defs)
    )
    assert quiet.run_requests == []
    platform.write("events", "dt=2026-11-20", "d.csv", "d" * 10, age_s=30)
    key = dg.AssetKey(["gcs", "events"])
    spec = platform.spec
    lag = evaluate_lag(resolve(spec)["events"], resolve(spec)["events"].target("gcs"), instance)
    assert not lag.passed and lag.metadata["lagging"].value == "dt=2026-11-20"
    result = defs.resolve_sensor_def(SENSOR)(
        dg.build_sensor_context(instance=instance, cursor=quiet.cursor, definitions=defs)
    )
    launched = apply_sensor_result(defs, instance, result, sensor_name=SENSOR)
    assert [r.partition for r in launched] == ["dt=2026-11-20"] and launched[0].success
    md = instance.fetch_materializations(key, limit=1).records[0].asset_materialization.metadata
    assert md["files_copied"].value == 1 and md["files_skipped"].value == 1
    assert evaluate_lag(resolve(spec)["events"], resolve(spec)["events"].target("gcs"), instance).passed
    assert CHECK_LAG == "replication_lag"


def test_failed_copy_fails_the_materialization_listing_the_failure(flow) -> None:
    platform, defs, instance, state = flow
    platform.write("events", "dt=2026-11-21", "e.csv", "e")
    blocker = platform.root / "gcs" / "events" / "dt=2026-11-21"
    blocker.write_text("a file where the partition directory must go")
    result = defs.resolve_sensor_def(SENSOR)(dg.build_sensor_context(
        instance=instance, cursor=state["cursor"], definitions=defs))
    launched = apply_sensor_result(defs, instance, result, sensor_name=SENSOR)
    failed = [r for r in launched if r.partition == "dt=2026-11-21"]
    assert failed and not failed[0].success
    run = instance.get_run_by_id(failed[0].run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    records = instance.get_records_for_run(run.run_id).records
    failures = [r.event_log_entry.dagster_event for r in records
                if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.is_step_failure]
    text = failures[0].step_failure_data.error.message
    assert "dt=2026-11-21" in text
    blocker.unlink()


def _graphql(url: str, query: str) -> dict:
    resp = requests.post(url + "/graphql", json={"query": query}, timeout=30)
    resp.raise_for_status()
    body = resp.json()
    assert "errors" not in body, body
    return body["data"]


def test_webserver_lists_replicas_with_their_latest_copy_finished(flow, pg_home, tmp_path) -> None:
    platform, _, _, _ = flow
    _, env = pg_home
    (tmp_path / "location.py").write_text(
        "from platform_assets.definitions import build_definitions\n"
        f"defs = build_definitions({str(platform.spec_path)!r})\n"
    )
    (tmp_path / "workspace.yaml").write_text(
        f"load_from:\n  - python_file:\n      relative_path: location.py\n"
        f"      working_directory: {REPO}\n"
    )
    port = free_port()
    log = tmp_path / "webserver.log"
    proc = start_server(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
         "-w", str(tmp_path / "workspace.yaml")],
        {**os.environ, **env}, log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(url + "/server_info", proc, log)
        query = """
        { assetsOrError { __typename ... on AssetConnection { nodes {
            key { path }
            definition { groupName isPartitioned }
            assetMaterializations(limit: 1) {
              partition
              metadataEntries { label ... on TimestampMetadataEntry { timestamp } }
            } } } } }
        """
        # the code location loads in the background: retry until the assets have definitions
        deadline = time.monotonic() + 60
        while True:
            data = _graphql(url, query)["assetsOrError"]
            nodes = {"/".join(n["key"]["path"]): n for n in data["nodes"]}
            if all(nodes.get(k, {}).get("definition") for k in ("gcs/events", "dr/events", "gcs/customers")):
                break
            assert time.monotonic() < deadline, json.dumps(data)[:2000]
            time.sleep(1)
        for key in ("gcs/events", "dr/events", "gcs/customers"):
            node = nodes[key]
            assert node["definition"]["isPartitioned"] is True
            [mat] = node["assetMaterializations"]
            finished = {e["label"]: e.get("timestamp") for e in mat["metadataEntries"]}["copy_finished"]
            assert finished and abs(finished - time.time()) < 600
        assert nodes["onprem/events"]["definition"]["groupName"] == "events"
    finally:
        stop_group(proc)
