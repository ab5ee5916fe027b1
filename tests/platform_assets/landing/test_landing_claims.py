"""Two landing runs at once (a trigger run and a sensor run, each its own process) on one
dataset: a pending file belongs to exactly one batch, so the batch records, the report and
the history count it once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from platform_assets.definitions import build_definitions
from platform_assets.landing.names import TAG_BATCH, landing_job_name
from platform_assets.runner import QUIET
from tests.platform_assets.landing.conftest import GOOD_CSV, make_landing

REPO = Path(__file__).resolve().parents[3]

# one landing run of batch argv[2] in this process, started when the file argv[3] appears
RUN_BATCH = """
import os, sys, time
import dagster as dg
from platform_assets.definitions import build_definitions
from platform_assets.landing.names import TAG_BATCH, landing_job_name
from platform_assets.runner import QUIET
spec, batch, go = sys.argv[1:4]
job = build_definitions(spec).resolve_job_def(landing_job_name("orders"))
with dg.DagsterInstance.get() as instance:
    open(go + "." + batch, "w").close()
    while not os.path.exists(go):
        time.sleep(0.005)
    result = job.execute_in_process(instance=instance, tags={TAG_BATCH: batch},
                                    run_config=QUIET, raise_on_error=False)
print("ok" if result.success else "failed")
"""


def test_two_concurrent_landing_runs_never_both_take_a_pending_file(tmp_path, instance) -> None:
    """Before: each run's ingest read ``pending.json`` and took every file in it, so a
    trigger run and a sensor run started together both carried the rejected batch's good
    file: two batch records listed it, it was converted twice and the history counted its
    rows twice. Now a file pending is claimed by one run (its claim lasts while that run is
    in flight) and the other run leaves it alone."""
    landing = make_landing(tmp_path / "landing")
    landing.write("good.csv", GOOD_CSV)
    landing.write("big.csv", "order_id,customer,amount,dt\n99999999999999999999,ada,1,2026-11-20\n")
    job = build_definitions(landing.spec_path).resolve_job_def(landing_job_name("orders"))
    first = job.execute_in_process(instance=instance, tags={TAG_BATCH: "b-rejected"},
                                   run_config=QUIET, raise_on_error=False)
    assert not first.success  # big.csv rejected; good.csv waits in pending.json
    pending = landing.output / "_landing" / "pending.json"
    assert json.loads(pending.read_text()) == ["good.csv"]

    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    takers = [subprocess.Popen([sys.executable, "-c", RUN_BATCH, str(landing.spec_path), batch, str(go)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for batch in ("trigger-1", "sensor-1")]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"go.{b}").exists() for b in ("trigger-1", "sensor-1")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in takers), \
            [p.communicate() for p in takers]
        time.sleep(0.05)
    go.touch()  # both start together
    outs = [p.communicate(timeout=300) for p in takers]
    assert [o[0].strip() for o in outs] == ["ok", "ok"], outs

    records = {b: json.loads((landing.output / "_landing" / "batches" / f"{b}.json").read_text())
               for b in ("trigger-1", "sensor-1")}
    taken = sorted(f for r in records.values() for f in r["files"])
    assert taken == ["good.csv"], records  # in one batch, not in both
    history = [json.loads(line) for line in
               (landing.output / "_landing" / "history.jsonl").read_text().splitlines()]
    later = [h for h in history if h["batch"] in records]
    assert sum(h["files"] for h in later) == 1 and sum(h["rows"] for h in later) == 4, later
    assert json.loads(pending.read_text()) == []
