"""Fixtures for the executor tests: one Spark session (local[2], retries on) for the whole
test session (helpers: executor_helpers.py; the Dataproc server: dataproc_server.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # helper modules live next to the tests
    sys.path.insert(0, str(HERE))

from executor_helpers import java_home, spark_env  # noqa: E402

SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.driver.memory": "512m",
}


@pytest.fixture(scope="session")
def spark_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("pyspark")
    if java_home() is None:
        pytest.skip("no Java runtime for Spark")
    for key, value in spark_env().items():
        os.environ.setdefault(key, value)
    from replicator.executors.spark import SparkExecutor

    conf = dict(SPARK_CONF, **{"spark.local.dir": str(tmp_path_factory.mktemp("spark-local"))})
    owner = SparkExecutor(workers=4, master="local[2]", conf=conf, app_name="replicator-tests")
    spark = owner.session()
    yield spark
    owner.close()  # stops the session only if this fixture started it
