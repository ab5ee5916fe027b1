"""Executors run staged transfers: ``local`` (threads, the default), ``spark`` and ``distcp``."""

from __future__ import annotations

from replicator.errors import UsageError
from replicator.executors.base import Executor


def get_executor(name: str, workers: int, options: dict | None = None) -> Executor:
    if name == "local":
        from replicator.executors.local import LocalExecutor

        return LocalExecutor(workers)
    if name == "spark":
        try:
            from replicator.executors.spark import SparkExecutor
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise UsageError(f"--executor spark is not available: {exc}") from exc
        return SparkExecutor(workers=workers, **(options or {}))
    if name == "distcp":
        from replicator.executors.distcp import DistCpExecutor

        return DistCpExecutor(workers=workers, **(options or {}))
    raise UsageError(f"unknown executor {name!r}: expected local, spark or distcp")
