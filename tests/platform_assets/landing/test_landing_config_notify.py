"""The landing and trigger sections of the spec, and the Kafka notifier kind (no broker can run
here: routing and message building are tested, delivery is not)."""

from __future__ import annotations

import json

import pytest

from platform_assets.config import SpecError, parse_spec
from resources.notify import KafkaNotifier, NotificationError, NotifierResource

BASE = {
    "clusters": {"drop": {"uri": "drop"}, "lake": {"uri": "lake"}},
    "landing": {"orders": {
        "source": {"cluster": "drop", "path": "orders"},
        "raw": {"cluster": "lake", "path": "raw"},
        "output": {"cluster": "lake", "path": "out"},
        "columns": {"id": "int", "dt": "date"},
    }},
}


def _spec(**changes):
    data = json.loads(json.dumps(BASE))
    for path, value in changes.items():
        node = data
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return parse_spec(data, source="spec.yaml")


def test_the_landing_view_resolves_every_fact_once() -> None:
    """The view the assets, checks and sensor are built from: places resolved against the
    spec's directory, the rules, the conversion settings, the notified steps and the names."""
    import dataclasses

    from platform_assets.landing.view import resolve_landing

    spec = _spec(landing__orders__partition_by="dt", landing__orders__spark_threshold_bytes=100,
                 landing__orders__notify=["rejected", "report_ready"],
                 landing__orders__rows={"min": 1, "max": 9}, landing__orders__not_null=["id"],
                 landing__orders__format="jsonl", landing__orders__interval_s=45)
    view = resolve_landing(spec)["orders"]
    base = spec._base_dir
    assert (view.source, view.raw, view.output) == (f"{base}/drop/orders", f"{base}/lake/raw",
                                                    f"{base}/lake/out")
    assert view.source_kind == "local" and view.file_globs == ("*.jsonl",)
    assert (view.rules.min_rows, view.rules.max_rows, tuple(view.rules.not_null),
            view.rules.format) == (1, 9, ("id",), "jsonl")
    assert view.conversion_engine(100) == "pyarrow" and view.conversion_engine(101) == "spark"
    assert view.notifies("rejected") and not view.notifies("detected")
    assert view.interval_s == 45 and view.job_name == "landing_orders"
    assert [k.to_user_string() for k in view.asset_keys] == [
        "landing/orders/ingested", "landing/orders/parquet", "landing/orders/report"]
    assert {k.name for k in view.check_keys} == {"schema", "row_count", "not_null", "unique"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.raw = "/elsewhere"  # type: ignore[misc]


def test_a_valid_landing_section() -> None:
    spec = _spec(landing__orders__partition_by="dt", trigger={"allow": ["orders"]})
    ld = spec.landing["orders"]
    assert ld.min_age_s == 60 and ld.file_globs == ("*.csv",) and ld.partition_by == "dt"
    assert spec.trigger.token_env == "REPLICATOR_TRIGGER_TOKEN"


@pytest.mark.parametrize(("changes", "message"), [
    ({"landing__orders__raw": {"cluster": "nowhere"}},
     "spec.yaml: landing.orders.raw.cluster: expected one of the declared clusters (drop, lake), got 'nowhere'"),
    ({"landing__orders__partition_by": "country"},
     "spec.yaml: landing.orders: partition_by: expected one of the declared columns (id, dt), got 'country'"),
    ({"landing__orders__columns": {"id": "money"}}, "spec.yaml: landing.orders.columns.id: Input should be"),
    ({"landing__orders__rows": {"min": 5, "max": 2}}, "landing.orders.rows: expected max >= min"),
    ({"landing__orders__unique": ["nope"]}, "unique: expected one of the declared columns"),
    ({"trigger": {"allow": ["payroll"]}},
     "spec.yaml: trigger.allow[0]: expected a landing or replication dataset (orders), got 'payroll'"),
    ({"trigger": {"allow": ["orders"], "listen": "8765"}}, "trigger.listen: expected host:port"),
    ({"platform": {"notifier": {"kind": "kafka", "topic": "t"}}},
     "kind kafka: expected bootstrap_servers and topic"),
    ({"platform": {"notifier": {"kind": "kafka", "bootstrap_servers": "k:9092", "topic": "bad topic"}}},
     "kafka topic 'bad topic'"),
    ({"landing__orders__surprise": 1}, "landing.orders.surprise: unknown key"),
])
def test_spec_errors_name_file_key_and_expectation(changes, message) -> None:
    with pytest.raises(SpecError) as err:
        _spec(**changes)
    assert message in str(err.value)


def test_kafka_routes_each_step_to_its_topic() -> None:
    k = KafkaNotifier("127.0.0.1:9", topic="landing.all",
                      topics={"rejected": "landing.rejected", "report_ready": "landing.reports"})
    topic, key, value = k.route({"event": "rejected", "dataset": "orders", "rule": "unique"})
    assert (topic, key) == ("landing.rejected", b"orders")
    assert json.loads(value) == {"event": "rejected", "dataset": "orders", "rule": "unique"}
    assert k.route({"event": "report_ready", "dataset": "orders"})[0] == "landing.reports"
    assert k.route({"event": "ingested"})[:2] == ("landing.all", None)
    with pytest.raises(NotificationError, match="no topic for event 'ingested'"):
        KafkaNotifier("127.0.0.1:9", topics={"rejected": "r"}).route({"event": "ingested"})


def test_kafka_resource_needs_servers_and_a_topic() -> None:
    with pytest.raises(NotificationError, match="kafka_bootstrap_servers and kafka_topic"):
        NotifierResource(kind="kafka", kafka_topic="t").build()
