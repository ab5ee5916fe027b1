"""Run notifications through a pluggable notifier: a JSONL outbox file (default), an HTTP
webhook, Slack (dagster-slack), or Kafka (confluent-kafka; one topic per event/step, keyed by
dataset, through an outbox while the broker is down). Secrets (webhook URL, Slack token) come from ``EnvVar``
fields and never appear in events, logs or error messages."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
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


class NotificationQueued(NotificationError):
    """Not delivered now; the message waits in the outbox and goes with a later delivery."""


_producers: dict[tuple[str, float], Any] = {}
_producers_lock = threading.Lock()
_down_until: dict[str, float] = {}  # bootstrap -> monotonic time before which we do not retry


class KafkaNotifier:
    """Produces the event as JSON to the topic of its step (``topics[event]``, else ``topic``),
    keyed by dataset so one dataset's messages stay in order (one partition, idempotent producer).

    With ``outbox_path`` (the platform's setting) delivery goes through an outbox: the message is
    appended to the JSONL file first, then every waiting message is produced in order, and only
    the delivered ones leave the file. A broker that is down costs one bounded attempt
    (``timeout_s``: librdkafka's ``message.timeout.ms``, which bounds its retries); for
    ``timeout_s`` after a failure new messages are only queued. :meth:`flush_outbox` (the
    ``notify_outbox`` sensor, a later message) delivers them once the broker is back.
    Delivery is at least once: a crash between the broker's ack and the rewrite of the outbox
    sends a message twice, and consumers drop repeats by the event's ``id``."""

    def __init__(self, bootstrap_servers: str, topic: str = "", topics: dict[str, str] | None = None,
                 timeout_s: float = 10.0, outbox_path: str = "") -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.topics = dict(topics or {})
        self.timeout_s = timeout_s
        self.outbox_path = outbox_path

    def route(self, event: dict[str, Any]) -> tuple[str, bytes | None, bytes]:
        """(topic, key, value) for ``event``; the key keeps one dataset's events in order."""
        step = str(event.get("event", ""))
        topic = self.topics.get(step) or self.topic
        if not topic:
            raise NotificationError(f"kafka: no topic for event {step!r} and no default topic")
        key = str(event["dataset"]).encode() if event.get("dataset") else None
        return topic, key, json.dumps(event, sort_keys=True, default=str).encode()

    def _producer(self) -> Any:
        from confluent_kafka import Producer

        ms = max(1000, int(self.timeout_s * 1000))
        with _producers_lock:
            cache_key = (self.bootstrap_servers, self.timeout_s)
            if cache_key not in _producers:
                _producers[cache_key] = Producer({
                    "bootstrap.servers": self.bootstrap_servers,
                    "enable.idempotence": True,  # retries never reorder or duplicate a key's messages
                    "acks": "all",
                    "message.timeout.ms": ms,  # the bound on retries of one message
                    "socket.connection.setup.timeout.ms": ms,
                    "reconnect.backoff.max.ms": 2000,
                    "logger": _KAFKA_LOG,
                })
            return _producers[cache_key]

    def _produce(self, events: list[dict[str, Any]]) -> tuple[set[int], str]:
        """Produce ``events`` in order; (indexes delivered, first error)."""
        routed = [self.route(e) for e in events]
        producer = self._producer()
        delivered: set[int] = set()
        errors: list[str] = []

        def callback(i: int) -> Any:
            def on_delivery(err: Any, msg: Any) -> None:
                if err is None:
                    delivered.add(i)
                else:
                    errors.append(str(err))
            return on_delivery

        try:
            for i, (topic, key, value) in enumerate(routed):
                producer.produce(topic, value=value, key=key, on_delivery=callback(i))
            producer.flush(self.timeout_s + 5)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {redact(str(exc))[:200]}")
        if len(delivered) < len(events) and not errors:
            errors.append("not delivered in time")
        return delivered, errors[0] if errors else ""

    def send(self, event: dict[str, Any]) -> None:
        topic = self.route(event)[0]  # a routing mistake is refused before anything is queued
        if not self.outbox_path:
            delivered, error = self._produce([event])
            if not delivered:
                raise NotificationError(f"kafka: topic {topic}: {error}")
            return
        with _OutboxLock(self.outbox_path):
            _append_jsonl(self.outbox_path, event)
            if time.monotonic() < _down_until.get(self.bootstrap_servers, 0.0):
                left = len(_read_jsonl(self.outbox_path))
                raise NotificationQueued(f"kafka: broker unavailable; {left} message(s) wait "
                                         f"in the outbox {self.outbox_path}")
            self._drain_locked()

    def flush_outbox(self) -> int:
        """Deliver the waiting messages in order; return how many still wait."""
        if not self.outbox_path or not os.path.exists(self.outbox_path):
            return 0
        with _OutboxLock(self.outbox_path):
            try:
                self._drain_locked()
            except NotificationQueued:
                pass
            return len(_read_jsonl(self.outbox_path))

    def _drain_locked(self) -> None:
        waiting = _read_jsonl(self.outbox_path)
        if not waiting:
            return
        delivered, error = self._produce(waiting)
        left = [e for i, e in enumerate(waiting) if i not in delivered]
        _rewrite_jsonl(self.outbox_path, left)
        if left:
            _down_until[self.bootstrap_servers] = time.monotonic() + self.timeout_s
            raise NotificationQueued(f"kafka: {error}; {len(left)} message(s) wait in the "
                                     f"outbox {self.outbox_path}")
        _down_until.pop(self.bootstrap_servers, None)


# librdkafka logs every refused reconnect while a broker is down; the outcome that matters
# reaches the caller as NotificationQueued, so its own log is kept to critical lines.
_KAFKA_LOG = logging.getLogger("resources.notify.kafka")
_KAFKA_LOG.setLevel(logging.CRITICAL)


class _OutboxLock:
    """An exclusive lock on ``<outbox>.lock`` (runs and sensors are separate processes)."""

    def __init__(self, path: str) -> None:
        self.path = path + ".lock"
        self._fd = -1

    def __enter__(self) -> _OutboxLock:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        _outbox_lock.acquire()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        _outbox_lock.release()


def _append_jsonl(path: str, event: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    """The outbox's messages; a torn last line (a crash mid-append) is skipped."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _rewrite_jsonl(path: str, events: list[dict[str, Any]]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    outbox_path: str = Field(default="", description="JSONL outbox file (kind jsonl; kind kafka: "
                             "where messages wait while the broker is down)")
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
                                 self.kafka_topics, self.timeout_s, self.outbox_path)
        if not self.outbox_path:
            raise NotificationError("notifier kind jsonl: outbox_path is empty")
        return JsonlOutbox(self.outbox_path)

    def notify(self, event: dict[str, Any]) -> None:
        notifier = self.build()  # registers its secrets first, so redact() knows them
        event = {"id": uuid.uuid4().hex, "at": time.time(), **event}
        if event.get("error"):
            event["error"] = redact(str(event["error"]))[:2000]
        notifier.send(event)

    def flush_outbox(self) -> int:
        """Kind kafka: deliver the messages waiting in the outbox; how many still wait."""
        notifier = self.build()
        return notifier.flush_outbox() if isinstance(notifier, KafkaNotifier) else 0
