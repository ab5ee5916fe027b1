"""``platform.state`` in the replication spec: an SQLite file, a PostgreSQL URL, or
``env:NAME`` for a URL that carries a password; the resource copies on that store."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.config import SpecError, load_spec
from platform_assets.definitions import build_resources
from replicator.state import open_store
from resources.replicator import ReplicatorResource
from tests.fixtures.postgres import PostgresServer
from tests.platform_assets.test_platform_config import BASE


def spec_with(tmp_path: Path, state: str):
    p = tmp_path / "replication.yaml"
    p.write_text(f"version: 1\nplatform:\n  state: {state!r}\n" + BASE.removeprefix("version: 1\n"))
    return load_spec(p), p


def test_state_path_url_and_env(tmp_path: Path) -> None:
    spec, _ = spec_with(tmp_path, "state/replicator.db")
    assert spec.state_path == str(tmp_path / "state" / "replicator.db")
    spec, _ = spec_with(tmp_path, "postgresql://replicator@db.internal:5432/platform")
    assert spec.state_path == "postgresql://replicator@db.internal:5432/platform"
    spec, _ = spec_with(tmp_path, "env:REPLICATOR_STATE")
    resource = build_resources(spec)["replicator"]
    assert resource.state_path == dg.EnvVar("REPLICATOR_STATE")


@pytest.mark.parametrize("state, expected", [
    ("s3://bucket/state.db", "unknown scheme s3://"),
    ("postgresql://replicator:hunter22@db/platform", "belongs in the environment"),
    ("env:", "expected env:VARIABLE_NAME"),
])
def test_bad_state_names_file_key_and_expectation(tmp_path: Path, state: str, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        spec_with(tmp_path, state)
    message = str(err.value)
    assert str(tmp_path / "replication.yaml") in message and "platform.state" in message
    assert expected in message and "hunter22" not in message


def test_resource_copies_on_a_postgres_state_from_the_environment(
        tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server = postgres_server
    db = server.create_database(f"state_{uuid.uuid4().hex[:10]}")
    url = f"postgresql://{server.user}:{server.password}@{server.host}:{server.port}/{db}"
    monkeypatch.setenv("REPLICATOR_STATE", url)
    spec, _ = spec_with(tmp_path, "env:REPLICATOR_STATE")
    resource = build_resources(spec)["replicator"]
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "dt=1").mkdir(parents=True)
    (src / "dt=1" / "a.csv").write_text("a")

    @dg.asset
    def copied(replicator: ReplicatorResource) -> dg.MaterializeResult:
        report = replicator.copy(str(src), str(dst), replicator.options())
        assert report.ok, report.error
        return dg.MaterializeResult(metadata={"files": report.files_copied})

    result = dg.materialize([copied], resources={"replicator": resource})
    assert result.success and (dst / "dt=1" / "a.csv").read_text() == "a"
    store = open_store(url, read_only=True)
    try:
        pair = store.find_pair(str(src.resolve()), str(dst.resolve()))
        assert pair is not None and [r[0] for r in store.manifest_rows(pair)] == ["dt=1", "dt=1/a.csv"]
    finally:
        store.close()
