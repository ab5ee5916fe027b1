"""`make ui`: the Dagster UI on the demo's home (.demo/dagster_home), with sensors running.

Runs `dagster dev -w workspace.yaml` (webserver + daemon: the change, audit-file and
notification sensors start by default). Run `make demo` first to see the two waves of copies.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

from scripts.demo_platform import DAGSTER_HOME, REPO, prepare_home


def build_command(port: int, host: str) -> list[str]:
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    return [dagster, "dev", "-w", str(REPO / "workspace.yaml"), "-h", host, "-p", str(port)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DAGSTER_UI_PORT", "3000")))
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    home = prepare_home() if not (DAGSTER_HOME / "dagster.yaml").exists() else DAGSTER_HOME
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    cmd = build_command(args.port, args.host)
    print(f"Dagster UI on http://{args.host}:{args.port}  (DAGSTER_HOME={home}; Ctrl-C stops it)",
          flush=True)
    # A process started in the background inherits SIGINT as "ignored", and exec keeps that:
    # dagster dev would then ignore Ctrl-C / SIGTERM. Reset it to the default before exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(REPO)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
