"""A real partition backfill, launched through dagster-webserver's GraphQL
(``launchPartitionBackfill``) and run by dagster-daemon on the production dagster.yaml (a
PostgreSQL instance, queued runs), overlapping another run of one of its partitions.

The deployment is the production shape: the code location runs as its own gRPC code server
(``dagster api grpc``) that the webserver and the daemon both use, and the daemon's run queue
launches runs on it. The spec's sensors and schedules are stopped (``default_status``), so the
only runs are the ones this test launches.

Asset backfills run under the implicit asset job without the copy job's run tags (checked here
on the real runs), so the ``replication/copy`` run-queue limit does not keep a backfill run
apart from a sensor or UI run of the same partition. The engine's pair lock does: the platform's
copies wait on it (``ReplicatorResource.lock_wait_s``) instead of failing. The pair of one
partition is held (as by a copy of it in flight) while a ``launchRun`` of that partition, tagged
as the change sensor tags its runs, and the backfill's run of it are both started; once it is
let go, every run succeeds and every file of every partition was copied exactly once."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import requests

from platform_assets.operations import apply_pool_limits
from platform_assets.replication.names import TAG_COPY
from replicator.state import open_store
from tests.fixtures.platform import SPEC_TEMPLATE, make_platform
from tests.fixtures.postgres import PostgresServer, free_port
from tests.fixtures.process import start_server, stop_group, wait_for_url

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = ["dt=2026-11-01", "dt=2026-11-02", "dt=2026-11-03"]
HELD = "dt=2026-11-02"
REPLICAS = [["gcs", "events"], ["dr", "events"]]
FILES = {"a.csv": 100, "sub/b.csv": 200}  # per partition: name -> size
TIMEOUT = 300  # generous: the machine may be loaded; the test normally takes well under a minute


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    resp = requests.post(url + "/graphql", json={"query": query, "variables": variables or {}},
                         timeout=120)
    resp.raise_for_status()
    body = resp.json()
    assert "errors" not in body, body
    return body["data"]


def _wait(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.2
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def _wait_port(port: int, proc, log: Path, timeout: float = TIMEOUT) -> None:
    """Until the code server accepts connections (it binds once the code is loaded)."""
    def accepting() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    _wait(accepting, f"the code server on port {port}", timeout)


def _failures(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What made a run fail: its failure and engine error messages (for the assertion text)."""
    out = []
    for e in instance.all_logs(run_id):
        ev = e.dagster_event
        if ev is None:
            continue
        err = getattr(ev.event_specific_data, "error", None)
        if ev.is_failure or err is not None:
            out.append(f"{ev.event_type_value}: {e.message} {err.to_string() if err else ''}"[:1500])
    return out[:5]


BACKFILL = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId }
  ... on PythonError { message } ... on InvalidSubsetError { message }
  ... on UnauthorizedError { message } } }"""
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } }
  ... on InvalidSubsetError { message } } }"""
BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status } } }"""
REPOS = """{ repositoriesOrError { __typename
  ... on RepositoryConnection { nodes { name location { name } } } } }"""


def test_backfill_through_the_webserver_overlapping_another_run_of_a_partition(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = postgres_server.create_database(f"dagster_{uuid.uuid4().hex[:8]}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    for k, v in {**postgres_server.env(db), "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(k, v)  # the test's own instance reads them too
    # StartRun waits for the run worker to load the code location; on a loaded machine that can
    # pass Dagster's 60 s gRPC default, and the daemon then fails the run (docs/platform.md)
    env = {**os.environ, "DAGSTER_GRPC_TIMEOUT_SECONDS": "300"}

    spec_text = SPEC_TEMPLATE.format(page=20000).replace(
        "platform:\n", "platform:\n  default_status: stopped\n", 1)
    platform = make_platform(tmp_path / "platform", spec_text=spec_text)
    for i, p in enumerate(PARTITIONS):
        for name, size in FILES.items():
            platform.write("events", p, name, str(i) * size)
    (tmp_path / "location.py").write_text(
        "from platform_assets.definitions import build_definitions\n"
        f"defs = build_definitions({str(platform.spec_path)!r})\n")
    grpc_port, web_port = free_port(), free_port()
    (tmp_path / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n"
        f"      location_name: platform\n")
    bindir = Path(sys.executable).parent
    logs = {name: tmp_path / f"{name}.log" for name in ("code_server", "webserver", "daemon")}

    # another copy of HELD to gcs is in flight: it holds that pair until the test lets go
    src = os.path.realpath(platform.source("events") / HELD)
    dst = os.path.realpath(platform.root / "gcs" / "events" / HELD)
    holder = open_store(platform.spec.state_path)
    holder.lock_pair(src, dst)

    procs: list = []
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions("events_copies", PARTITIONS)
            # the deployment step docs/platform.md asks for: pool rows exist before runs claim
            # them (dagster-postgres fails a run that races another creating a default pool row)
            apply_pool_limits(instance, platform.spec)
            code = start_server([str(bindir / "dagster"), "api", "grpc", "-h", "127.0.0.1",
                                 "-p", str(grpc_port), "-f", str(tmp_path / "location.py"),
                                 "-d", str(REPO), "--location-name", "platform"],
                                env, logs["code_server"], cwd=REPO)
            procs.append(code)
            _wait_port(grpc_port, code, logs["code_server"])
            web = start_server([str(bindir / "dagster-webserver"), "-h", "127.0.0.1",
                                "-p", str(web_port), "-w", str(tmp_path / "workspace.yaml")],
                               env, logs["webserver"], cwd=REPO)
            procs.append(web)
            daemon = start_server([str(bindir / "dagster-daemon"), "run",
                                   "-w", str(tmp_path / "workspace.yaml")],
                                  env, logs["daemon"], cwd=REPO)
            procs.append(daemon)
            url = f"http://127.0.0.1:{web_port}"
            wait_for_url(url + "/server_info", web, logs["webserver"], timeout=TIMEOUT)
            repos: list[dict] = []

            def location_loaded() -> bool:  # the webserver may answer before it has the location
                data = _graphql(url, REPOS)["repositoriesOrError"]
                assert data["__typename"] == "RepositoryConnection", data
                repos[:] = data["nodes"]
                return bool(repos)

            _wait(location_loaded, "the webserver to load the code location")
            [repo] = repos
            selector = {"repositoryLocationName": repo["location"]["name"],
                        "repositoryName": repo["name"]}

            launched = _graphql(url, BACKFILL, {"p": {
                "assetSelection": [{"path": k} for k in REPLICAS],
                "partitionNames": PARTITIONS, "title": "backfill under test"}}
            )["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            backfill_id = launched["backfillId"]
            # HELD launched by another path as well, tagged as the change sensor tags its runs
            run = _graphql(url, LAUNCH, {"p": {
                "selector": {**selector, "jobName": "copy_events"},
                "executionMetadata": {"tags": [
                    {"key": "dagster/partition", "value": HELD},
                    {"key": TAG_COPY, "value": f"events/{HELD}"}]}}})["launchRun"]
            assert run["__typename"] == "LaunchRunSuccess", run
            other_id = run["run"]["runId"]

            def runs() -> dict[str, dg.DagsterRun]:
                """The backfill's runs by partition, and the other run as "other"."""
                out = {r.tags.get("dagster/partition"): r for r in instance.get_runs(
                    dg.RunsFilter(tags={"dagster/backfill": backfill_id}))}
                out["other"] = instance.get_run_by_id(other_id)
                failed = {k: _failures(instance, r.run_id) for k, r in out.items()
                          if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)}
                assert not failed, failed
                for proc, log in zip(procs, logs.values(), strict=True):
                    assert proc.poll() is None, log.read_text()[-3000:]
                return out

            def started_while_held() -> bool:
                r = runs()
                done = all(r.get(p) is not None and r[p].status == dg.DagsterRunStatus.SUCCESS
                           for p in PARTITIONS if p != HELD)
                return done and all(r.get(k) is not None and r[k].status == dg.DagsterRunStatus.STARTED
                                    for k in (HELD, "other"))

            # the other partitions are copied while both runs of HELD are in flight at once,
            # waiting on its pair: the run queue did not keep them apart
            _wait(started_while_held, "the other partitions, with both runs of the held one started")
            by = runs()
            assert TAG_COPY not in by[HELD].tags  # backfill runs do not carry the copy tag
            assert by["other"].tags[TAG_COPY] == f"events/{HELD}"
            holder.close()  # the copy in flight is done with it

            _wait(lambda: all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs().values()),
                  "every run to succeed")

            def backfill_done() -> bool:
                status = _graphql(url, BACKFILL_STATUS, {"id": backfill_id})[
                    "partitionBackfillOrError"]["status"]
                assert status in ("REQUESTED", "COMPLETED_SUCCESS"), status
                return status == "COMPLETED_SUCCESS"

            _wait(backfill_done, "the backfill to complete")

            # every file of every partition copied exactly once, on both replicas
            for path in REPLICAS:
                records = instance.fetch_materializations(dg.AssetKey(path), limit=100).records
                copied: dict[str, int] = {}
                for rec in records:
                    md = rec.asset_materialization.metadata
                    assert md["verified"].value is True
                    copied[rec.partition_key] = copied.get(rec.partition_key, 0) + md["files_copied"].value
                assert copied == {p: len(FILES) for p in PARTITIONS}, (path, copied)
                held = [r for r in records if r.partition_key == HELD]
                assert len(held) == 2  # both runs of HELD materialised it; the later one copied nothing
            for i, p in enumerate(PARTITIONS):
                for cluster in ("gcs", "dr"):
                    for name, size in FILES.items():
                        assert (platform.root / cluster / "events" / p / name).read_text() == str(i) * size
    finally:
        holder.close()
        for proc in reversed(procs):
            stop_group(proc)
