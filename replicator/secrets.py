"""Secrets never reach logs, reports or exceptions.

Back ends register each secret value they are configured with; :func:`redact`
replaces every registered value (and URL credentials) in any text we emit.
"""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
_URL_CREDS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<pw>[^/@\s]*)@")


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` hides it (short values are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and URL passwords replaced by ``***``."""
    text = _URL_CREDS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    with _lock:
        values = sorted(_secrets, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, "***")
    return text
