"""Stream transforms against the standard tools, same files, same run (issue 15):

  a  gunzip: ``replicator copy -t gunzip`` of N .gz files vs ``gzip -dc`` of each to a file
  b  untar:  ``replicator copy -t untar`` of one tar of many members vs ``tar -xf``
  c  gpg:    ``replicator copy -t gpg-encrypt=R`` vs ``gpg --encrypt`` of each file (throwaway key)

Each tool writes a fresh destination; sources are read once (untimed) to warm the page
cache, dirty pages are flushed (``sync``) between runs. The replicator runs with 4 workers
(the standard tools here are one process per file, run one after the other: the ratio says
what the parallel, verified, journalled path costs or gains against plain decompression).
Peak RSS of the replicator process is printed too (bounded memory: it must not grow with
file size).

Environment: ``BENCH_DIR``, ``BENCH_TRANSFORMS_MIB`` (total MiB per scenario, default 512),
``BENCH_TRANSFORMS_SCENARIOS`` (e.g. ``ab``).
"""

from __future__ import annotations

import gzip
import io
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def _run(argv: list[str], env: dict | None = None, stdout=None) -> float:
    subprocess.run(["sync"], check=True)
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def _replicator(src: Path, dst: Path, state: Path, *transforms: str, env: dict | None = None) -> float:
    return _run([sys.executable, "-m", "replicator.cli", "copy", str(src), str(dst), "--state", str(state),
                 "-w", "4", "-q", *[a for t in transforms for a in ("-t", t)]], env=env)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _data(n: int) -> bytes:
    # compressible like CSV, not a constant
    row = b"2026-12-01T00:00:00Z,%08d,some text value,42.5\n"
    return b"".join(row % i for i in range(n // len(row % 0) + 1))[:n]


def main() -> int:
    base = Path(os.environ.get("BENCH_DIR", ROOT / ".bench")) / "transforms"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    total = int(os.environ.get("BENCH_TRANSFORMS_MIB", "512")) * MiB
    scenarios = os.environ.get("BENCH_TRANSFORMS_SCENARIOS", "abc")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print(f"bench_transforms: {total // MiB} MiB per scenario, replicator -w 4")
    if "a" in scenarios:
        src = base / "gz"
        src.mkdir()
        files = 8
        for i in range(files):
            (src / f"part-{i}.csv.gz").write_bytes(gzip.compress(_data(total // files), 6))
        ours = _replicator(src, base / "gz-ours", base / "a.db", "gunzip", env=env)
        print(f"  peak RSS so far (the replicator run): {_peak_rss_mib():.0f} MiB for "
              f"{files} files of {total // files // MiB} MiB")
        out = base / "gz-gzip"
        out.mkdir()
        t = 0.0
        for p in sorted(src.iterdir()):
            with open(out / p.name[:-3], "wb") as f:
                t += _run(["gzip", "-dc", str(p)], stdout=f)
        print(f"a gunzip {files} x {total // files // MiB} MiB: replicator {ours:.2f}s, gzip -dc {t:.2f}s, "
              f"ratio {t / ours:.2f}x (>1: replicator faster)")
    if "b" in scenarios:
        src = base / "tar"
        src.mkdir()
        members = 2000
        with tarfile.open(src / "batch.tar", "w") as tf:
            chunk = _data(total // members)
            for i in range(members):
                info = tarfile.TarInfo(f"d{i % 20}/m{i}.csv")
                info.size = len(chunk)
                tf.addfile(info, io.BytesIO(chunk))
        ours = _replicator(src, base / "tar-ours", base / "b.db", "untar", env=env)
        out = base / "tar-tar"
        out.mkdir()
        t = _run(["tar", "-xf", str(src / "batch.tar"), "-C", str(out)])
        print(f"b untar {members} members, {total // MiB} MiB: replicator {ours:.2f}s, tar -xf {t:.2f}s, "
              f"ratio {t / ours:.2f}x")
    if "c" in scenarios and shutil.which("gpg"):
        home = base / "gnupg"
        home.mkdir(mode=0o700)
        genv = dict(env, GNUPGHOME=str(home))
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Bench <b@example.com>",
                        "future-default", "default", "never"], check=True, env=genv, capture_output=True)
        try:
            src = base / "plain"
            src.mkdir()
            files = 8
            for i in range(files):
                (src / f"part-{i}.csv").write_bytes(_data(total // files))
            ours = _replicator(src, base / "gpg-ours", base / "c.db", "gpg-encrypt=b@example.com", env=genv)
            out = base / "gpg-gpg"
            out.mkdir()
            t = sum(_run(["gpg", "--batch", "--trust-model", "always", "--encrypt", "-r", "b@example.com",
                          "--output", str(out / (p.name + ".gpg")), str(p)], env=genv)
                    for p in sorted(src.iterdir()))
            print(f"c gpg-encrypt {files} x {total // files // MiB} MiB: replicator {ours:.2f}s, gpg {t:.2f}s, "
                  f"ratio {t / ours:.2f}x")
        finally:
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=genv, capture_output=True)
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
