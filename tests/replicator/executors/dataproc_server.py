"""The local Dataproc JobController the tests use lives in ``scripts/dataproc.py`` (the demo
runs it too); re-exported here for the executor tests."""

from scripts.dataproc import Cluster, JobControllerServer

__all__ = ["Cluster", "JobControllerServer"]
