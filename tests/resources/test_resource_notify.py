"""Notifiers: JSONL outbox, webhook and Slack (dagster-slack's client against a loopback API)."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from resources.notify import NotificationError, NotifierResource
from tests.fixtures.http import HttpSink

EVENT = {"event": "run_failed", "run_id": "r1", "dataset": "events", "partition": "dt=1",
         "error": "boom"}


def test_jsonl_outbox_appends_one_object_per_line(tmp_path) -> None:
    out = tmp_path / "outbox" / "n.jsonl"
    n = NotifierResource(kind="jsonl", outbox_path=str(out))
    n.notify(EVENT)
    n.notify({**EVENT, "run_id": "r2"})
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["run_id"] for x in lines] == ["r1", "r2"]
    assert all(isinstance(x["at"], float) for x in lines)


def test_webhook_posts_json(http_sink: HttpSink) -> None:
    NotifierResource(kind="webhook", webhook_url=http_sink.url + "/hook?token=s3cr3t-value").notify(EVENT)
    [req] = http_sink.requests
    assert req["path"].startswith("/hook")
    assert req["body"]["event"] == "run_failed" and req["body"]["partition"] == "dt=1"


def test_webhook_error_does_not_leak_the_url(http_sink: HttpSink) -> None:
    http_sink.status = 500
    url = http_sink.url + "/hook?token=topsecret-token"
    with pytest.raises(NotificationError) as err:
        NotifierResource(kind="webhook", webhook_url=url).notify(EVENT)
    assert "500" in str(err.value) and "topsecret" not in str(err.value)


def test_error_text_is_redacted_of_registered_secrets(http_sink: HttpSink) -> None:
    url = http_sink.url + "/hook?token=another-secret-token"
    n = NotifierResource(kind="webhook", webhook_url=url)
    n.notify({**EVENT, "error": f"failed calling {url}"})
    assert "another-secret-token" not in json.dumps(http_sink.requests[0]["body"])


def test_slack_posts_through_dagster_slack(http_sink: HttpSink) -> None:
    n = NotifierResource(kind="slack", slack_token="xoxb-test-token-123", slack_channel="#replication",
                         slack_api_url=http_sink.url + "/api/")
    n.notify(EVENT)
    [req] = http_sink.requests
    assert req["path"] == "/api/chat.postMessage"
    assert req["headers"]["Authorization"] == "Bearer xoxb-test-token-123"
    body = req["body"]
    assert body["channel"] == "#replication" and "run_failed" in body["text"]
    assert "dt=1" in body["text"]


def test_slack_api_error_is_reported_without_the_token(http_sink: HttpSink) -> None:
    http_sink.response = {"ok": False, "error": "channel_not_found"}
    n = NotifierResource(kind="slack", slack_token="xoxb-hidden-token", slack_channel="#nope",
                         slack_api_url=http_sink.url + "/api/")
    with pytest.raises(NotificationError, match="channel_not_found") as err:
        n.notify(EVENT)
    assert "xoxb-hidden-token" not in str(err.value)


def test_secrets_come_from_env_vars(monkeypatch, http_sink: HttpSink) -> None:
    monkeypatch.setenv("TEST_HOOK_URL", http_sink.url + "/from-env")

    @dg.op
    def send(notifier: NotifierResource) -> None:
        notifier.notify(EVENT)

    @dg.job(resource_defs={"notifier": NotifierResource(kind="webhook",
                                                        webhook_url=dg.EnvVar("TEST_HOOK_URL"))})
    def j() -> None:
        send()

    assert j.execute_in_process().success
    assert http_sink.requests[0]["path"] == "/from-env"


def test_unconfigured_kinds_are_refused() -> None:
    with pytest.raises(NotificationError, match="outbox_path"):
        NotifierResource(kind="jsonl").notify(EVENT)
    with pytest.raises(NotificationError, match="slack_token"):
        NotifierResource(kind="slack").notify(EVENT)
