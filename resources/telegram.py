"""A small Telegram Bot API client over plain HTTPS (requests): the three methods the chat bot
uses, ``getUpdates`` (long polling), ``sendMessage`` and ``sendDocument`` (multipart upload).

The token is part of every method URL (``{api_url}/bot<token>/<method>``), so it is registered
as a secret and every error is built without the URL; nothing here logs a request. ``api_url``
is configurable (a local server that follows the Bot API in tests, a proxy in production).
"""

from __future__ import annotations

from typing import Any

import requests

from replicator.secrets import redact, register_secret

DEFAULT_API_URL = "https://api.telegram.org"
MAX_MESSAGE = 4096  # characters the Bot API accepts in one message


class TelegramError(Exception):
    """A Bot API call failed; ``retryable`` when the server or the network may recover."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class TelegramClient:
    def __init__(self, token: str, api_url: str = DEFAULT_API_URL, timeout_s: float = 30.0) -> None:
        if not token:
            raise TelegramError("the bot token is empty")
        register_secret(token)
        self._base = f"{api_url.rstrip('/')}/bot{token}/"
        self.api_url = api_url
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def _call(self, method: str, *, json: dict[str, Any] | None = None,
              data: dict[str, Any] | None = None, files: dict[str, Any] | None = None,
              timeout: float | None = None) -> Any:
        try:
            resp = self._session.post(self._base + method, json=json, data=data, files=files,
                                      timeout=timeout or self.timeout_s)
        except requests.RequestException as exc:
            raise TelegramError(f"{method}: {type(exc).__name__} (Bot API at {self.api_url})",
                                retryable=True) from None
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code == 200 and body.get("ok"):
            return body.get("result")
        desc = redact(str(body.get("description") or f"HTTP {resp.status_code}"))[:300]
        raise TelegramError(f"{method}: {desc}",
                            retryable=resp.status_code >= 500 or resp.status_code == 429)

    def get_updates(self, offset: int | None, timeout_s: int = 20) -> list[dict[str, Any]]:
        """Updates from ``offset`` on; waits up to ``timeout_s`` for one (long polling)."""
        payload: dict[str, Any] = {"timeout": timeout_s, "allowed_updates": ["message"]}
        if offset is not None:
            payload["offset"] = offset
        return list(self._call("getUpdates", json=payload, timeout=timeout_s + self.timeout_s))

    def send_message(self, chat_id: int, text: str) -> dict[str, Any]:
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 1] + "…"
        return self._call("sendMessage", json={"chat_id": chat_id, "text": text,
                                                "disable_web_page_preview": True})

    def send_document(self, chat_id: int, filename: str, content: bytes, caption: str = "",
                      mime: str = "application/octet-stream") -> dict[str, Any]:
        data: dict[str, Any] = {"chat_id": str(chat_id)}
        if caption:
            data["caption"] = caption[:1024]
        return self._call("sendDocument", data=data,
                          files={"document": (filename, content, mime)})
