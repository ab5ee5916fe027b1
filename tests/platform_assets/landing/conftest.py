"""A throw-away landing zone: a spec in a temporary directory with local folders standing in
for the drop bucket ("drop") and the cluster ("lake"), plus a Dagster home."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from platform_assets.config import ReplicationSpec, load_spec
from tests.fixtures.http import http_sink  # noqa: F401
from tests.fixtures.platform import dagster_home, instance  # noqa: F401
from tests.fixtures.telegram import bot_api  # noqa: F401
from tests.replicator.filesystems.conftest import s3_server  # noqa: F401

LANDING_SPEC = """\
version: 1
platform:
  state_path: state/replicator.db
  marker: _SUCCESS.json
  notifier: {notifier}
  retries: {{max_retries: 0, delay_s: 0}}
clusters:
  drop: {{uri: {drop_uri}}}
  lake: {{uri: {lake_uri}}}
datasets:
  events:
    source: {{cluster: lake, path: warehouse/events}}
    partitions: "dt=*"
    targets: [{{cluster: drop, path: events}}]
landing:
  orders:
    source: {{cluster: drop, path: orders}}
    raw: {{cluster: lake, path: raw/orders}}
    output: {{cluster: lake, path: curated/orders}}
    min_age_s: {min_age_s}
    columns: {{order_id: int, customer: string, amount: float, dt: date}}
    rows: {{min: 1, max: 1000}}
    not_null: [order_id, customer]
    unique: [order_id]
    partition_by: dt
{extra}trigger:
  allow: [orders, events]
  token_env: LANDING_TEST_TOKEN
"""
JSONL_NOTIFIER = "{kind: jsonl, outbox: outbox/notifications.jsonl}"
WEBHOOK_NOTIFIER = "{kind: webhook, url_env: LANDING_TEST_WEBHOOK}"

GOOD_CSV = (
    "order_id,customer,amount,dt\n"
    "1,ada,10.5,2026-11-20\n2,bob,3,2026-11-21\n3,cy,4.25,2026-11-20\n4,dee,7,2026-11-22\n"
)


@dataclass
class Landing:
    root: Path
    spec_path: Path

    @property
    def spec(self) -> ReplicationSpec:
        return load_spec(self.spec_path)

    @property
    def drop(self) -> Path:
        return self.root / "drop" / "orders"

    @property
    def raw(self) -> Path:
        return self.root / "lake" / "raw" / "orders"

    @property
    def output(self) -> Path:
        return self.root / "lake" / "curated" / "orders"

    def write(self, name: str, text: str, *, age_s: float = 120.0) -> Path:
        path = self.drop / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        t = time.time() - age_s
        os.utime(path, (t, t))
        return path

    def outbox(self) -> list[str]:
        p = self.root / "outbox" / "notifications.jsonl"
        return p.read_text().splitlines() if p.exists() else []


def make_landing(root: Path, notifier: str = JSONL_NOTIFIER, extra: str = "", *,
                 drop_uri: str = "drop", lake_uri: str = "lake", min_age_s: float = 30) -> Landing:
    """``extra``: more keys of the ``orders`` landing dataset (YAML lines, 4-space indent);
    ``lake_uri``: the cluster holding raw and output (a folder of ``root``, or ``hdfs://...``)."""
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "replication.yaml"
    spec_path.write_text(LANDING_SPEC.format(notifier=notifier, extra=extra, drop_uri=drop_uri,
                                             lake_uri=lake_uri, min_age_s=min_age_s))
    return Landing(root, spec_path)


@pytest.fixture
def landing(tmp_path: Path) -> Landing:
    return make_landing(tmp_path / "landing")
