from tests.fixtures.hadoop import hdfs_cluster, hdfs_cluster_b  # noqa: F401
