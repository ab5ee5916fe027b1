from tests.fixtures.dataproc import dataproc, dataproc_gcs, dataproc_region  # noqa: F401
