"""The executor interface: run bins of tasks with :func:`replicator.transfer.stage`
and hand every outcome back to the driver, which alone journals, publishes and records."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from replicator.transfer import Outcome, SmallBatch, StageContext, Task


class Executor(ABC):
    name: str = ""
    stages: bool = True  # bytes go to our staged names (False: the executor publishes each file)
    ranges: bool = True  # big files may come as ranges (False: whole files only)

    @abstractmethod
    def run(self, bins: Iterator[list[Task]], ctx: StageContext) -> Iterator[Outcome | SmallBatch]:
        """Stage every task of every bin; yield outcomes as they complete (any order), or
        for the copied files of a batch-journalled bin one :class:`SmallBatch`.

        ``bins`` must be consumed from the calling thread: pulling a bin journals it."""

    def details(self) -> dict[str, Any]:
        """What the executor itself reported (e.g. DistCp's counters), for the run report."""
        return {}

    def close(self) -> None:
        """Release resources (thread pools, Spark sessions the executor owns)."""
