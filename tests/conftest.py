"""Session fixtures for servers that are expensive to start (a real HDFS, a Kafka broker,
fake-gcs-server, sshd), and the checks every test gets.

They are defined once here so every test directory shares one instance per session: a
fixture imported into two conftest files is two fixtures, and would start two servers.
"""

import os
import signal
from collections.abc import Iterator

import pytest

from tests.fixtures.gcs import gcs_server  # noqa: F401
from tests.fixtures.hadoop import hdfs_cluster, hdfs_cluster_b, hdfs_cluster_small_pages  # noqa: F401
from tests.fixtures.kafka import kafka_broker  # noqa: F401
from tests.fixtures.process import child_followers
from tests.fixtures.sftp import sftp_server  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    # A shell's background job (`make test &`, `.ci/run` from a runner) starts pytest with
    # SIGINT ignored. Dagster's in-process execution (capture_interrupts, on the main thread)
    # then leaves SIGTERM set to SIGINT's disposition, i.e. ignored, and every process started
    # afterwards inherits that: the compute-log followers (`tail -F`) that a run on another
    # thread starts survive the SIGTERM meant to stop them (a 30 s wait per step, then they
    # outlive the tests), and servers the tests start ignore their stop signal. Take SIGINT
    # back as Python's own KeyboardInterrupt handler, as in a foreground run.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _no_follower_outlives_its_test() -> Iterator[None]:
    """A test stops what it starts: fail the test that leaves a compute-log follower (a
    ``tail -F`` child of this pytest) running, and stop it."""
    before = {pid for pid, _ in child_followers()}
    yield
    left = [(pid, cmd) for pid, cmd in child_followers() if pid not in before]
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    assert not left, f"the test left {len(left)} `tail -F` follower(s) running: {left}"
