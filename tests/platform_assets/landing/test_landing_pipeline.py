"""The landing pipeline end to end on local folders: sensor -> ingest (engine copy) ->
blocking validation checks -> Parquet -> report, with notifications at every step."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import dagster as dg
import pyarrow.dataset as pds
import pytest

from platform_assets.definitions import build_definitions, build_resources
from platform_assets.landing.names import (
    TAG_BATCH,
    ingested_key,
    landing_job_name,
    landing_sensor_name,
    parquet_key,
    report_key,
)
from platform_assets.runner import QUIET, apply_sensor_result
from tests.platform_assets.landing.conftest import GOOD_CSV, WEBHOOK_NOTIFIER, Landing, make_landing
from tests.platform_assets.landing.png import count_colour, read_png
from tests.replicator.filesystems.conftest import BUCKET as S3_BUCKET

SENSOR = landing_sensor_name("orders")
BAD_CSV = (
    "order_id,customer,amount,dt\n"
    "10,ada,1,2026-11-20\n11,,2,2026-11-20\n10,cy,3,2026-11-21\n"
)


def _tick(landing: Landing, defs: dg.Definitions, instance: dg.DagsterInstance,
          cursor: str | None = None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                  resources=build_resources(landing.spec))
    result = defs.resolve_sensor_def(SENSOR)(ctx)
    if isinstance(result, dg.SkipReason):
        return result, []
    return result, apply_sensor_result(defs, instance, result, sensor_name=SENSOR, quiet=True)


def _latest_md(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    records = instance.fetch_materializations(key, limit=1).records
    return records[0].asset_materialization.metadata if records else {}


def _parquet_rows(landing: Landing) -> int:
    return pds.dataset(str(landing.output), format="parquet", partitioning="hive").count_rows()


def _parquet_files(landing: Landing) -> list[str]:
    return sorted(str(p.relative_to(landing.output)) for p in landing.output.rglob("*.parquet")
                  if not str(p.relative_to(landing.output)).startswith(("_", ".")))


def test_good_file_flows_to_parquet_and_report_with_webhook_notifications(
    tmp_path, instance, http_sink, monkeypatch
) -> None:
    landing = make_landing(tmp_path / "landing", notifier=WEBHOOK_NOTIFIER)
    monkeypatch.setenv("LANDING_TEST_WEBHOOK", http_sink.url + "/hook?token=hook-s3cret")
    landing.write("a.csv", GOOD_CSV)
    defs = build_definitions(landing.spec_path)

    result, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and launched[0].success
    batch = result.run_requests[0].tags[TAG_BATCH]
    assert (landing.raw / "a.csv").read_text() == GOOD_CSV  # copied into the raw area

    # Parquet, partitioned by dt (hive style), with the declared types
    assert _parquet_files(landing) == [
        "dt=2026-11-20/a-part-0.parquet", "dt=2026-11-21/a-part-0.parquet",
        "dt=2026-11-22/a-part-0.parquet"]
    table = pds.dataset(str(landing.output), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 4
    assert str(table.schema.field("order_id").type) == "int64"
    assert str(table.schema.field("amount").type) == "double"
    assert sorted(table.column("customer").to_pylist()) == ["ada", "bob", "cy", "dee"]

    # the report, linked from the asset metadata, with its CSV summary next to the data
    md = _latest_md(instance, report_key("orders"))
    report = Path(md["report"].value)
    assert report.is_file() and report.is_relative_to(landing.output / "_landing" / "reports")
    assert md["report_url"].value == f"file://{report}"
    page = report.read_text()
    assert page.count("<svg") == 4 and "a.csv" in page and batch in page
    with open(md["summary_csv"].value) as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["rows"], r["status"], r["parquet_files"]) for r in rows] == [
        ("a.csv", "4", "ok", "3")]
    ing = _latest_md(instance, ingested_key("orders"))
    assert ing["files"].value == 1 and ing["rows"].value == 4 and ing["verified"].value is True

    # one notification per step, in order, delivered to the webhook server
    events = [r["body"] for r in http_sink.requests]
    assert [e["event"] for e in events] == ["detected", "ingested", "validated", "converted", "report_ready"]
    assert all(e["dataset"] == "orders" and e["batch"] == batch for e in events)
    assert events[-1]["report"] == str(report)
    assert http_sink.requests[0]["path"] == "/hook?token=hook-s3cret"
    # the webhook secret is nowhere in metadata
    for key in (ingested_key("orders"), parquet_key("orders"), report_key("orders")):
        assert "hook-s3cret" not in json.dumps({k: str(v) for k, v in _latest_md(instance, key).items()})

    # nothing new: the next tick skips
    again, launched = _tick(landing, defs, instance, result.cursor)
    assert isinstance(again, dg.SkipReason) and not launched


def test_bad_rows_are_caught_and_downstream_does_not_run(landing, instance) -> None:
    landing.write("good.csv", GOOD_CSV)
    landing.write("bad.csv", BAD_CSV)
    defs = build_definitions(landing.spec_path)
    _, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and not launched[0].success
    run_id = launched[0].run_id

    # ingested (the files are in the raw area) but neither converted nor reported
    assert instance.fetch_materializations(ingested_key("orders"), limit=5).records
    assert not instance.fetch_materializations(parquet_key("orders"), limit=5).records
    assert not instance.fetch_materializations(report_key("orders"), limit=5).records
    assert not _parquet_files(landing)
    stats = instance.get_run_stats(run_id)
    assert stats.steps_failed == 1 and stats.steps_succeeded == 0

    # the failing blocking checks name file, row and rule
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(ingested_key("orders"), n) for n in ("schema", "row_count", "not_null", "unique")]
    )
    outcome = {k.name: v.evaluation.passed for k, v in checks.items()}
    assert outcome == {"schema": True, "row_count": True, "not_null": False, "unique": False}
    unique = checks[dg.AssetCheckKey(ingested_key("orders"), "unique")].evaluation
    assert unique.metadata["file"].value == "bad.csv"
    assert unique.metadata["row"].value == 3
    assert unique.metadata["rule"].value == "unique"
    assert "first seen in row 1" in unique.metadata["first_violation"].value
    not_null = checks[dg.AssetCheckKey(ingested_key("orders"), "not_null")].evaluation
    assert not_null.metadata["first_violation"].value.startswith("bad.csv row 2 column 'customer'")

    # the rejection notification names the rule, file and row
    events = [json.loads(line) for line in landing.outbox()]
    assert [e["event"] for e in events] == ["detected", "ingested", "rejected"]
    rejected = events[2]
    assert (rejected["file"], rejected["row"], rejected["rule"]) == ("bad.csv", 2, "not_null")
    assert rejected["files_rejected"] == ["bad.csv"]
    assert "bad.csv row 2" in rejected["error"]

    # a corrected file is a change: the next tick starts a new batch that goes through
    landing.write("bad.csv", BAD_CSV.replace("11,,2", "11,bo,2").replace("10,cy", "12,cy"), age_s=60)
    _, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and launched[0].success
    assert _parquet_rows(landing) == 7  # good.csv (4) + the corrected bad.csv (3)


def test_the_good_files_of_a_rejected_batch_go_through_without_waiting_for_a_new_drop(
    landing, instance
) -> None:
    """One bad file fails alone: the rejected batch's valid files were kept pending for "the
    next batch", but nothing started one until a user dropped another file, so they sat in
    the raw area unconverted indefinitely. The next tick now starts a batch of them."""
    landing.write("good.csv", GOOD_CSV)
    landing.write("big.csv", "order_id,customer,amount,dt\n99999999999999999999,ada,1,2026-11-20\n")
    defs = build_definitions(landing.spec_path)
    first, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and not launched[0].success
    rejected = [json.loads(line) for line in landing.outbox()][-1]
    assert (rejected["event"], rejected["file"], rejected["row"], rejected["rule"]) == (
        "rejected", "big.csv", 1, "schema.type")

    carried, launched = _tick(landing, defs, instance, first.cursor)  # nothing new dropped
    assert not isinstance(carried, dg.SkipReason), carried
    assert len(launched) == 1 and launched[0].success
    assert _parquet_files(landing) == [
        "dt=2026-11-20/good-part-0.parquet", "dt=2026-11-21/good-part-0.parquet",
        "dt=2026-11-22/good-part-0.parquet"]
    assert _parquet_rows(landing) == 4
    md = _latest_md(instance, ingested_key("orders"))
    assert md["batch_files"].value == "good.csv" and md["files_rejected"].value == 0
    detected = [json.loads(line) for line in landing.outbox() if '"detected"' in line][-1]
    assert detected["files"] == ["good.csv"] and detected["carried"] is True

    # nothing is pending any more: the next tick rests
    again, launched = _tick(landing, defs, instance, carried.cursor)
    assert isinstance(again, dg.SkipReason) and not launched


def test_two_landing_files_with_one_stem_keep_their_own_parquet(tmp_path, instance) -> None:
    """``a.csv`` and ``a.txt`` (both included) were both converted to ``a-part-0.parquet``: the
    second overwrote the first in staging, and each rerun of one deleted the other's Parquet,
    while the report counted both as converted. Each landing file owns its own names now."""
    landing = make_landing(tmp_path / "landing", extra="    include: ['*.csv', '*.txt']\n")
    landing.write("a.csv", GOOD_CSV)
    landing.write("a.txt", "order_id,customer,amount,dt\n20,eve,1,2026-11-20\n21,fay,2,2026-11-23\n")
    defs = build_definitions(landing.spec_path)
    first, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and launched[0].success
    assert _parquet_rows(landing) == 6
    files = _parquet_files(landing)
    assert "dt=2026-11-20/a-part-0.parquet" in files and len(files) == 5

    # a.txt changes: only its own Parquet is replaced; a.csv's four rows stay
    landing.write("a.txt", "order_id,customer,amount,dt\n22,gus,1,2026-11-20\n", age_s=60)
    _, launched = _tick(landing, defs, instance, first.cursor)
    assert launched[0].success
    table = pds.dataset(str(landing.output), format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("order_id").to_pylist()) == [1, 2, 3, 4, 22]


def test_step_messages_count_every_file_of_a_large_drop(landing, instance) -> None:
    """``detected`` and ``ingested`` list the first 50 files; the chat said "50 new file(s)"
    for a drop of 55. The events carry the total and the chat text uses it."""
    from platform_assets.bot import format_event

    for i in range(55):
        landing.write(f"f{i:02d}.csv", f"order_id,customer,amount,dt\n{i},c{i},1,2026-11-20\n")
    defs = build_definitions(landing.spec_path)
    _, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and launched[0].success
    events = {e["event"]: e for e in map(json.loads, landing.outbox())}
    for step in ("detected", "ingested"):
        assert len(events[step]["files"]) == 50 and events[step]["files_total"] == 55
    assert format_event(events["detected"]).startswith("📥 orders: 55 new file(s) detected")
    assert "and 45 more" in format_event(events["detected"])
    assert format_event(events["ingested"]).startswith("📦 orders: 55 file(s) copied")
    assert events["validated"]["files"] == 55 and events["converted"]["files"] == 55


def test_a_file_that_cannot_be_converted_fails_alone(landing, instance) -> None:
    """A landing file the conversion cannot read (here: gone from the raw area between the
    ingest and the conversion) failed the whole batch's conversion, and the step ended on a
    FileNotFoundError traceback. Now the others are published, it is rejected by name."""
    landing.write("a.csv", GOOD_CSV)
    landing.write("b.csv", "order_id,customer,amount,dt\n30,eve,1,2026-11-23\n")
    defs = build_definitions(landing.spec_path)
    job = defs.resolve_job_def(landing_job_name("orders"))
    tags = {TAG_BATCH: "b-manual"}
    ingest = job.execute_in_process(instance=instance, tags=tags, run_config=QUIET,
                                    asset_selection=[ingested_key("orders")])
    assert ingest.success
    (landing.raw / "b.csv").unlink()
    convert = job.execute_in_process(instance=instance, tags=tags, run_config=QUIET,
                                     asset_selection=[parquet_key("orders")], raise_on_error=False)
    assert not convert.success
    failure = next(e for e in convert.all_events if e.event_type_value == "STEP_FAILURE")
    assert "1 of 2 files not converted" in failure.step_failure_data.error.message
    assert "b.csv: Parquet conversion failed: not in the raw area" in failure.step_failure_data.error.message
    assert _parquet_files(landing) == [
        "dt=2026-11-20/a-part-0.parquet", "dt=2026-11-21/a-part-0.parquet",
        "dt=2026-11-22/a-part-0.parquet"]
    events = [json.loads(line) for line in landing.outbox()]
    assert [e["event"] for e in events][-2:] == ["converted", "rejected"]
    assert events[-2]["files"] == 1
    assert (events[-1]["file"], events[-1]["rule"]) == ("b.csv", "conversion")
    pending = landing.output / "_landing" / "pending.json"
    assert json.loads(pending.read_text()) == []  # b.csv is not carried into later batches


def test_min_age_holds_back_files_still_being_written_and_run_keys_are_stable(
    landing, instance
) -> None:
    landing.write("a.csv", GOOD_CSV, age_s=2)  # min_age_s is 30
    defs = build_definitions(landing.spec_path)
    skip, launched = _tick(landing, defs, instance)
    assert isinstance(skip, dg.SkipReason) and "1 still too new" in skip.skip_message
    assert not launched

    landing.write("a.csv", GOOD_CSV, age_s=40)
    ctx = dg.build_sensor_context(instance=instance, definitions=defs,
                                  resources=build_resources(landing.spec))
    first = defs.resolve_sensor_def(SENSOR)(ctx)
    ctx = dg.build_sensor_context(instance=instance, definitions=defs,
                                  resources=build_resources(landing.spec))
    replay = defs.resolve_sensor_def(SENSOR)(ctx)  # the same tick evaluated again
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in replay.run_requests]
    ctx = dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs,
                                  resources=build_resources(landing.spec))
    in_flight = defs.resolve_sensor_def(SENSOR)(ctx)  # the run has not happened yet
    assert isinstance(in_flight, dg.SkipReason) and "already requested" in in_flight.skip_message


def test_rerun_is_idempotent_and_a_changed_file_replaces_its_parquet(landing, instance) -> None:
    landing.write("a.csv", GOOD_CSV)
    defs = build_definitions(landing.spec_path)
    result, launched = _tick(landing, defs, instance)
    assert launched[0].success
    batch = result.run_requests[0].tags[TAG_BATCH]
    before = {p: (landing.output / p).read_bytes() for p in _parquet_files(landing)}

    job = defs.resolve_job_def(landing_job_name("orders"))
    rerun = job.execute_in_process(instance=instance, tags={TAG_BATCH: batch}, run_config=QUIET)
    assert rerun.success
    assert sorted(before) == _parquet_files(landing) and _parquet_rows(landing) == 4
    assert not [p for p in landing.output.iterdir() if p.name.startswith(".tmp-")]

    # a.csv changes: its old Parquet parts are replaced, not added to
    landing.write("a.csv", "order_id,customer,amount,dt\n1,ada,1,2026-12-01\n", age_s=60)
    _, launched = _tick(landing, defs, instance, result.cursor)
    assert launched[0].success
    assert _parquet_files(landing) == ["dt=2026-12-01/a-part-0.parquet"]
    assert _parquet_rows(landing) == 1

    # the report's trend covers both batches
    md = _latest_md(instance, report_key("orders"))
    history = (landing.output / "_landing" / "history.jsonl").read_text().splitlines()
    assert len(history) == 3 and md["rows"].value == 1


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed; `make test` installs it (scripts/sysdeps.sh)")
    return exe


def test_report_renders_in_headless_chromium(landing, instance, chromium, tmp_path) -> None:
    defs = build_definitions(landing.spec_path)
    landing.write("b.csv", BAD_CSV)  # a rejected batch first: the charts show both outcomes
    result, launched = _tick(landing, defs, instance)
    assert not launched[0].success
    landing.write("a.csv", GOOD_CSV)
    landing.write("b.csv", GOOD_CSV.replace("\n1,", "\n5,").replace("\n2,", "\n6,"), age_s=60)
    _, launched = _tick(landing, defs, instance, result.cursor)
    assert launched[0].success
    report = Path(_latest_md(instance, report_key("orders"))["report"].value)
    shot = Path(os.environ.get("LANDING_SCREENSHOT_DIR", tmp_path)) / "landing_report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1200,1600", "--hide-scrollbars", f"file://{report}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000, time.monotonic() - start
    img = read_png(str(shot))
    assert img.shape[:2] == (1600, 1200)
    # the charts are drawn: bars in the report's blue and green, many distinct colours
    assert count_colour(img, (0x15, 0x65, 0xC0)) > 2000  # rows-per-file bars and trend line
    assert count_colour(img, (0x2E, 0x7D, 0x32)) > 2000  # accepted files column
    assert count_colour(img, (0xC6, 0x28, 0x28)) > 1000  # rejected column, violations per rule
    assert count_colour(img, (255, 255, 255)) < img.shape[0] * img.shape[1] * 0.97


def test_spark_converts_a_batch_above_the_threshold(tmp_path, instance, monkeypatch) -> None:
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    landing = make_landing(tmp_path / "landing", extra="    spark_threshold_bytes: 10\n")
    landing.write("a.csv", GOOD_CSV)
    landing.write("b.csv", "dt,amount,customer,order_id\n2026-11-20,,eve,7\n")  # another order
    defs = build_definitions(landing.spec_path)
    _, launched = _tick(landing, defs, instance)
    assert launched[0].success
    md = _latest_md(instance, parquet_key("orders"))
    assert md["engine"].value == "spark"
    files = _parquet_files(landing)
    assert {f.split("/")[0] for f in files} == {"dt=2026-11-20", "dt=2026-11-21", "dt=2026-11-22"}
    assert all(f.split("/")[1].startswith(("a-part-", "b-part-")) for f in files)
    table = pds.dataset(str(landing.output), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 5
    assert str(table.schema.field("order_id").type) == "int64"
    rows = {r["order_id"]: r for r in table.to_pylist()}
    assert rows[7]["amount"] is None and rows[7]["customer"] == "eve"
    assert rows[1]["amount"] == 10.5 and rows[4]["customer"] == "dee"
    # the part files carry their landing file's stem, so the swap (shared with pyarrow, whose
    # rerun test is above) replaces them on a rerun
    assert sorted(f.split("/")[1] for f in files) == sorted(
        [f"a-part-{i}.parquet" for i in range(3)] + ["b-part-0.parquet"])


def test_a_failed_copy_is_requested_again_and_no_batch_starts_while_one_runs(landing, instance) -> None:
    landing.write("a.csv", GOOD_CSV)
    (landing.raw / "a.csv" / "x").mkdir(parents=True)  # a directory where a.csv must go
    defs = build_definitions(landing.spec_path)
    result, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and not launched[0].success  # the copy failed: nothing ingested
    first_key = result.run_requests[0].run_key

    shutil.rmtree(landing.raw / "a.csv")
    retry, launched = _tick(landing, defs, instance, result.cursor)
    assert len(launched) == 1 and launched[0].success  # the same files, requested again
    assert retry.run_requests[0].run_key != first_key
    assert json.loads(retry.cursor)["attempts"] == 2
    assert _parquet_rows(landing) == 4

    # a copy that fails for one file: the files it did copy go with the next batch
    landing.write("c.csv", "order_id,customer,amount,dt\n50,cat,1,2026-11-23\n")
    landing.write("d.csv", "order_id,customer,amount,dt\n60,dan,1,2026-11-23\n")
    (landing.raw / "d.csv" / "x").mkdir(parents=True)
    partial, launched = _tick(landing, defs, instance, retry.cursor)
    assert not launched[0].success and (landing.raw / "c.csv").is_file()
    assert _parquet_rows(landing) == 4
    shutil.rmtree(landing.raw / "d.csv")
    retry, launched = _tick(landing, defs, instance, partial.cursor)  # plans d.csv only
    assert launched[0].success
    assert _parquet_rows(landing) == 6  # c.csv carried over from the failed batch, and d.csv

    # a landing run in flight: no new batch until it is over
    landing.write("b.csv", GOOD_CSV.replace("\n1,", "\n9,"))
    instance.add_run(dg.DagsterRun(job_name=landing_job_name("orders"), run_id="f" * 36,
                                   status=dg.DagsterRunStatus.STARTED,
                                   tags={"landing/dataset": "orders"}))
    busy, launched = _tick(landing, defs, instance, retry.cursor)
    assert isinstance(busy, dg.SkipReason) and "in flight" in busy.skip_message and not launched


def test_the_watched_directory_can_be_a_bucket(tmp_path, instance, monkeypatch, s3_server) -> None:
    """Files dropped in an S3 bucket (moto server on loopback) flow through like local ones:
    the sensor's plan lists the bucket, the ingest copies from it with the engine."""
    import uuid

    prefix = f"landing-{uuid.uuid4().hex[:8]}"
    for k, v in {"AWS_ENDPOINT_URL_S3": s3_server.url, "AWS_ACCESS_KEY_ID": s3_server.access_key,
                 "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    landing = make_landing(tmp_path / "landing", drop_uri=f"s3://{S3_BUCKET}/{prefix}", min_age_s=0)
    s3_server.client().put_object(Bucket=S3_BUCKET, Key=f"{prefix}/orders/a.csv", Body=GOOD_CSV.encode())
    defs = build_definitions(landing.spec_path)
    _, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and launched[0].success
    assert (landing.raw / "a.csv").read_text() == GOOD_CSV
    assert _parquet_rows(landing) == 4
    assert [json.loads(line)["event"] for line in landing.outbox()] == [
        "detected", "ingested", "validated", "converted", "report_ready"]


def test_revalidating_a_converted_batch_does_not_carry_its_files_into_the_next(landing, instance) -> None:
    """The ingest step of a batch already converted, executed again alone (a re-execution of
    that step): its valid files are not pending again. Before, they were put back into
    pending.json, so the next batch took them along as 'valid files of an earlier batch not
    converted yet', converted them again and counted their rows in its history entry."""
    landing.write("a.csv", GOOD_CSV)
    defs = build_definitions(landing.spec_path)
    result, launched = _tick(landing, defs, instance)
    assert launched[0].success
    batch = result.run_requests[0].tags[TAG_BATCH]
    pending = landing.output / "_landing" / "pending.json"
    assert json.loads(pending.read_text()) == []

    job = defs.resolve_job_def(landing_job_name("orders"))
    again = job.execute_in_process(instance=instance, tags={TAG_BATCH: batch}, run_config=QUIET,
                                   asset_selection=[ingested_key("orders")])
    assert again.success
    assert json.loads(pending.read_text()) == []

    landing.write("b.csv", "order_id,customer,amount,dt\n7,eve,2,2026-11-23\n", age_s=60)
    result, launched = _tick(landing, defs, instance, result.cursor)
    assert launched[0].success
    record = json.loads((landing.output / "_landing" / "batches"
                         / f"{result.run_requests[0].tags[TAG_BATCH]}.json").read_text())
    assert record["files"] == ["b.csv"] and record["carried"] == []
    assert _parquet_rows(landing) == 5
