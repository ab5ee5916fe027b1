"""Client of the trigger endpoint (``replicator trigger DATASET [--partition P]``).

Posts ``{"dataset", "partition"}`` to the endpoint served by ``python -m
platform_assets.trigger`` with ``Authorization: Bearer <token>``; the token comes from an
environment variable (``REPLICATOR_TRIGGER_TOKEN`` unless told otherwise), never from the
command line, and never appears in output. No Dagster import: plain ``requests``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from replicator.errors import FatalError, ReplicatorError, UsageError
from replicator.secrets import redact, register_secret

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_TOKEN_ENV = "REPLICATOR_TRIGGER_TOKEN"
URL_ENV = "REPLICATOR_TRIGGER_URL"


class TriggerRefusedError(UsageError):
    """The endpoint refused the request (bad token, dataset not allowed, bad partition): exit 2."""


@dataclass(frozen=True)
class TriggerResult:
    run_id: str
    job: str
    dataset: str
    partition: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "job": self.job, "dataset": self.dataset,
                "partition": self.partition}


def trigger(dataset: str, partition: str | None = None, *, url: str | None = None,
            token_env: str = DEFAULT_TOKEN_ENV, timeout_s: float = 60.0) -> TriggerResult:
    """Ask the trigger endpoint to launch ``dataset`` (optionally one partition / batch)."""
    import requests

    base = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--url: expected an http(s) URL, got {base!r}")
    token = os.environ.get(token_env, "")
    if not token:
        raise UsageError(f"--token-env: environment variable {token_env} is not set (the trigger token)")
    register_secret(token)
    body: dict[str, Any] = {"dataset": dataset}
    if partition is not None:
        body["partition"] = partition
    try:
        resp = requests.post(base + "/trigger", json=body, timeout=timeout_s,
                             headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as exc:
        raise FatalError(f"trigger endpoint {base} unreachable: {type(exc).__name__}") from None
    try:
        data = resp.json()
    except ValueError:
        data = {}
    message = redact(str(data.get("error") or f"HTTP {resp.status_code}"))
    if resp.status_code in (400, 401, 403, 404):
        raise TriggerRefusedError(f"refused (HTTP {resp.status_code}): {message}")
    if resp.status_code != 200 or "run_id" not in data:
        raise ReplicatorError(f"trigger failed (HTTP {resp.status_code}): {message}")
    return TriggerResult(str(data["run_id"]), str(data.get("job", "")), dataset,
                         data.get("partition"))
