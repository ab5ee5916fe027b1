"""Run one copy in this process and SIGKILL it at an exact point (tests only).

``python -m tests.replicator.crashpoint SPEC_JSON`` where the spec is
``{"src": ..., "dst": ..., "options": {CopyOptions fields}, "crash": "module:Qual.name:when:n"}``:
the ``n``-th call (1-based, counted across threads) of ``Qual.name`` in ``module`` kills the
process ``before`` it runs or ``after`` it returned; ``pause`` instead creates the file
``spec["paused"]`` and waits (at most 10 minutes) until ``spec["release"]`` exists, then runs
the call. Without ``crash`` it is a plain run.
The report is printed as JSON on the last line of stdout.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys
import threading
import time


def install(point: str, paused: str | None = None, release: str | None = None) -> None:
    module_name, qual, when, nth = point.split(":")
    target = importlib.import_module(module_name)
    owner_path, _, attr = qual.rpartition(".")
    owner = target
    for part in filter(None, owner_path.split(".")):
        owner = getattr(owner, part)
    real = getattr(owner, attr)
    count = {"n": 0}
    lock = threading.Lock()
    limit = int(nth)

    def hit() -> bool:
        with lock:
            count["n"] += 1
            return count["n"] == limit

    @functools.wraps(real)
    def wrapper(*args, **kw):
        fire = hit()
        if fire and when == "pause":
            open(paused, "w").close()  # type: ignore[arg-type]
            deadline = time.monotonic() + 600
            while not os.path.exists(release) and time.monotonic() < deadline:  # type: ignore[arg-type]
                time.sleep(0.02)
        if fire and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kw)
        if fire and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, attr, wrapper)


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("crash"):
        install(spec["crash"], spec.get("paused"), spec.get("release"))
    from replicator import api
    from replicator.options import CopyOptions

    opts = dict(spec.get("options") or {})
    for key in ("include", "exclude"):
        if key in opts:
            opts[key] = tuple(opts[key])
    report = api.copy(spec["src"], spec["dst"], CopyOptions(**opts))
    print(json.dumps(report.to_dict(), default=str))
    sys.exit(report.exit_code)


if __name__ == "__main__":
    main()
