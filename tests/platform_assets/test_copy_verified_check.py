"""The replica's ``copy_verified`` check follows ``RunReport.verified``: it passes when every
copied file was checked by CRC32C and fails when the copies were checked by size only."""

from __future__ import annotations

import dagster as dg
import pytest

from platform_assets.definitions import build_definitions
from platform_assets.replication.names import partitions_def_name
from resources.replicator import ReplicatorResource
from tests.fixtures.platform import make_platform

KEY = dg.AssetKey(["gcs", "events"])  # incremental: decided by size+mtime


@pytest.mark.parametrize("verify_checksum", [True, False])
def test_copy_verified_check_passes_only_for_checksum_verified_copies(
        tmp_path, instance, verify_checksum: bool) -> None:
    platform = make_platform(tmp_path / "platform")
    platform.write("events", "dt=2026-11-19", "a.csv", "a" * 1000)
    instance.add_dynamic_partitions(partitions_def_name("events"), ["dt=2026-11-19"])
    defs = build_definitions(platform.spec_path)
    resources = {"replicator": ReplicatorResource(
        state_path=str(tmp_path / "state.db"), verify_checksum=verify_checksum)}
    replica = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and KEY in a.keys]
    result = dg.materialize(replica, instance=instance, resources=resources,
                            partition_key="dt=2026-11-19", selection=[KEY], raise_on_error=False)
    # copy_verified is blocking: an unverified copy fails the run (the next hop does not copy it)
    assert result.success is verify_checksum
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["copy_verified"].passed is verify_checksum
