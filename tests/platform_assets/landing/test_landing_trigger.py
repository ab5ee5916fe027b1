"""Trigger by command: the HTTP endpoint (``python -m platform_assets.trigger``) and the
``replicator trigger`` client, launching through a real dagster-webserver's GraphQL API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import requests
from click.testing import CliRunner

from platform_assets.config import load_spec
from platform_assets.trigger import TriggerRefused, plan_launch
from replicator.cli import main as cli
from tests.fixtures.postgres import free_port
from tests.fixtures.process import start_server, stop_group, wait_for_url
from tests.platform_assets.landing.conftest import GOOD_CSV, Landing, make_landing

REPO = Path(__file__).resolve().parents[3]
TOKEN = "trigger-t0ken-for-tests"


@dataclass
class Servers:
    landing: Landing
    home: Path
    dagster_url: str
    trigger_url: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("trigger")
    landing = make_landing(root / "landing")
    home = root / "dagster_home"
    home.mkdir()
    # no daemon here: the webserver launches submitted runs at once (production queues them
    # and the daemon dequeues)
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n"
        "  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    (root / "location.py").write_text(
        "from platform_assets.definitions import build_definitions\n"
        f"defs = build_definitions({str(landing.spec_path)!r})\n"
    )
    (root / "workspace.yaml").write_text(
        f"load_from:\n  - python_file:\n      relative_path: location.py\n"
        f"      working_directory: {REPO}\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("LANDING_TEST_TOKEN", None)
    dport, tport = free_port(), free_port()
    bindir = Path(sys.executable).parent
    web = start_server([str(bindir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(dport),
                        "-w", str(root / "workspace.yaml")], env, root / "webserver.log", cwd=REPO)
    trig = None
    try:
        dagster_url = f"http://127.0.0.1:{dport}"
        wait_for_url(dagster_url + "/server_info", web, root / "webserver.log")
        trig = start_server([sys.executable, "-m", "platform_assets.trigger", "--spec", str(landing.spec_path),
                             "--listen", f"127.0.0.1:{tport}", "--dagster-url", dagster_url],
                            {**env, "LANDING_TEST_TOKEN": TOKEN}, root / "trigger.log", cwd=REPO)
        trigger_url = f"http://127.0.0.1:{tport}"
        wait_for_url(trigger_url + "/health", trig, root / "trigger.log", timeout=30)
        yield Servers(landing, home, dagster_url, trigger_url)
        assert TOKEN not in (root / "trigger.log").read_text()
    finally:
        if trig is not None:
            stop_group(trig)
        stop_group(web)


def _post(url: str, body: dict, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(url + "/trigger", json=body, headers=headers, timeout=60)


def test_bad_or_missing_token_is_refused(servers) -> None:
    for token in ("wrong", None, TOKEN + "x", ""):
        resp = _post(servers.trigger_url, {"dataset": "orders"}, token)
        assert resp.status_code == 401, token
        assert "token" in resp.json()["error"] and TOKEN not in resp.text


def test_unknown_dataset_and_bad_partition_are_refused(servers) -> None:
    resp = _post(servers.trigger_url, {"dataset": "payroll"})
    assert resp.status_code == 403
    assert resp.json()["error"] == (
        "dataset 'payroll' is not in the trigger allow-list (allowed: orders, events)")
    resp = _post(servers.trigger_url, {"dataset": "orders", "partition": "../../etc"})
    assert resp.status_code == 400 and "partition" in resp.json()["error"]
    resp = _post(servers.trigger_url, {"dataset": "events"})
    assert resp.status_code == 400 and "expected --partition" in resp.json()["error"]
    resp = requests.post(servers.trigger_url + "/trigger", data=b"{not json",
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert resp.status_code == 400


def test_plan_launch_maps_datasets_to_jobs(servers) -> None:
    spec = load_spec(servers.landing.spec_path)
    launch = plan_launch(spec, "events", "dt=2026-11-20")
    assert launch.job == "copy_events" and launch.tags["dagster/partition"] == "dt=2026-11-20"
    launch = plan_launch(spec, "orders", "batch-7")
    assert launch.job == "landing_orders" and launch.tags["landing/batch"] == "batch-7"
    with pytest.raises(TriggerRefused, match="does not match the layout"):
        plan_launch(spec, "events", "hour=1")


def _wait_run(home: Path, run_id: str, timeout: float = 120) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while True:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                return run
            assert time.monotonic() < deadline, f"run {run_id} not finished: {run and run.status}"
            time.sleep(0.5)


def test_cli_refusals(servers, monkeypatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("REPLICATOR_TRIGGER_URL", servers.trigger_url)
    monkeypatch.setenv("REPLICATOR_TRIGGER_TOKEN", "not-the-token")
    res = runner.invoke(cli, ["trigger", "orders"])
    assert res.exit_code == 2 and "refused (HTTP 401)" in res.output

    monkeypatch.setenv("MY_TOKEN", TOKEN)
    res = runner.invoke(cli, ["trigger", "payroll", "--token-env", "MY_TOKEN"])
    assert res.exit_code == 2 and "not in the trigger allow-list" in res.output

    monkeypatch.delenv("REPLICATOR_TRIGGER_TOKEN")
    res = runner.invoke(cli, ["trigger", "orders"])
    assert res.exit_code == 2 and "REPLICATOR_TRIGGER_TOKEN is not set" in res.output

    res = runner.invoke(cli, ["trigger", "orders", "--url", "http://127.0.0.1:1", "--token-env", "MY_TOKEN"])
    assert res.exit_code == 1 and "unreachable" in res.output


def test_good_token_launches_a_run_through_graphql(servers, monkeypatch) -> None:
    """``replicator trigger`` -> the endpoint -> the webserver's launchRun -> a run that ingests,
    validates, converts and reports the landing file."""
    servers.landing.write("a.csv", GOOD_CSV)
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    res = CliRunner().invoke(cli, ["trigger", "orders", "--partition", "manual-1", "--url",
                                   servers.trigger_url, "--token-env", "MY_TOKEN", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["job"] == "landing_orders" and out["partition"] == "manual-1"
    assert TOKEN not in res.output
    run = _wait_run(servers.home, out["run_id"])
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["landing/batch"] == "manual-1" and run.tags["replication/trigger"] == "command"
    report = servers.landing.output / "_landing" / "reports" / "manual-1" / "report.html"
    assert report.is_file()


def test_replicator_trigger_does_not_import_dagster() -> None:
    code = "import sys, replicator.trigger, replicator.cli; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_dagster_down_is_a_502_without_the_token(tmp_path) -> None:
    from platform_assets.trigger import TriggerApp, graphql_launcher

    landing = make_landing(tmp_path / "landing")
    app = TriggerApp(load_spec(landing.spec_path), TOKEN, graphql_launcher("http://127.0.0.1:1"))
    status, body = app.handle(f"Bearer {TOKEN}", b'{"dataset": "orders"}')
    assert status == 502 and "unreachable" in body["error"] and TOKEN not in body["error"]
    with pytest.raises(ValueError, match="token is empty"):
        TriggerApp(load_spec(landing.spec_path), "", graphql_launcher("http://127.0.0.1:1"))
