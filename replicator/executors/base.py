"""The executor interface: run bins of tasks with :func:`replicator.transfer.stage`
and hand every outcome back to the driver, which alone journals, publishes and records."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from replicator.transfer import Outcome, StageContext, Task


class Executor(ABC):
    name: str = ""

    @abstractmethod
    def run(self, bins: Iterator[list[Task]], ctx: StageContext) -> Iterator[Outcome]:
        """Stage every task of every bin; yield outcomes as they complete (any order).

        ``bins`` must be consumed from the calling thread: pulling a bin journals it."""

    def close(self) -> None:
        """Release resources (thread pools, Spark sessions the executor owns)."""
