"""The Kafka notifier against a real broker (``scripts.kafka``): every step to its topic, keyed
by dataset so one dataset's messages stay in order, and an outage that loses nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg
import pytest

from resources import notify
from resources.notify import NotificationQueued, NotifierResource
from tests.fixtures.kafka import KafkaBroker, start_broker

TOPICS = {"detected": "landing.detected", "ingested": "landing.steps", "validated": "landing.steps",
          "rejected": "landing.rejected", "converted": "landing.steps",
          "report_ready": "landing.reports"}


def _notifier(bootstrap: str, outbox: Path, timeout_s: float = 10.0) -> NotifierResource:
    return NotifierResource(kind="kafka", kafka_bootstrap_servers=bootstrap,
                            kafka_topic="platform.runs", kafka_topics=TOPICS,
                            outbox_path=str(outbox), timeout_s=timeout_s)


def test_kafka_broker_gets_every_step_on_its_topic_keyed_by_dataset(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    n = _notifier(kafka_broker.bootstrap, tmp_path / "outbox.jsonl")
    steps = ["detected", "ingested", "validated", "converted", "report_ready"]
    sent = []
    for i, step in enumerate(steps):  # two datasets, interleaved
        for ds in ("orders", "customers"):
            event = {"event": step, "dataset": ds, "batch": f"b{i}"}
            n.notify(event)
            sent.append(event)
    n.notify({"event": "rejected", "dataset": "orders", "file": "bad.csv", "row": 2, "rule": "unique"})
    n.notify({"event": "run_succeeded", "dataset": "events", "partition": "dt=1", "run_id": "r1"})
    assert not (tmp_path / "outbox.jsonl").read_text().strip()  # nothing waits

    topics = sorted(set(TOPICS.values()) | {"platform.runs"})
    got = kafka_broker.events(topics, count=len(sent) + 2)
    assert len(got) == len(sent) + 2
    by_topic = {e["_topic"]: [] for e in got}
    for e in got:
        by_topic[e["_topic"]].append(e)
    assert {e["event"] for e in by_topic["landing.steps"]} == {"ingested", "validated", "converted"}
    assert [e["event"] for e in by_topic["landing.detected"]] == ["detected", "detected"]
    assert [(e["file"], e["row"], e["rule"]) for e in by_topic["landing.rejected"]] == [("bad.csv", 2, "unique")]
    assert [e["run_id"] for e in by_topic["platform.runs"]] == ["r1"]
    for ds in ("orders", "customers"):
        mine = [e for e in by_topic["landing.steps"] if e["dataset"] == ds]
        assert all(e["_key"] == ds for e in mine)
        assert len({e["_partition"] for e in mine}) == 1  # one partition per key ...
        assert [e["event"] for e in mine] == ["ingested", "validated", "converted"]  # ... in order
    assert len({e["id"] for e in got}) == len(got)  # every message has its own id


def test_kafka_broker_down_messages_wait_in_the_outbox_and_arrive_when_it_is_back(
    tmp_path: Path
) -> None:
    broker = start_broker(tmp_path / "broker")
    outbox = tmp_path / "outbox.jsonl"
    n = _notifier(broker.bootstrap, outbox, timeout_s=3.0)
    try:
        n.notify({"event": "detected", "dataset": "orders", "batch": "b1"})  # delivered
        broker.stop()
        # bounded: librdkafka gives up after the delivery timeout; the message waits
        with pytest.raises(NotificationQueued, match=r"1 message\(s\) wait in the outbox"):
            n.notify({"event": "ingested", "dataset": "orders", "batch": "b1"})
        # right after a failure the next message is only queued (no second wait)
        with pytest.raises(NotificationQueued, match=r"2 message\(s\) wait"):
            n.notify({"event": "validated", "dataset": "orders", "batch": "b1"})
        waiting = [json.loads(x) for x in outbox.read_text().splitlines()]
        assert [e["event"] for e in waiting] == ["ingested", "validated"]
        assert n.flush_outbox() == 2  # still down: nothing lost, nothing delivered

        assert broker.start() == n.kafka_bootstrap_servers  # same port, same data
        # the producer reconnects with backoff and the restarted broker elects its leaders:
        # the notify_outbox sensor's next ticks deliver them
        deadline = time.monotonic() + 90
        while n.flush_outbox() and time.monotonic() < deadline:
            time.sleep(1)
        assert n.flush_outbox() == 0
        assert not outbox.read_text().strip()
        n.notify({"event": "converted", "dataset": "orders", "batch": "b1"})
        got = broker.events(["landing.detected", "landing.steps"], count=4)
        assert [e["event"] for e in got if e["_topic"] == "landing.steps"] == [
            "ingested", "validated", "converted"]
        assert [e["event"] for e in got if e["_topic"] == "landing.detected"] == ["detected"]
    finally:
        notify._down_until.clear()
        broker.stop()


def test_kafka_broker_outbox_sensor_delivers_what_waits(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    from platform_assets.definitions import build_definitions, build_resources

    spec = tmp_path / "r.yaml"
    spec.write_text(
        "platform:\n  notifier: {kind: kafka, bootstrap_servers: '" + kafka_broker.bootstrap
        + "', topic: sensor.runs, outbox: outbox.jsonl}\n"
        "clusters:\n  a: {uri: a}\n  b: {uri: b}\n"
        "datasets:\n  d:\n    source: {cluster: a}\n    targets: [{cluster: b}]\n")
    defs = build_definitions(spec)
    assert "notify_outbox" in {s.name for s in defs.sensors}
    # a message that waited while the broker was down (written by an earlier run)
    (tmp_path / "outbox.jsonl").write_text(json.dumps(
        {"id": "w1", "event": "run_failed", "dataset": "d", "run_id": "r0"}) + "\n")
    from platform_assets.config import load_spec

    ctx = dg.build_sensor_context(resources=build_resources(load_spec(spec)), definitions=defs)
    result = defs.resolve_sensor_def("notify_outbox")(ctx)
    assert result.skip_message == "outbox empty"
    [got] = kafka_broker.events(["sensor.runs"], count=1)
    assert (got["id"], got["run_id"], got["_key"]) == ("w1", "r0", "d")
