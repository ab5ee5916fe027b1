"""What the JVM launchers (``scripts.hadoop``, ``scripts.kafka``) and the test servers share:
a free loopback port and the path of a JDK tool."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path


class JavaNotFound(RuntimeError):
    """No JDK tool of that name on ``JAVA_HOME`` or ``PATH``."""


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def java_tool(tool: str = "java") -> str:
    """``$JAVA_HOME/bin/<tool>`` when it exists, else ``<tool>`` on ``PATH``."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / tool).exists():
        return str(Path(home) / "bin" / tool)
    found = shutil.which(tool)
    if not found:
        raise JavaNotFound(f"{tool} not found: install a JDK 17 (Debian package openjdk-17-jdk)")
    return found


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs; a zombie (exited, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
