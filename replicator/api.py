"""The engine's public entry points. The CLI, the Dagster assets and the Spark job
all call these; they parse nothing and print nothing."""

from __future__ import annotations

from replicator.options import CopyOptions
from replicator.progress import Progress
from replicator.report import RunReport


def copy(
    source: str,
    destination: str,
    options: CopyOptions | None = None,
    *,
    progress: Progress | None = None,
) -> RunReport:
    """Replicate the tree at ``source`` to ``destination`` incrementally; return the report.

    File-level failures are in the report (``files_failed``, ``failures``); errors that stop the
    whole run before anything is written (bad usage, unreachable root) raise ``ReplicatorError``.
    """
    from replicator.engine import run_copy

    return run_copy(source, destination, (options or CopyOptions()).validated(), progress=progress)


def plan(source: str, destination: str, options: CopyOptions | None = None) -> RunReport:
    """What :func:`copy` would do, doing nothing. ``report.actions`` lists the work."""
    from replicator.engine import run_copy

    opts = (options or CopyOptions()).with_(dry_run=True)
    return run_copy(source, destination, opts, progress=None, command="plan")


def verify(source: str, destination: str, options: CopyOptions | None = None):
    """Compare content (checksums) of two trees; returns a ``VerifyReport``."""
    from replicator.verify import run_verify

    return run_verify(source, destination, (options or CopyOptions()).validated())
