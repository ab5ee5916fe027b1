"""One error boundary: an error nobody classified (a back end raising something unexpected)
becomes a failed run with a report through the API, and one redacted line with exit 1
through the CLI, never a traceback; the run's end is recorded and its lock released."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from replicator import api
from replicator.filesystems.local import LocalFileSystem
from replicator.filesystems.registry import register
from replicator.options import CopyOptions
from replicator.secrets import register_secret
from tests.replicator.conftest import REPO, write

SECRET = "boundary-SECRET-77"


class Exploding(LocalFileSystem):
    """A destination whose stat raises an error no code path expects."""

    scheme = "boom"

    @classmethod
    def from_uri(cls, uri: str):
        return cls(), uri.split("://", 1)[1]

    def stat(self, path: str):
        raise RuntimeError(f"driver bug while talking to token={SECRET}")


def test_api_turns_an_unexpected_error_into_a_failed_report(tmp_path: Path) -> None:
    register("boom", Exploding)
    register_secret(SECRET)
    write(tmp_path / "src" / "a.csv", "a")
    opts = CopyOptions(state_path=str(tmp_path / "s.db"))
    rep = api.copy(str(tmp_path / "src"), f"boom://{tmp_path / 'dst'}", opts)
    assert not rep.ok and rep.exit_code == 1 and rep.status == "failed"
    assert "unexpected error" in rep.error and "driver bug" in rep.error
    assert SECRET not in rep.error
    again = api.copy(str(tmp_path / "src"), f"boom://{tmp_path / 'dst'}", opts)  # lock released
    assert "another replicator run" not in (again.error or "")


def test_cli_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    write(tmp_path / "src" / "a.csv", "a")
    code = ("import sys; from tests.replicator.test_error_boundary import Exploding;"
            "from replicator.filesystems.registry import register; register('boom', Exploding);"
            "from replicator.secrets import register_secret;"
            f"register_secret({SECRET!r});"
            "from replicator.cli import main; sys.argv[0] = 'replicator'; main()")
    r = subprocess.run([sys.executable, "-c", code, "copy", str(tmp_path / "src"),
                        f"boom://{tmp_path / 'dst'}", "--state", str(tmp_path / "s.db"), "--json"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert "unexpected error" in r.stderr and SECRET not in r.stderr + r.stdout
