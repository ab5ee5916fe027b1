"""Source files for the transform tests on real back ends: a tar archive in memory and a
file written with a fixed mtime."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

T0 = 1_700_000_000


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), T0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_file(path: Path, data: bytes, mtime: int = T0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
