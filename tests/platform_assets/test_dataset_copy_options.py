"""Per-dataset copy options in the replication spec (regex filters, max_age, transforms)
reach the engine: validated at load with file and key named, applied by a replica copy."""

from __future__ import annotations

import gzip

import dagster as dg
import pytest

from platform_assets.config import SpecError
from platform_assets.definitions import build_definitions
from platform_assets.replication.names import partitions_def_name
from resources.replicator import ReplicatorResource
from tests.fixtures.platform import SPEC_TEMPLATE, make_platform

KEY = dg.AssetKey(["gcs", "events"])
EVENTS = '    exclude: ["*.tmp"]\n'
OPTIONS = (EVENTS + '    transforms: [gunzip]\n    exclude_regex: ["^skip_"]\n'
           '    include_regex: ["\\\\.csv(\\\\.gz)?$"]\n    max_age: 30d\n')


def test_spec_options_apply_to_the_replica_copy(tmp_path, instance) -> None:
    text = SPEC_TEMPLATE.format(page=20000)
    assert EVENTS in text
    platform = make_platform(tmp_path / "platform", spec_text=text.replace(EVENTS, OPTIONS, 1))
    ds = platform.spec.datasets["events"]
    assert ds.transforms == ("gunzip",) and ds.max_age == 30 * 86400
    part = "dt=2026-11-19"
    platform.write("events", part, "a.csv.gz", gzip.compress(b"a,b\n1,2\n"))
    platform.write("events", part, "skip_b.csv", "b")
    platform.write("events", part, "c.json", "{}")
    platform.write("events", part, "old.csv", "old", age_s=40 * 86400)
    instance.add_dynamic_partitions(partitions_def_name("events"), [part])
    defs = build_definitions(platform.spec_path)
    resources = {"replicator": ReplicatorResource(state_path=str(tmp_path / "state.db"))}
    replica = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and KEY in a.keys]
    result = dg.materialize(replica, instance=instance, resources=resources, partition_key=part,
                            selection=[KEY])
    assert result.success
    out = platform.root / "gcs" / "events" / part
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("_")) == ["a.csv"]
    assert (out / "a.csv").read_bytes() == b"a,b\n1,2\n"
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values()), checks


@pytest.mark.parametrize(("line", "expected"), [
    ("    transforms: [zip]\n", "datasets.events.transforms: unknown 'zip'"),
    ("    transforms: [untar, gunzip]\n", "datasets.events.transforms: untar must be the last step"),
    ("    max_age: nan\n", "datasets.events.max_age: expected seconds or a duration"),
    ("    max_age: 0\n", "datasets.events.max_age: expected a duration > 0"),
    ("    include_regex: ['(']\n", "datasets.events.include_regex: not a valid regular expression"),
])
def test_bad_spec_options_name_file_and_key(tmp_path, line, expected) -> None:
    text = SPEC_TEMPLATE.format(page=20000).replace(EVENTS, EVENTS + line, 1)
    platform = make_platform(tmp_path / "p", spec_text=text)
    with pytest.raises(SpecError) as err:
        platform.spec  # noqa: B018 - loading is the test
    assert str(platform.spec_path) in str(err.value) and expected in str(err.value), str(err.value)
