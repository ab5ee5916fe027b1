"""Session fixtures for servers that are expensive to start (a real HDFS, a Kafka broker,
fake-gcs-server, sshd).

They are defined once here so every test directory shares one instance per session: a
fixture imported into two conftest files is two fixtures, and would start two servers.
"""

from tests.fixtures.gcs import gcs_server  # noqa: F401
from tests.fixtures.hadoop import hdfs_cluster, hdfs_cluster_b, hdfs_cluster_small_pages  # noqa: F401
from tests.fixtures.kafka import kafka_broker  # noqa: F401
from tests.fixtures.sftp import sftp_server  # noqa: F401
