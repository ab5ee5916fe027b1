"""Dataproc as a Dagster resource: how the platform reaches the JobController and where the
jobs' side files go. Which project, region and pool a copy runs on is the spec's
(``executor: {kind: dataproc, ...}``); this resource holds what is the same for every job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class DataprocResource(dg.ConfigurableResource):
    """Submits copies as Dataproc jobs through ``google-cloud-dataproc``'s JobControllerClient.

    ``staging_uri``: a ``gs://bucket/prefix`` the clusters can read, for the DistCp filters
    file of each job and the Pipes messages of ``replicator`` jobs. ``main_python_file_uri``:
    the ``replicator`` job's driver (default: the one installed with this code location, a
    ``file://`` URI, right when the cluster's image has the same install). Credentials are
    Google's application default credentials (``GOOGLE_APPLICATION_CREDENTIALS``); an
    endpoint on a loopback address is spoken to over plain gRPC (a local JobController).
    """

    staging_uri: str = Field(description="gs://bucket/prefix for job side files and Pipes messages")
    main_python_file_uri: str | None = Field(
        default=None, description="driver of replicator jobs (default: this install's file://)")
    python_file_uris: list[str] = Field(default_factory=list)
    poll_interval_s: float = Field(default=5.0, gt=0, description="GetJob interval while waiting")
    timeout_s: float = Field(default=24 * 3600.0, gt=0, description="give up waiting after this")

    def client(self, region: str, endpoint: str | None = None) -> Any:
        """A JobControllerClient for ``region`` (or ``endpoint``)."""
        from replicator.executors.dataproc import make_client

        host = (endpoint or "").rsplit(":", 1)[0]
        return make_client(region, api_endpoint=endpoint, insecure=host in LOCAL_HOSTS)

    def driver_uri(self) -> str:
        if self.main_python_file_uri:
            return self.main_python_file_uri
        # the driver beside this file; not imported (it runs on the cluster, as a script)
        return Path(__file__).resolve().with_name("dataproc_job.py").as_uri()

    def staging(self) -> tuple[str, str]:
        """(bucket, prefix) of ``staging_uri``."""
        if not self.staging_uri.startswith("gs://") or len(self.staging_uri) <= 5:
            raise ValueError(f"dataproc staging_uri: expected gs://bucket/prefix, got {self.staging_uri!r}")
        bucket, _, prefix = self.staging_uri[5:].partition("/")
        return bucket, prefix.strip("/")
