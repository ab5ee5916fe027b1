"""Fixtures for engine tests: trees on disk and a CLI runner in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict:
        lines = [ln for ln in self.stdout.strip().splitlines() if ln.strip()]
        assert lines, f"no stdout; stderr was:\n{self.stderr}"
        return json.loads(lines[-1])


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "replicator.cli", *args]


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run ``replicator ARGS`` in a subprocess with a private state store."""
    env = dict(os.environ, REPLICATOR_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))

    def run(*args: str, prefix: list[str] | None = None, timeout: float = 120) -> CliResult:
        proc = subprocess.run([*(prefix or []), *cli_command(*args)], capture_output=True,
                              text=True, env=env, timeout=timeout, cwd=str(tmp_path))
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    run.env = env  # type: ignore[attr-defined]
    return run


def write(path: Path, data: bytes | str = b"", mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def tree(root: Path) -> dict[str, bytes | None]:
    """{relative path: bytes} for files, None for directories (symlinks not followed)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath, d)
            out[str(p.relative_to(root))] = None
        for f in filenames:
            p = Path(dirpath, f)
            if p.is_symlink():
                continue
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def temp_names(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".rtmp-*")]


def built_or_skip(stem: str):
    """``replicator._<stem>``, or the test skips (no compiler: nothing native to test;
    test_native.py fails the suite where a compiler is and the build is missing)."""
    from replicator import native

    mod = native.built(stem)
    if mod is None:
        pytest.skip(f"replicator._{stem} is not built (no compiler): nothing native to test")
    return mod


@pytest.fixture
def fastcopy():
    return built_or_skip("fastcopy")


@pytest.fixture
def fastwalk():
    return built_or_skip("fastwalk")

