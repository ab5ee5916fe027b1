"""The copy engine as a Dagster resource: thin, it only builds ``CopyOptions`` from config."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from replicator.options import CopyOptions
from replicator.progress import Progress
from replicator.report import RunReport


class ReplicatorResource(dg.ConfigurableResource):
    """Runs :func:`replicator.api.copy` with the platform's settings.

    ``state_path`` is always explicit: the engine's state store, an SQLite file or a
    ``postgresql://`` URL (shared by copies in many pods); set it from an ``EnvVar`` in
    production, e.g. ``ReplicatorResource(state_path=dg.EnvVar("REPLICATOR_STATE"))``.
    """

    state_path: str = Field(description="the engine's state store: SQLite file or postgresql:// URL")
    workers: int = Field(default=8, ge=1, le=1024)
    executor: str = Field(
        default="local",
        description="local | spark | distcp: the executor of copies the spec gives none (landing "
                    "ingest, Hive table copies); replica copies run with their target's executor "
                    "from the spec (clusters.<name>.executor, datasets.<name>.executor)")
    marker: str | None = Field(default=None, description="file written last at each replica root")
    retries: int = Field(default=3, ge=0, description="per-file retries inside one copy")
    lock_wait_s: float = Field(
        default=3600.0, ge=0,
        description="a copy of a partition another run is copying now waits this long for it "
                    "(then copies what is left) instead of failing: backfill, sensor, trigger "
                    "and UI runs of one partition never fail on each other")
    verify_checksum: bool = Field(
        default=True,
        description="verify every copied file by CRC32C (the store's, or a re-read); off, local "
                    "copies are checked by size only and the copy_verified check fails")

    def options(
        self,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        min_age_s: float = 0.0,
        delete: bool = False,
        checksum: bool = False,
        include_regex: Sequence[str] = (),
        exclude_regex: Sequence[str] = (),
        max_age_s: float | None = None,
        transforms: Sequence[str] = (),
        preserve: Sequence[str] = ("times",),
    ) -> CopyOptions:
        return CopyOptions(
            delete=delete,
            checksum=checksum,
            verify_checksum=self.verify_checksum,
            workers=self.workers,
            include=tuple(include),
            exclude=tuple(exclude),
            min_age_s=min_age_s,
            include_regex=tuple(include_regex),
            exclude_regex=tuple(exclude_regex),
            max_age_s=max_age_s,
            transforms=tuple(transforms),
            preserve=frozenset(preserve),
            state_path=self.state_path,
            executor=self.executor,
            marker=self.marker,
            retries=self.retries,
            lock_wait_s=self.lock_wait_s,
        ).validated()

    def copy(self, source: str, destination: str, options: CopyOptions,
             progress: Progress | None = None) -> RunReport:
        from replicator.api import copy

        return copy(source, destination, options, progress=progress)

    def verify(self, source: str, destination: str):  # -> replicator VerifyReport
        from replicator.api import verify

        return verify(source, destination, CopyOptions(state_path=self.state_path))
