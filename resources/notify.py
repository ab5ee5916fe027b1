"""Run notifications through a pluggable notifier: a JSONL outbox file (default), an HTTP
webhook, or Slack (dagster-slack). Secrets (webhook URL, Slack token) come from ``EnvVar``
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

    kind: Literal["jsonl", "webhook", "slack"] = "jsonl"
    outbox_path: str = Field(default="", description="JSONL outbox file (kind jsonl)")
    webhook_url: str = Field(default="", description="kind webhook; secret, use EnvVar")
    slack_token: str = Field(default="", description="kind slack; secret, use EnvVar")
    slack_channel: str = ""
    slack_api_url: str = Field(default="", description="override the Slack API base URL")
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
        if not self.outbox_path:
            raise NotificationError("notifier kind jsonl: outbox_path is empty")
        return JsonlOutbox(self.outbox_path)

    def notify(self, event: dict[str, Any]) -> None:
        notifier = self.build()  # registers its secrets first, so redact() knows them
        event = {"at": time.time(), **event}
        if event.get("error"):
            event["error"] = redact(str(event["error"]))[:2000]
        notifier.send(event)
