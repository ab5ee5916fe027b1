"""Helpers shared by the executor tests: Java/Spark environment and source trees."""

from __future__ import annotations

import os
import random
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from replicator.errors import PreconditionFailed
from replicator.filesystems.base import Writer
from replicator.filesystems.local import LocalFileSystem

MTIME_NS = 1_700_000_000_123_456_789


def java_home() -> str | None:
    """JAVA_HOME if set, else the installation behind ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and os.path.exists(os.path.join(home, "bin", "java")):
        return home
    java = shutil.which("java")
    if not java:
        return None
    return str(Path(os.path.realpath(java)).parent.parent)


def spark_env() -> dict[str, str]:
    """Environment for Spark in tests (also for CLI subprocesses)."""
    env = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    home = java_home()
    if home:
        env["JAVA_HOME"] = home
    return env


def write_file(path: Path, data: bytes, mtime_ns: int = MTIME_NS, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def make_tree(root: Path, *, small_files: int = 300, big_bytes: int = 12 << 20, seed: int = 7) -> dict[str, bytes]:
    """A source tree: many small files in nested directories (more than one bin), empty
    files, odd names, an empty directory and one file big enough to be copied in ranges."""
    rnd = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(small_files):
        rel = f"dt=2026-11-{(i % 3) + 18:02d}/part-{i:05d}.parquet"
        files[rel] = rnd.randbytes(rnd.randint(1, 6000))
    files["empty.txt"] = b""
    files["one"] = b"x"
    files["names/with space é.csv"] = b"a,b\n1,2\n"
    files["deep/a/b/c/d/leaf.bin"] = rnd.randbytes(70_000)
    files["big/blob.bin"] = rnd.randbytes(big_bytes)
    for n, (rel, data) in enumerate(sorted(files.items())):
        write_file(root / rel, data, MTIME_NS + n * 1000, 0o640 if n % 5 == 0 else 0o644)
    (root / "empty_dir").mkdir(parents=True, exist_ok=True)
    return files


def tree_state(root: Path) -> dict[str, tuple]:
    """Everything that must match between two copies: kind, bytes, mtime, mode."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            out[str(p.relative_to(root))] = ("d",)
        for f in filenames:
            p = Path(dirpath) / f
            st = p.stat()
            out[str(p.relative_to(root))] = ("f", p.read_bytes(), st.st_mtime_ns, st.st_mode & 0o777)
    return out


class InPlaceFileSystem(LocalFileSystem):
    """A local directory behaving like an object store for the publish protocol: no
    atomic rename (bytes go straight to the final name) and a must-not-exist precondition
    on writes of new files (``expect_version="0"``), as GCS ``ifGenerationMatch=0``."""

    scheme = "inplace"
    capabilities = replace(LocalFileSystem.capabilities, atomic_rename=False, parallel_write=False,
                           host_paths=False)

    def __reduce__(self):  # rebuilt by class (this module is pickled by value into Spark tasks)
        return (InPlaceFileSystem, ())

    def open_write(self, path: str, *, mtime_ns: int | None = None,
                   expect_version: str | None = None) -> Writer:
        if expect_version == "0" and os.path.exists(path):
            raise PreconditionFailed(f"precondition failed: {path} exists")
        return super().open_write(path, mtime_ns=mtime_ns, expect_version=expect_version)
