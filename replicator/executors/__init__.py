"""Executors run staged transfers: ``local`` (threads, the default) and ``spark``."""

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
    raise UsageError(f"unknown executor {name!r}: expected local or spark")
