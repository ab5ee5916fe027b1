"""The state store contract, run against both back ends: an SQLite file and a real
PostgreSQL (a private cluster, tests/fixtures/postgres.py). Then the engine on each:
many pairs at once on one store, the same pair twice at once, a run killed with SIGKILL
completed by the next, secrets kept out of everything."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from replicator.errors import LockedError, UsageError
from replicator.state import Scratch, open_store
from tests.fixtures.postgres import PostgresServer, postgres_server  # noqa: F401
from tests.replicator.conftest import cli_command, temp_names, tree, write

T0 = 1_700_000_000
NS = 10**9


@pytest.fixture(params=["sqlite", "postgresql"])
def state_spec(request, tmp_path: Path) -> str:
    """A fresh, empty state store of each kind, as a ``--state`` value."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "state.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    db = server.create_database(f"state_{uuid.uuid4().hex[:10]}")
    return f"postgresql://{server.user}:{server.password}@{server.host}:{server.port}/{db}"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# ---------------------------------------------------------------------------- the contract
def test_pairs_manifest_and_byte_order(state_spec: str) -> None:
    store = open_store(state_spec)
    try:
        assert store.find_pair("/a", "/b") is None
        pair = store.pair_id("/a", "/b")
        assert store.pair_id("/a", "/b") == pair and store.find_pair("/a", "/b") == pair
        other = store.pair_id("/a", "/c")
        assert other != pair
        paths = ["b", "B", "a/x", "a-x", "a.x", "é", "z"]
        store.commit(pair, record=[(p, "f", i, T0 * NS + i, None) for i, p in enumerate(paths)])
        store.commit(other, record=[("only-other", "f", 1, 1, None)])
        rows = list(store.manifest_rows(pair))
        # path order is byte order on both back ends (the diff merges in that order)
        assert [r[0] for r in rows] == sorted(paths, key=lambda p: p.encode())
        # the streamed scan the re-sync merges with its ordered listing: the same rows, in
        # the order Python sorts the listing's paths
        with store.manifest_scan(pair) as scanned, store.guard():
            assert [tuple(r) for r in scanned] == [tuple(r) for r in rows]
        assert [r[0] for r in rows] == sorted(paths)
        assert store.has_records(pair) and store.has_records(other)
        # upsert replaces, forget removes, other pairs untouched
        store.commit(pair, record=[("b", "f", 99, 5, "crc32c:00000001")], forget=["z"])
        got = {r[0]: r[1:5] for r in store.manifest_rows(pair)}
        assert got["b"] == ("f", 99, 5, "crc32c:00000001") and "z" not in got
        assert [r[0] for r in store.manifest_rows(other)] == ["only-other"]
    finally:
        store.close()


def test_resync_against_the_store_settles_the_unchanged_and_copies_the_rest(
        state_spec: str, tmp_path: Path) -> None:
    """The re-sync's one-pass merge of the ordered listing with the store's manifest, on
    each back end: unchanged files are skipped with no row written, a changed and a new
    file are copied, a file too new for --min-age is held, and a path gone from the
    source keeps its record (no --delete)."""
    from replicator import api
    from replicator.options import CopyOptions

    src, dst = tmp_path / "src", tmp_path / "dst"
    names = ["a/x", "a-x", "a.x", "b/c/d", "b.d/e", "é/f", "y"]
    for i, rel in enumerate(names):
        write(src / rel, f"v1 {rel}", mtime=T0 + i)
    opts = CopyOptions(state_path=state_spec)
    assert api.copy(str(src), str(dst), opts).files_copied == len(names)
    store = open_store(state_spec)
    try:
        pair = store.find_pair(str(src.resolve()), str(dst.resolve()))
        before = {r[0]: r for r in store.manifest_rows(pair)}
    finally:
        store.close()
    noop = api.copy(str(src), str(dst), opts)
    assert (noop.files_copied, noop.files_skipped, noop.ok) == (0, len(names), True)
    write(src / "a.x", "v2, longer", mtime=T0 + 99)  # changed
    write(src / "b.d/new", "new", mtime=T0 + 98)  # new
    write(src / "z/inside", "in a new directory", mtime=T0 + 97)  # new, under a new one
    (src / "a-x").unlink()  # gone: its record stays (no --delete)
    write(src / "fresh", "too new")  # held by --min-age
    rep = api.copy(str(src), str(dst), CopyOptions(state_path=state_spec, min_age_s=3600))
    assert rep.ok, rep.failures
    assert (rep.files_copied, rep.files_updated, rep.files_held_back) == (3, 1, 1)
    assert rep.files_skipped == 6  # a/x, b/c/d, b.d/e, é/f, y, and the held one
    assert (dst / "a.x").read_text() == "v2, longer" and (dst / "z/inside").is_file()
    assert (dst / "a-x").is_file() and not (dst / "fresh").exists()
    store = open_store(state_spec)
    try:
        after = {r[0]: r for r in store.manifest_rows(pair)}
    finally:
        store.close()
    for rel in ["a/x", "b/c/d", "b.d/e", "é/f", "y", "a-x"]:
        assert after[rel] == before[rel], rel  # unchanged rows are not rewritten
    assert after["a.x"][2] == len("v2, longer") and after["z"][1] == "d" and "fresh" not in after
    assert after["z/inside"][1] == "f" and after["b.d/new"][1] == "f"


def test_manifest_split_counts_one_pair_and_finds_its_first_middle_and_last(state_spec: str) -> None:
    """Where the re-sync's two listers cut the tree: the pair's row count, first, middle
    (the row at count // 2 in path order) and last path, never another pair's."""
    store = open_store(state_spec)
    try:
        pair, other, empty = (store.pair_id("/a", d) for d in ("/b", "/c", "/d"))
        paths = [f"d{i % 3}/f{i:03d}" for i in range(101)]
        store.commit(pair, record=[(p, "f", 1, T0 * NS, None) for p in paths])
        store.commit(other, record=[("0-before", "f", 1, 1, None), ("zz-after", "f", 1, 1, None)])
        ordered = sorted(paths)
        assert store.manifest_split(pair) == (101, ordered[0], ordered[50], ordered[-1])
        assert store.manifest_split(other) == (2, "0-before", "zz-after", "zz-after")
        assert store.manifest_split(empty) is None
    finally:
        store.close()


def test_journal_and_atomic_commit(state_spec: str) -> None:
    store = open_store(state_spec)
    try:
        pair = store.pair_id("/s", "/d")
        store.journal_staging(pair, "run1", [("a", "/d/.rtmp-a"), ("b", None)])
        store.journal_staged(pair, [("a", 3, 7, "crc32c:0000000a")])
        assert store.journal_entries(pair) == [("a", "run1", "staged", "/d/.rtmp-a", 3, 7, "crc32c:0000000a"),
                                               ("b", "run1", "staging", None, None, None, None)]
        # re-staging a path resets what an earlier run left
        store.journal_staging(pair, "run2", [("a", "/d/.rtmp-a2")])
        assert store.journal_entries(pair)[0] == ("a", "run2", "staging", "/d/.rtmp-a2", None, None, None)
        # a failure inside a transaction leaves nothing of it behind
        with pytest.raises(RuntimeError), store.transaction():
            store.record(pair, [("a", "f", 3, 7, None)])
            store.journal_clear(pair, ["a", "b"])
            raise RuntimeError("boom")
        assert not store.has_records(pair) and len(store.journal_entries(pair)) == 2
        store.commit(pair, record=[("a", "f", 3, 7, None)], clear=["a", "b"])
        assert store.journal_entries(pair) == [] and store.has_records(pair)
    finally:
        store.close()


def test_a_batch_is_one_journal_row_listing_its_staged_names(state_spec: str) -> None:
    store = open_store(state_spec)
    try:
        pair = store.pair_id("/s", "/d")
        names = [f"/d/x/.rtmp-run1-f{i}" for i in range(256)] + ["/d/é/.rtmp-run1-g"]
        store.journal_batch(pair, "run1", "//batch/run1/0", names)
        [(key, run_id, state, tmp, size, mtime_ns, checksum)] = store.journal_entries(pair)
        assert (key, run_id, state, size, mtime_ns, checksum) == (
            "//batch/run1/0", "run1", "batch-staging", None, None, None)
        assert json.loads(tmp) == names
        # the batch's files are recorded and its row cleared in one transaction
        store.commit(pair, record=[("x/f0", "f", 3, 7, "crc32c:0000000a")], clear=["//batch/run1/0"])
        assert store.journal_entries(pair) == [] and [r[0] for r in store.manifest_rows(pair)] == ["x/f0"]
    finally:
        store.close()


def test_sensor_values_read_many_scopes_as_of_a_tick(state_spec: str) -> None:
    """The change sensor's bulk read: rows of one lineage as of tick ``seq`` (a later tick's
    row reads as its ``prev`` and is listed in ``later``), other lineages and forgotten rows
    left out, and keys or values holding the aggregate's separator still read exactly."""
    store = open_store(state_spec)
    try:
        odd = "dt=a\x1eb c"  # the separator and a space in a partition name
        store.sensor_write_many([
            ("s/a", "p1", "L", 1, "fp1 10 0", None),
            ("s/a", "p2", "L", 3, "fp2new 20 0", "fp2 20 0"),  # written by tick 3, cursor at 2
            ("s/a", "p3", "L", 3, "fp3 30 0", None),  # new at tick 3: absent as of tick 2
            ("s/a", "gone", "L", 2, None, "fpg 1 0"),  # forgotten at tick 2
            ("s/a", "other", "M", 1, "fpx 1 0", None),  # another lineage
            ("s/b", odd, "L", 2, "fpo 5 1", None),
            ("s/c", "q", "L", 1, "fpq 7 0", None),
        ])
        values, later = store.sensor_values(["s/a", "s/b", "s/none"], "L", 2)
        assert values == {"s/a": {"p1": "fp1 10 0", "p2": "fp2 20 0"}, "s/b": {odd: "fpo 5 1"},
                          "s/none": {}}
        assert later == {"s/a": {"p2": "fp2 20 0", "p3": None}, "s/b": {}, "s/none": {}}
        values, later = store.sensor_values(["s/a"], "L", 3)
        assert values["s/a"] == {"p1": "fp1 10 0", "p2": "fp2new 20 0", "p3": "fp3 30 0"}
        assert later["s/a"] == {}
        # keys arrive in code-point order whatever the write order (the sensor's compare takes
        # a fast path when they line up with its sorted listing)
        store.sensor_write_many([("s/o", k, "L", 1, "fp 1 0", None) for k in ("b", "é", "B", "a", "a/b")])
        assert list(store.sensor_values(["s/o"], "L", 1)[0]["s/o"]) == ["B", "a", "a/b", "b", "é"]
    finally:
        store.close()


def test_sensor_values_of_reads_only_the_keys_asked_as_of_a_tick(state_spec: str) -> None:
    """The snapshot-diff path's read: the rows of a few keys (the partitions a diff names),
    with the same as-of-``seq`` rules as :meth:`sensor_values`."""
    store = open_store(state_spec)
    try:
        odd = "dt=a\x1eb c"
        store.sensor_write_many([
            ("s/a", "p1", "L", 1, "fp1 10 0", None),
            ("s/a", "p2", "L", 3, "fp2new 20 0", "fp2 20 0"),
            ("s/a", "p3", "L", 3, "fp3 30 0", None),
            ("s/a", "other", "M", 1, "fpx 1 0", None),
            ("s/a", odd, "L", 1, "fpo 5 1", None),
            ("s/b", "p1", "L", 1, "elsewhere 1 0", None),
        ])
        values, later = store.sensor_values_of("s/a", ["p2", "p3", "other", odd, "nope"], "L", 2)
        assert values == {"p2": "fp2 20 0", odd: "fpo 5 1"}
        assert later == {"p2": "fp2 20 0", "p3": None}
        values, later = store.sensor_values_of("s/a", [f"k{i}" for i in range(1200)] + ["p1"], "L", 3)
        assert values == {"p1": "fp1 10 0"} and later == {}  # more keys than one query takes
    finally:
        store.close()


def test_sensor_setdefault_keeps_the_first_value_for_every_connection(state_spec: str) -> None:
    """The snapshot sensor's owner id: made once per store, the same for each process."""
    one, two = open_store(state_spec), open_store(state_spec)
    try:
        assert one.sensor_setdefault("s/owner", "id", "first") == "first"
        assert two.sensor_setdefault("s/owner", "id", "second") == "first"
        assert one.sensor_setdefault("s/other", "id", "x") == "x"
    finally:
        one.close()
        two.close()


def test_pair_lock_is_exclusive_across_connections_and_released_on_close(state_spec: str) -> None:
    a, b = open_store(state_spec), open_store(state_spec)
    try:
        a.lock_pair("/s", "/d")
        assert a.lock_held("/s", "/d") and b.lock_held("/s", "/d")
        with pytest.raises(LockedError):
            b.lock_pair("/s", "/d")
        b.lock_pair("/s", "/other")  # another pair is free
        assert not b.lock_held("/s", "/d2")
    finally:
        a.close()
    # PostgreSQL ends the closed session (and its locks) a moment after the client hangs up
    wait_for(lambda: not b.lock_held("/s", "/d"), "the closed store's lock to go", timeout=30)
    b.lock_pair("/s", "/d")
    b.close()


def test_waiting_pair_lock_gets_the_lock_once_the_holder_lets_go(state_spec: str) -> None:
    a, b = open_store(state_spec), open_store(state_spec)
    naps: list[float] = []
    try:
        a.lock_pair("/s", "/d")

        def sleep(s: float) -> None:  # the holder finishes while the waiter waits
            naps.append(s)
            if len(naps) == 3:
                a.close()
        b.lock_pair_waiting("/s", "/d", 600, sleep=sleep)
        assert len(naps) >= 3 and naps[:3] == [0.2, 0.4, 0.8]  # backoff, no busy loop
        assert b.lock_held("/s", "/d")
        c = open_store(state_spec)
        with pytest.raises(LockedError, match=r"waited 0\.5 s"):
            c.lock_pair_waiting("/s", "/d", 0.5)  # a bounded wait ends with the refusal
        c.close()
    finally:
        a.close()
        b.close()


def test_runs_and_a_dead_run_reads_as_interrupted(state_spec: str) -> None:
    store = open_store(state_spec)
    try:
        store.lock_pair("/s", "/d")
        pair = store.pair_id("/s", "/d")
        store.start_run(pair, "r1", 1.0)
        store.finish_run("r1", "ok", {"files_copied": 2})
        store.start_run(pair, "r2", 2.0)
        runs = store.last_runs(pair)
        assert [(r["run_id"], r["status"]) for r in runs] == [("r2", "running"), ("r1", "ok")]
        assert runs[1]["report"] == {"files_copied": 2}
    finally:
        store.close()  # r2 never finished: its process is gone
    again = open_store(state_spec)
    try:
        assert again.last_runs(pair)[0]["status"] == "interrupted"
        again.lock_pair("/s", "/d")
        again.start_run(pair, "r3", 3.0)  # the next run of the pair records it as such
        assert [r["status"] for r in again.last_runs(pair)] == ["running", "interrupted", "ok"]
    finally:
        again.close()


def test_snapshot_into_scratch_and_read_only(state_spec: str) -> None:
    store = open_store(state_spec)
    pair = store.pair_id("/s", "/d")
    store.commit(pair, record=[(f"p{i:05d}", "f", i, i, None) for i in range(25_000)])
    store.close()
    ro = open_store(state_spec, read_only=True)
    try:
        with Scratch() as scratch:
            ro.snapshot_manifest(pair, scratch)
            assert scratch.db.execute("SELECT COUNT(*), MAX(size) FROM manifest").fetchone() == (25_000, 24_999)
        with pytest.raises(UsageError):
            ro.commit(pair, record=[("x", "f", 1, 1, None)])
        assert ro.find_pair("/s", "/d") == pair
    finally:
        ro.close()


def test_read_only_open_of_a_store_never_written_creates_nothing(state_spec: str, tmp_path: Path) -> None:
    store = open_store(state_spec, read_only=True)
    try:
        assert store.find_pair("/s", "/d") is None
    finally:
        store.close()
    assert not (tmp_path / "state").exists()
    if state_spec.startswith("postgresql"):
        rw = open_store(state_spec)
        # the read-only open did not create the tables: this one does, and finds them empty
        assert rw.find_pair("/s", "/d") is None
        rw.close()


@pytest.mark.parametrize("bad", ["s3://bucket/state.db", "mysql://u@h/db", "gs://b/x", "http://h/x"])
def test_unknown_scheme_is_a_usage_error_never_a_path(bad: str, tmp_path: Path, run_cli) -> None:
    write(tmp_path / "src" / "a", "a", T0)
    r = run_cli("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--state", bad, "--json")
    assert r.returncode == 2 and "unknown scheme" in r.stderr
    assert r.report["exit_code"] == 2 and "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["src"]  # nothing created, under no name


# ---------------------------------------------------------------------------- the engine on each store
def _engine_env(tmp_path: Path) -> dict[str, str]:
    from tests.replicator.conftest import REPO

    return dict(os.environ, REPLICATOR_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))


def _spawn(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(cli_command(*args), env=_engine_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))


def test_many_pairs_at_once_on_one_store_all_succeed(state_spec: str, tmp_path: Path) -> None:
    pairs = []
    for i in range(4):
        src = tmp_path / f"src{i}"
        for j in range(600):
            write(src / f"d{j % 7}" / f"f{j}.csv", f"{i}-{j}", T0)
        pairs.append((src, tmp_path / f"dst{i}"))
    procs = [_spawn(tmp_path, "copy", str(s), str(d), "--state", state_spec, "--workers", "2", "-q")
             for s, d in pairs]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert rc == 0, err
    for s, d in pairs:
        assert tree(d) == tree(s)
    store = open_store(state_spec)
    try:
        for s, d in pairs:
            pair = store.find_pair(str(s.resolve()), str(d.resolve()))
            assert pair is not None and len(list(store.manifest_rows(pair))) == 600 + 7
            assert [r["status"] for r in store.last_runs(pair)] == ["ok"]
    finally:
        store.close()


def _slow_source(src: Path, n: int = 40, size: int = 100_000) -> None:
    for j in range(n):
        write(src / f"f{j:03d}.bin", os.urandom(size), T0)


def test_same_pair_twice_at_once_one_refuses_cleanly(state_spec: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _slow_source(src)
    first = _spawn(tmp_path, "copy", str(src), str(dst), "--state", state_spec, "--bandwidth", "0.5",
                   "--workers", "2", "-q")
    try:
        def held() -> bool:
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            store = open_store(state_spec, read_only=True)
            try:
                return store.lock_held(str(src.resolve()), str(dst.resolve()))
            finally:
                store.close()

        wait_for(held, "the first run to hold the pair lock")
        # the same pair through a symlinked destination and source is the same pair
        (tmp_path / "dst-link").symlink_to(dst)
        second = _spawn(tmp_path, "copy", str(src), str(tmp_path / "dst-link"), "--state", state_spec, "--json")
        _out, err = second.communicate(timeout=120)
        assert second.returncode == 1, err
        assert "another replicator run" in err and "Traceback" not in err
        assert first.wait(timeout=600) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    assert tree(dst) == tree(src) and temp_names(dst) == []


def test_same_pair_twice_with_wait_lock_the_second_waits_and_succeeds(
        state_spec: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _slow_source(src, n=20)
    first = _spawn(tmp_path, "copy", str(src), str(dst), "--state", state_spec, "--bandwidth", "0.5",
                   "--workers", "2", "-q")
    try:
        def held() -> bool:
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            store = open_store(state_spec, read_only=True)
            try:
                return store.lock_held(str(src.resolve()), str(dst.resolve()))
            finally:
                store.close()

        wait_for(held, "the first run to hold the pair lock")
        second = _spawn(tmp_path, "copy", str(src), str(dst), "--state", state_spec,
                        "--wait-lock", "600", "--json")
        out, err = second.communicate(timeout=600)
        assert first.wait(timeout=600) == 0, first.stderr.read()
        assert second.returncode == 0, err
        # it ran after the first had published everything: nothing left to copy
        report = json.loads(out.strip().splitlines()[-1])
        assert report["files_copied"] == 0 and report["files_skipped"] == 20
    finally:
        if first.poll() is None:
            first.kill()
    assert tree(dst) == tree(src) and temp_names(dst) == []


def test_run_killed_mid_copy_is_completed_by_the_next(state_spec: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _slow_source(src)
    key = (str(src.resolve()), str(dst.resolve()))
    victim = _spawn(tmp_path, "copy", str(src), str(dst), "--state", state_spec, "--bandwidth", "1",
                    "--workers", "2", "-q")

    def some_published() -> bool:
        assert victim.poll() is None, victim.stderr.read() if victim.stderr else ""
        store = open_store(state_spec, read_only=True)  # afresh: the run creates the schema
        try:
            pair = store.find_pair(*key)
            return pair is not None and store.has_records(pair) and bool(store.journal_entries(pair))
        finally:
            store.close()

    try:
        wait_for(some_published, "the run to publish some files and journal more")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    store = open_store(state_spec)
    try:
        pair = store.find_pair(*key)
        assert pair is not None
        assert store.last_runs(pair)[0]["status"] == "interrupted"  # no lock behind it any more
        copied_before = len(list(store.manifest_rows(pair)))
    finally:
        store.close()
    assert 0 < copied_before < 40
    rerun = _spawn(tmp_path, "copy", str(src), str(dst), "--state", state_spec, "--json")
    _out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert tree(dst) == tree(src) and temp_names(dst) == []
    store = open_store(state_spec)
    try:
        assert store.journal_entries(pair) == []
        assert len(list(store.manifest_rows(pair))) == 40
        assert [r["status"] for r in store.last_runs(pair)] == ["ok", "interrupted"]
    finally:
        store.close()


def test_postgres_password_never_printed_or_stored(postgres_server: PostgresServer,  # noqa: F811
                                                   tmp_path: Path, run_cli) -> None:
    server = postgres_server
    db = server.create_database(f"state_{uuid.uuid4().hex[:10]}")
    url = f"postgresql://{server.user}:{server.password}@{server.host}:{server.port}/{db}"
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.csv", "a", T0)
    ok = run_cli("copy", str(src), str(dst), "--state", url, "--json", "-v")
    bad = run_cli("copy", str(src), str(dst), "--state", url.replace(server.password, "wrong-" + server.password),
                  "--json")
    plan = run_cli("plan", str(src), str(dst), "--state", url, "--json")
    assert ok.returncode == 0 and plan.returncode == 0
    assert bad.returncode == 1 and "password authentication failed" in bad.stderr
    for r in (ok, bad, plan):
        assert server.password not in r.stdout + r.stderr
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            for table in ("replicator_pairs", "replicator_files", "replicator_runs"):
                cur.execute(f"SELECT * FROM {table}")
                assert server.password not in repr(cur.fetchall())
    finally:
        conn.close()



def test_a_state_password_never_goes_into_dataproc_job_arguments() -> None:
    from replicator.executors.dataproc import replicator_cli_args
    from replicator.options import CopyOptions

    src, dst = "hdfs://nn:8020/a", "gs://bucket/a"
    with pytest.raises(UsageError, match="password"):
        replicator_cli_args(src, dst, CopyOptions(state_path="postgresql://rep:s3cret-pw@db:5432/p"))
    args = replicator_cli_args(src, dst, CopyOptions(state_path="postgresql://rep@db:5432/p"))
    assert args[args.index("--state") + 1] == "postgresql://rep@db:5432/p"


def test_sqlite_url_forms_name_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "s" / "state.db"
    for spec in (str(path), f"sqlite://{path}", f"file://{path}"):
        store = open_store(spec)
        try:
            assert store.identity == str(path.resolve()) and store.pair_id("/a", "/b") == 1
        finally:
            store.close()
    with pytest.raises(UsageError):
        open_store("sqlite://otherhost/state.db")


@pytest.mark.parametrize("files", [5, 3000])
def test_sample_files_draws_distinct_files_of_known_size_from_the_whole_pair(
        tmp_path: Path, files: int) -> None:
    """The replica check's sample (SQLite draws about one row in 64 first, then n of those;
    the plain query when that leaves too few): n distinct files of the pair, of known size,
    from every part of it; a pair smaller than n gives all its files."""
    store = open_store(str(tmp_path / "s.db"))
    try:
        pair, other = store.pair_id("/a", "/b"), store.pair_id("/a", "/c")
        paths = [f"d{i // 100:03}/f{i:05}" for i in range(files)]
        store.commit(pair, record=[(p, "f", i, T0 * NS, None) for i, p in enumerate(paths)]
                     + [("d000", "d", 0, T0 * NS, None), ("unknown-size", "f", -1, T0 * NS, None)])
        store.commit(other, record=[(f"o{i}", "f", 1, T0 * NS, None) for i in range(files)])
        want = {p: i for i, p in enumerate(paths)}
        seen: set[str] = set()
        for _ in range(60):
            got = store.sample_files(pair, 8)
            assert len(got) == min(8, files) == len({p for p, _ in got})
            assert all(want[p] == size for p, size in got)  # this pair's files, their sizes
            seen.update(p for p, _ in got)
        if files < 8:
            assert seen == set(paths)
        else:  # 480 draws of 3000: every third of the pair is drawn from
            thirds = {want[p] * 3 // files for p in seen}
            assert thirds == {0, 1, 2} and len(seen) > 300
    finally:
        store.close()


def test_a_brief_scan_and_the_details_of_what_it_leaves_make_the_full_rows(state_spec: str) -> None:
    """The re-sync reads the manifest brief (path, kind, size, mtime_ns) and the checksum and
    copied_at of only the rows its merge does not settle: merged that way, the scratch
    tables hold exactly what the merge over the full rows puts there."""
    from replicator.state.scratch import Scratch

    store = open_store(state_spec)
    try:
        pair, other = store.pair_id("/a", "/b"), store.pair_id("/a", "/c")
        paths = [f"d{i // 10}/f{i:03}" for i in range(60)] + ["é", "b.x"]
        store.commit(pair, record=[(p, "f", i, T0 * NS + i, f"crc32c:{i:08x}")
                                   for i, p in enumerate(paths)] + [("d0", "d", 0, T0 * NS, None)])
        store.commit(other, record=[("d0/f000", "f", 5, 5, "crc32c:ffffffff")])
        full = [tuple(r) for r in store.manifest_rows(pair)]
        with store.manifest_scan(pair, "d1", "d4", brief=True) as rows, store.guard():
            assert [tuple(r) for r in rows] == [r[:4] for r in full if "d1" <= r[0] < "d4"]
        store.DETAILS_CHUNK = 7  # several queries
        want = [p for p in paths if p.endswith(("3", "7"))]
        got = store.manifest_details(pair, [*want, "not/recorded"])
        assert got == {r[0]: r[4:] for r in full if r[0] in want}
        # the merge: a listing where some rows changed, one is new and one is gone
        listed = [(r[0], r[1], r[2] + (r[0].endswith("5")), r[3], None, None, None, 0)
                  for r in full if r[0] != "d2/f021"] + [("d9/new", "f", 1, 1, None, None, None, 0)]
        listed.sort()
        batches = [listed[i:i + 9] for i in range(0, len(listed), 9)]
        tables = []
        for brief in (False, True):
            with Scratch() as scratch, store.manifest_scan(pair, brief=brief) as rows, store.guard():
                kw = {"details": functools.partial(store.manifest_details, pair)} if brief else {}
                settled = scratch.load_settling(batches, rows, **kw)
                tables.append((settled, sorted(scratch.db.execute("SELECT * FROM manifest")),
                               sorted(scratch.db.execute("SELECT path FROM src"))))
        assert tables[0] == tables[1]
        assert len(tables[1][1]) == 7 and all(r[4] and r[5] for r in tables[1][1])  # 6 changed, 1 gone
    finally:
        store.close()
