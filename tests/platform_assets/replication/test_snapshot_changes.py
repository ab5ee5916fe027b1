"""The change sensor's snapshot-diff path (``change_detection: snapshot``) on a real HDFS
(MiniDFSCluster over WebHDFS): each tick looks at exactly the partitions the NameNode's
snapshot diff names, and finds what the listing path finds."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.config import load_spec
from platform_assets.datasets import resolve
from platform_assets.definitions import build_definitions
from platform_assets.replication import snapshot_changes
from platform_assets.replication.change_sensor import ChangeState, evaluate_changes
from platform_assets.replication.sensor_state import fingerprint_scope, open_sensor_store
from platform_assets.replication.snapshot_changes import SNAPSHOT_PREFIX, evaluate_tick
from replicator.filesystems.registry import resolve as resolve_fs

SPEC = """\
version: 1
platform:
  state_path: state/replicator.db
  notifier: {{kind: jsonl, outbox: outbox/notifications.jsonl}}
  change_sensor: {{max_partitions_per_tick: 1000, tick_budget_s: 25{sensor}}}
  retries: {{max_retries: 0, delay_s: 0}}
clusters:
  onprem: {{uri: "{source}"}}
  gcs: {{uri: gcs}}
datasets:
  events:
    source: {{cluster: onprem, path: events}}
    partitions: "{layout}"
    targets: [{{cluster: gcs, path: events}}]
    exclude: ["*.tmp"]
    change_detection: {detection}
{extra}"""


class Log:
    """A stand-in for ``context.log``: the lines a tick logged."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str, *args) -> None:
        self.lines.append(("info", msg % args if args else msg))

    def warning(self, msg: str, *args) -> None:
        self.lines.append(("warning", msg % args if args else msg))


class Source:
    """A dataset root on the real HDFS and a spec watching it."""

    def __init__(self, tmp_path: Path, cluster, *, snapshottable: bool = True,
                 layout: str = "dt=*", detection: str = "snapshot", extra: str = "",
                 uri: str | None = None, sensor: str = "") -> None:
        self.dir = cluster.fresh_dir("sensor")
        self.uri = cluster.webhdfs_uri(self.dir)
        self.fs, base = resolve_fs(self.uri)
        self.root = f"{base}/events"
        self.fs.makedirs(self.root)
        if snapshottable:
            cluster.allow_snapshot(self.root)
        self.tmp = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.spec_path = tmp_path / "replication.yaml"
        self.text = dict(source=uri or self.uri, layout=layout, detection=detection, extra=extra,
                         sensor=sensor)
        self.write_spec()

    def write_spec(self, **changes: str) -> None:
        self.text.update(changes)
        self.spec_path.write_text(SPEC.format(**self.text))
        self.rs = resolve(load_spec(self.spec_path))

    def put(self, rel: str, data: bytes = b"x", *, age_s: float = 600.0) -> None:
        path = f"{self.root}/{rel}"
        with self.fs.open_write(path) as w:
            w.write(data)
        self.fs.set_times(path, int((time.time() - age_s) * 1e9))

    def ours(self) -> list[str]:
        return sorted(n for n in self.fs.snapshot_names(self.root) if n.startswith(SNAPSHOT_PREFIX))


def requested(ev) -> list[str]:
    return sorted(r.partition_key for r in ev.run_requests)


@pytest.fixture
def looked_at(monkeypatch):
    """The partitions the snapshot path fingerprints, tick by tick; a listing of the whole
    root or a read of a whole dataset's state on the diff path fails the test."""
    seen: list[str] = []
    real = snapshot_changes.fingerprint_tree

    def spy(uri, flt, **kw):
        seen.append(kw["partition"])
        return real(uri, flt, **kw)

    monkeypatch.setattr(snapshot_changes, "fingerprint_tree", spy)
    return seen


def tick(src: Source, state: ChangeState, log: Log | None = None, **kw):
    return evaluate_tick(src.rs, state, log=log or Log(), **kw)


def no_full_reads(monkeypatch) -> None:
    """From here on, a full listing of the root or a read of every row of a dataset fails."""
    def refuse(*a, **k):
        raise AssertionError("the snapshot path listed the root or read the whole state")

    monkeypatch.setattr(snapshot_changes, "list_partition_dirs_with_mtimes", refuse)
    from platform_assets.datasets import DatasetView
    monkeypatch.setattr(DatasetView, "partitions_with_mtimes", refuse)
    real = snapshot_changes.TickRows.load

    def load(self, scope):
        if scope.startswith(fingerprint_scope("")):
            refuse()
        return real(self, scope)

    monkeypatch.setattr(snapshot_changes.TickRows, "load", load)


def test_each_kind_of_change_is_found_by_the_diff_alone(tmp_path, hdfs_cluster, looked_at,
                                                         monkeypatch):
    src = Source(tmp_path, hdfs_cluster)
    for i in range(6):
        src.put(f"dt={i}/part-0", b"%d" % i)
    src.fs.create_snapshot(src.root, "users-own")  # a user's snapshot: never touched
    src.fs.create_snapshot(src.root, "replicator-abc-run1")  # copy --snapshot-diff's kind

    first = tick(src, ChangeState())  # no base: the full pass over the new snapshot, once
    assert requested(first) == [f"dt={i}" for i in range(6)]
    assert sorted(first.new_partitions["events"]) == [f"dt={i}" for i in range(6)]
    assert set(first.state.snapshots["events"]) == {"base"}
    looked_at.clear()

    no_full_reads(monkeypatch)
    steady = tick(src, first.state)
    assert steady.run_requests == [] and looked_at == []

    # a new partition; a file added to one; one rewritten in place with the same size; a file
    # deleted; a partition renamed; an excluded file (named, fingerprinted, not a change)
    src.put("dt=9/part-0", b"new")
    src.put("dt=1/part-1", b"added")
    src.put("dt=2/part-0", b"Z")  # overwrite, same size
    src.fs.delete_file(f"{src.root}/dt=3/part-0")
    src.fs.rename(f"{src.root}/dt=4", f"{src.root}/dt=44")
    src.put("dt=5/scratch.tmp", b"excluded")
    changed = tick(src, steady.state)
    assert requested(changed) == ["dt=1", "dt=2", "dt=44", "dt=9"]  # dt=3 is now empty
    assert sorted(changed.new_partitions["events"]) == ["dt=44", "dt=9"]
    # every partition the diff names, no other (dt=4 is not in the snapshot: no fingerprint)
    assert sorted(looked_at) == ["dt=1", "dt=2", "dt=3", "dt=44", "dt=5", "dt=9"]
    store = open_sensor_store(src.rs.spec)
    try:
        rows = {k for k, _, _, v, _ in store.sensor_rows(fingerprint_scope("events")) if v}
    finally:
        store.close()
    assert "dt=4" not in rows and {"dt=44", "dt=9"} <= rows  # the renamed-away one is forgotten

    # two changes while ticks were missed: one tick finds both
    looked_at.clear()
    src.put("dt=0/part-0", b"again")
    src.put("dt=5/part-1", b"more")
    later = tick(src, changed.state)
    assert requested(later) == ["dt=0", "dt=5"] and sorted(looked_at) == ["dt=0", "dt=5"]

    # the sensor keeps its base and the snapshot just taken; others' snapshots are untouched
    names = src.fs.snapshot_names(src.root)
    assert {"users-own", "replicator-abc-run1"} <= set(names)
    assert src.ours() == sorted([changed.state.snapshots["events"]["base"],
                                 later.state.snapshots["events"]["base"]])


def test_a_held_back_file_is_looked_at_again_until_it_counts(tmp_path, hdfs_cluster, looked_at):
    # young: written now with min_age_s 3600, so still young however slow the machine
    src = Source(tmp_path, hdfs_cluster, extra="    min_age_s: 3600\n")
    src.put("dt=1/old", b"o", age_s=7200)
    first = tick(src, ChangeState())
    src.put("dt=1/young", b"y", age_s=0)
    src.put("dt=2/young", b"y", age_s=0)  # only a young file: nothing to copy yet
    second = tick(src, first.state)
    assert requested(second) == []  # dt=1's copyable files did not change
    looked_at.clear()
    third = tick(src, second.state)  # no diff entry: both are looked at again all the same
    assert requested(third) == [] and sorted(looked_at) == ["dt=1", "dt=2"]
    aged = tick(src, third.state, wall_clock=lambda: time.time() + 4000)
    assert requested(aged) == ["dt=1", "dt=2"]
    looked_at.clear()
    assert tick(src, aged.state, wall_clock=lambda: time.time() + 4100).run_requests == []
    assert looked_at == []  # no longer held: no longer looked at


def test_a_tick_that_dies_after_its_snapshot_loses_nothing(tmp_path, hdfs_cluster, monkeypatch):
    src = Source(tmp_path, hdfs_cluster)
    src.put("dt=1/a")
    src.put("dt=2/a")
    base = tick(src, ChangeState()).state
    base = tick(src, base).state
    src.put("dt=2/b", b"new")

    real = snapshot_changes.fingerprint_tree

    def boom(*a, **k):
        raise OSError("the sensor process is killed here")

    monkeypatch.setattr(snapshot_changes, "fingerprint_tree", boom)
    with pytest.raises(OSError):
        tick(src, base)  # took its snapshot, recorded nothing
    assert len(src.ours()) == 3  # the base, the one before it (kept until now), the dead one's
    monkeypatch.setattr(snapshot_changes, "fingerprint_tree", real)

    lost = tick(src, base)  # evaluated, but its cursor never lands
    assert requested(lost) == ["dt=2"]
    again = tick(src, base)  # the daemon evaluates the same cursor again
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in lost.run_requests]
    assert src.ours() == sorted([base.snapshots["events"]["base"],
                                 again.state.snapshots["events"]["base"]])  # leftovers gone
    assert tick(src, again.state).run_requests == []


def test_a_root_that_cannot_be_snapshotted_falls_back_to_the_listing(tmp_path, hdfs_cluster):
    src = Source(tmp_path, hdfs_cluster, snapshottable=False)
    src.put("dt=1/a")
    log = Log()
    first = tick(src, ChangeState(), log)
    assert requested(first) == ["dt=1"]
    warning = [m for lvl, m in log.lines if lvl == "warning"]
    assert len(warning) == 1 and "events" in warning[0] and "lists the dataset" in warning[0]
    assert "snapshot" in warning[0] and first.state.snapshots == {}
    src.put("dt=2/a")
    assert requested(tick(src, first.state, Log())) == ["dt=2"]


def test_hdfs_rpc_without_the_web_address_falls_back_naming_it(tmp_path, hdfs_cluster):
    plain = Source(tmp_path, hdfs_cluster)
    plain.put("dt=1/a")
    src = Source(tmp_path / "rpc", hdfs_cluster, uri=hdfs_cluster.uri(plain.dir))
    log = Log()
    ev = tick(src, ChangeState(), log)
    assert requested(ev) == ["dt=1"]
    assert any("http_address" in m for lvl, m in log.lines if lvl == "warning")


def test_a_new_or_deleted_directory_above_partition_depth(tmp_path, hdfs_cluster, looked_at,
                                                          monkeypatch):
    src = Source(tmp_path, hdfs_cluster, layout="dt=*/hour=*")
    src.put("dt=1/hour=00/a")
    src.put("dt=1/hour=01/a")
    src.put("dt=2/hour=00/a")
    state = tick(src, ChangeState()).state
    no_full_reads(monkeypatch)
    src.fs.makedirs(f"{src.root}/dt=3/hour=05")
    src.put("dt=3/hour=05/a")
    src.put("dt=3/hour=06/a")
    for rel in ("dt=1/hour=00/a", "dt=1/hour=01/a"):
        src.fs.delete_file(f"{src.root}/{rel}")
    src.fs.delete_dir(f"{src.root}/dt=1/hour=00")
    src.fs.delete_dir(f"{src.root}/dt=1/hour=01")
    src.fs.delete_dir(f"{src.root}/dt=1")
    looked_at.clear()
    ev = tick(src, state)
    assert requested(ev) == ["dt=3/hour=05", "dt=3/hour=06"]
    assert sorted(looked_at) == ["dt=3/hour=05", "dt=3/hour=06"]
    store = open_sensor_store(src.rs.spec)
    try:
        rows = {k for k, _, _, v, _ in store.sensor_rows(fingerprint_scope("events")) if v}
    finally:
        store.close()
    assert rows == {"dt=2/hour=00", "dt=3/hour=05", "dt=3/hour=06"}


def test_switching_between_listing_and_snapshots_loses_and_repeats_nothing(tmp_path, hdfs_cluster):
    src = Source(tmp_path, hdfs_cluster, detection="listing")
    for i in range(3):
        src.put(f"dt={i}/a")
    listed = evaluate_changes(src.rs, ChangeState())
    assert requested(listed) == ["dt=0", "dt=1", "dt=2"]
    src.write_spec(detection="snapshot")
    boot = tick(src, listed.state)  # the full pass finds the same fingerprints: no run
    assert boot.run_requests == [] and boot.state.snapshots["events"].keys() == {"base"}
    src.put("dt=1/b")
    found = tick(src, boot.state)
    assert requested(found) == ["dt=1"]
    assert found.run_requests[0].run_key.startswith(f"events|dt=1|{found.run_requests[0].tags['replication/fingerprint']}|")
    src.write_spec(detection="listing")
    src.put("dt=2/b")
    back = tick(src, found.state)  # the listing path takes over from the same rows
    assert requested(back) == ["dt=2"] and back.state.snapshots == {}
    assert src.ours() == []  # the sensor's snapshots of a dataset it no longer diffs


def test_the_bootstrap_spreads_over_ticks_and_reads_one_image(tmp_path, hdfs_cluster):
    src = Source(tmp_path, hdfs_cluster, sensor=", max_runs_per_tick: 2")
    for i in range(5):
        src.put(f"dt={i}/a")
    first = tick(src, ChangeState())
    assert requested(first) == ["dt=0", "dt=1"]  # the run cap: the rest next tick
    pending = first.state.snapshots["events"]
    assert pending.get("after") == "dt=1" and "pending" in pending
    src.put("dt=0/b")  # after the image: found by the first diff once the pass is done
    second = tick(src, first.state)
    assert requested(second) == ["dt=2", "dt=3"]
    third = tick(src, second.state)
    assert requested(third) == ["dt=4"] and third.state.snapshots["events"] == {"base": pending["pending"]}
    fourth = tick(src, third.state)
    assert requested(fourth) == ["dt=0"]
    # on the diff path too, what the run cap leaves is requested by the next tick
    for i in (1, 2, 3):
        src.put(f"dt={i}/c")
    capped = tick(src, fourth.state)
    assert requested(capped) == ["dt=1", "dt=2"] and capped.capped
    assert requested(tick(src, capped.state)) == ["dt=3"]


def test_the_sensor_requests_runs_from_the_diff(tmp_path, hdfs_cluster, instance):
    src = Source(tmp_path, hdfs_cluster)
    src.put("dt=1/a")
    defs = build_definitions(src.spec_path)
    sensor = defs.get_sensor_def("replication_change_sensor")
    seed = sensor(dg.build_sensor_context(instance=instance, cursor=None, definitions=defs))
    assert seed.run_requests == []  # an empty cursor: this tick seeds from the instance
    first = sensor(dg.build_sensor_context(instance=instance, cursor=seed.cursor, definitions=defs))
    assert [r.partition_key for r in first.run_requests] == ["dt=1"]
    assert [k for r in first.dynamic_partitions_requests for k in r.partition_keys] == ["dt=1"]
    src.put("dt=2/a")
    second = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
    assert [r.partition_key for r in second.run_requests] == ["dt=2"]
    assert ChangeState.decode(second.cursor).snapshots["events"]["base"].startswith(SNAPSHOT_PREFIX)

    # the replicas hold both partitions; the sensor is reset (its cursor lost): seeded from the
    # materializations, the snapshot path's full pass copies nothing again
    replica = src.rs["events"].replica_keys[0]
    for r in first.run_requests + second.run_requests:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=replica, partition=r.partition_key,
            metadata={"source_fingerprint": r.tags["replication/fingerprint"]}))
    cursor = None
    for _ in range(3):
        result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
        assert result.run_requests == []
        cursor = result.cursor
    assert "base" in ChangeState.decode(cursor).snapshots["events"]


def test_two_deployments_watching_one_root_keep_their_own_snapshots(tmp_path, hdfs_cluster):
    """Two code locations (each its own spec and state store) with a dataset of one name over
    one HDFS root: the snapshot names were ``replication-sensor-<hash of the name>-...`` for
    both, so each tick's clean-up deleted the other sensor's base, and the other's next tick
    found its base gone and listed the whole dataset. Now each sensor's names carry its state
    store's own id and it deletes only those."""
    a = Source(tmp_path / "a", hdfs_cluster)
    a.put("dt=1/a")
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    (b_dir / "replication.yaml").write_text(a.spec_path.read_text())
    b_rs = resolve(load_spec(b_dir / "replication.yaml"))

    state_a = tick(a, ChangeState()).state
    state_a = tick(a, state_a).state
    state_b = evaluate_tick(b_rs, ChangeState(), log=Log()).state
    state_b = evaluate_tick(b_rs, state_b, log=Log()).state
    base_b = state_b.snapshots["events"]["base"]
    assert base_b != state_a.snapshots["events"]["base"]
    for _ in range(2):
        state_a = tick(a, state_a).state  # a's clean-up
    assert base_b in a.ours()
    a.put("dt=2/a")
    log = Log()
    ev = evaluate_tick(b_rs, state_b, log=log)
    assert not [m for level, m in log.lines if "is gone" in m], log.lines
    assert requested(ev) == ["dt=2"]
    # each keeps its base (and its last one until the next tick lands); none of a's is b's
    names_b = {ev.state.snapshots["events"]["base"], base_b}
    assert names_b <= set(a.ours()) and state_a.snapshots["events"]["base"] in a.ours()
