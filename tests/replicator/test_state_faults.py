"""The state store under faults (issue 12, behaviours 14, 16, 21): a full disk and a
damaged file under the SQLite store give a clean error and report, never a traceback,
and no run left "running"; the pair lock is keyed by the resolved state, so a symlink to
the same file does not give a second lock; ``plan`` works on a store it cannot write."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.state import open_store
from tests.fixtures.postgres import PostgresServer, postgres_server  # noqa: F401
from tests.replicator.conftest import cli_command, write
from tests.replicator.test_state import T0, _engine_env, _slow_source, wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs / a read-only bind (root)")


@contextlib.contextmanager
def mounted(target: Path, *args: str) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def _pair(store, src: Path, dst: Path) -> int:
    pair = store.find_pair(str(src.resolve()), str(dst.resolve()))
    assert pair is not None
    return pair


@needs_root
def test_full_disk_under_the_state_gives_a_clean_error_and_no_run_left_running(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3000):  # a manifest of ~3,000 long names does not fit in 256 KiB
        write(src / f"d{i % 10}" / (f"{i:05d}-" + "n" * 120 + ".csv"), b"x", T0)
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=256k", "tmpfs") as small:
        state = small / "state.db"
        r = run_cli("copy", str(src), str(dst), "--state", str(state), "--json")
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr and "sqlite3." not in r.stderr
        report = r.report
        assert report["ok"] is False and "full" in report["error"]
        store = open_store(str(state), read_only=True)
        try:
            runs = store.last_runs(_pair(store, src, dst))
        finally:
            store.close()
        assert runs and runs[0]["status"] != "running"
        # with room again, the next run finishes the copy
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        again = run_cli("copy", str(src), str(dst), "--state", str(state), "--json")
        assert again.returncode == 0, again.stderr
        assert again.report["files_copied"] + again.report["files_skipped"] + again.report["files_recovered"] >= 3000


def test_damaged_state_file_gives_a_clean_error_exit_2(tmp_path: Path, run_cli) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state.db"
    for i in range(400):
        write(src / f"f{i:04d}-{'x' * 60}.csv", str(i), T0)
    assert run_cli("copy", str(src), str(dst), "--state", str(state)).returncode == 0
    size = state.stat().st_size
    assert size > 16 * 4096
    with open(state, "r+b") as f:  # the header page stays; every later page is garbage
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    write(src / "new.csv", "new", T0)
    for command in ("copy", "plan"):
        r = run_cli(command, str(src), str(dst), "--state", str(state), "--json")
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and "damaged" in r.stderr
        assert "damaged" in r.report["error"] and r.report["ok"] is False


def test_a_symlink_to_the_state_is_the_same_lock(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _slow_source(src)
    real = tmp_path / "state" / "real.db"
    real.parent.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    env = _engine_env(tmp_path)
    first = subprocess.Popen(cli_command("copy", str(src), str(dst), "--state", str(link), "--bandwidth", "0.5", "-q"),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def held() -> bool:
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            store = open_store(str(real), read_only=True)
            try:
                return store.lock_held(str(src.resolve()), str(dst.resolve()))
            finally:
                store.close()

        wait_for(held, "the first run to hold the pair lock")
        second = subprocess.run(cli_command("copy", str(src), str(dst), "--state", str(real), "--json"),
                                env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and "another replicator run" in second.stderr, second.stderr
        assert first.wait(timeout=600) == 0
    finally:
        if first.poll() is None:
            first.kill()


@needs_root
def test_plan_on_a_read_only_sqlite_state(tmp_path: Path, run_cli) -> None:
    src, dst, home = tmp_path / "src", tmp_path / "dst", tmp_path / "statedir"
    for i in range(5):
        write(src / f"f{i}", str(i), T0)
    state = home / "state.db"
    assert run_cli("copy", str(src), str(dst), "--state", str(state)).returncode == 0
    write(src / "new", "new", T0)
    before = sorted(os.listdir(home))
    with mounted(tmp_path / "ro", "--bind", str(home)) as ro:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        r = run_cli("plan", str(src), str(dst), "--state", str(ro / "state.db"), "--json")
        assert r.returncode == 0, r.stderr
        assert r.report["files_copied"] == 1 and r.report["files_skipped"] == 5
        assert [a["path"] for a in r.report["actions"]] == ["new"]
        # a copy cannot run on it, and says so cleanly
        c = run_cli("copy", str(src), str(dst), "--state", str(ro / "state.db"), "--json")
        assert c.returncode == 1 and "Traceback" not in c.stderr and "read-only" in c.report["error"]
    assert sorted(os.listdir(home)) == before


def test_plan_on_a_postgres_state_the_role_cannot_write(postgres_server: PostgresServer,  # noqa: F811
                                                        tmp_path: Path, run_cli) -> None:
    import psycopg2

    server = postgres_server
    db = server.create_database(f"state_{uuid.uuid4().hex[:10]}")
    admin = f"postgresql://{server.user}:{server.password}@{server.host}:{server.port}/{db}"
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(5):
        write(src / f"f{i}", str(i), T0)
    assert run_cli("copy", str(src), str(dst), "--state", admin).returncode == 0
    role, password = f"reader_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (password,))
        cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    conn.close()
    reader = f"postgresql://{role}:{password}@{server.host}:{server.port}/{db}"
    write(src / "new", "new", T0)
    r = run_cli("plan", str(src), str(dst), "--state", reader, "--json")
    assert r.returncode == 0, r.stderr
    assert [a["path"] for a in r.report["actions"]] == ["new"] and r.report["files_skipped"] == 5
    c = run_cli("copy", str(src), str(dst), "--state", reader, "--json")
    assert c.returncode == 1 and "Traceback" not in c.stderr and "permission denied" in c.report["error"]
    assert password not in c.stdout + c.stderr + r.stdout + r.stderr
