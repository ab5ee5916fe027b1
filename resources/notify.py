"""Run notifications through a pluggable notifier: a JSONL outbox file (default), an HTTP
webhook, Slack (dagster-slack), or Kafka (confluent-kafka, the optional ``kafka`` extra; one
topic per event/step). Secrets (webhook URL, Slack token) come from ``EnvVar``
fields and never appear in events, logs or error messages."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Literal, Protocol

import dagster as dg
from pydantic import Field

from replicator.secrets import redact, register_secret


class NotificationError(Exception):
    """A notification could not be delivered (the message carries no secret)."""


class Notifier(Protocol):
    def send(self, event: dict[str, Any]) -> None: ...


_outbox_lock = threading.Lock()


class JsonlOutbox:
    """Appends one JSON object per line; another process (or a person) ships them on."""

    def __init__(self, path: str) -> None:
        self.path = path

    def send(self, event: dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        line = json.dumps(event, sort_keys=True, default=str)
        with _outbox_lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


class WebhookNotifier:
    """POSTs the event as JSON; 2xx is success, anything else raises :class:`NotificationError`."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        register_secret(url)
        self._url = url
        self.timeout_s = timeout_s

    def send(self, event: dict[str, Any]) -> None:
        import requests

        try:
            resp = requests.post(self._url, json=event, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise NotificationError(f"webhook: {type(exc).__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise NotificationError(f"webhook: HTTP {resp.status_code}")


class SlackNotifier:
    """Posts a one-line summary to a channel with dagster-slack's client."""

    def __init__(self, token: str, channel: str, api_url: str | None = None) -> None:
        register_secret(token)
        self._token = token
        self.channel = channel
        self.api_url = api_url

    def send(self, event: dict[str, Any]) -> None:
        from dagster_slack import SlackResource
        from slack_sdk.errors import SlackApiError

        client = SlackResource(token=self._token).get_client()
        if self.api_url:
            client.base_url = self.api_url.rstrip("/") + "/"
        try:
            client.chat_postMessage(channel=self.channel, text=format_text(event))
        except SlackApiError as exc:
            raise NotificationError(f"slack: {exc.response.get('error', 'error')}") from None
        except Exception as exc:
            raise NotificationError(f"slack: {type(exc).__name__}") from None


class KafkaNotifier:
    """Produces the event as JSON to the topic of its step (``topics[event]``, else ``topic``).

    confluent-kafka is an optional dependency (``pip install 'replication-platform[kafka]'``),
    imported on first send."""

    def __init__(self, bootstrap_servers: str, topic: str = "", topics: dict[str, str] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.topics = dict(topics or {})
        self.timeout_s = timeout_s
        self._producer: Any = None

    def route(self, event: dict[str, Any]) -> tuple[str, bytes | None, bytes]:
        """(topic, key, value) for ``event``; the key keeps one dataset's events in order."""
        step = str(event.get("event", ""))
        topic = self.topics.get(step) or self.topic
        if not topic:
            raise NotificationError(f"kafka: no topic for event {step!r} and no default topic")
        key = str(event["dataset"]).encode() if event.get("dataset") else None
        return topic, key, json.dumps(event, sort_keys=True, default=str).encode()

    def _make_producer(self) -> Any:
        try:
            from confluent_kafka import Producer
        except ImportError:
            raise NotificationError(
                "kafka: confluent-kafka is not installed; install the optional extra "
                "'replication-platform[kafka]' (confluent-kafka>=2.16)"
            ) from None
        return Producer({"bootstrap.servers": self.bootstrap_servers,
                         "message.timeout.ms": int(self.timeout_s * 1000)})

    def send(self, event: dict[str, Any]) -> None:
        topic, key, value = self.route(event)
        if self._producer is None:
            self._producer = self._make_producer()
        errors: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
            left = self._producer.flush(self.timeout_s)
        except Exception as exc:
            raise NotificationError(f"kafka: {type(exc).__name__}: {redact(str(exc))[:200]}") from None
        if errors or left:
            raise NotificationError(f"kafka: topic {topic}: {errors[0] if errors else 'not delivered'}")


def format_text(event: dict[str, Any]) -> str:
    icon = {"run_succeeded": ":white_check_mark:", "run_failed": ":x:"}.get(event.get("event", ""), ":bell:")
    parts = [icon, str(event.get("event", "event"))]
    for key in ("dataset", "partition", "assets", "run_id", "error"):
        if event.get(key):
            value = event[key]
            parts.append(f"{key}={', '.join(value) if isinstance(value, list) else value}")
    return " ".join(parts)


class NotifierResource(dg.ConfigurableResource):
    """Which notifier to use. ``webhook_url`` and ``slack_token`` should be ``dg.EnvVar``s."""

    kind: Literal["jsonl", "webhook", "slack", "kafka"] = "jsonl"
    outbox_path: str = Field(default="", description="JSONL outbox file (kind jsonl)")
    webhook_url: str = Field(default="", description="kind webhook; secret, use EnvVar")
    slack_token: str = Field(default="", description="kind slack; secret, use EnvVar")
    slack_channel: str = ""
    slack_api_url: str = Field(default="", description="override the Slack API base URL")
    kafka_bootstrap_servers: str = Field(default="", description="kind kafka: host:port[,...]")
    kafka_topic: str = Field(default="", description="kind kafka: default topic")
    kafka_topics: dict[str, str] = Field(default_factory=dict,
                                         description="kind kafka: event/step -> topic")
    timeout_s: float = 10.0

    def build(self) -> Notifier:
        if self.kind == "webhook":
            if not self.webhook_url:
                raise NotificationError("notifier kind webhook: webhook_url is empty")
            return WebhookNotifier(self.webhook_url, self.timeout_s)
        if self.kind == "slack":
            if not (self.slack_token and self.slack_channel):
                raise NotificationError("notifier kind slack: slack_token and slack_channel needed")
            return SlackNotifier(self.slack_token, self.slack_channel, self.slack_api_url or None)
        if self.kind == "kafka":
            if not self.kafka_bootstrap_servers or not (self.kafka_topic or self.kafka_topics):
                raise NotificationError(
                    "notifier kind kafka: kafka_bootstrap_servers and kafka_topic (or kafka_topics) needed"
                )
            return KafkaNotifier(self.kafka_bootstrap_servers, self.kafka_topic,
                                 self.kafka_topics, self.timeout_s)
        if not self.outbox_path:
            raise NotificationError("notifier kind jsonl: outbox_path is empty")
        return JsonlOutbox(self.outbox_path)

    def notify(self, event: dict[str, Any]) -> None:
        notifier = self.build()  # registers its secrets first, so redact() knows them
        event = {"at": time.time(), **event}
        if event.get("error"):
            event["error"] = redact(str(event["error"]))[:2000]
        notifier.send(event)
