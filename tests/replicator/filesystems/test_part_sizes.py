"""How a big file is split into ranges, per destination kind (engine._Run._part_size)."""

from __future__ import annotations

import pytest

from replicator.engine import _Run
from replicator.options import CopyOptions

MiB = 1 << 20


@pytest.fixture
def run_for(tmp_path, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # never contacted
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")

    def make(dst: str) -> _Run:
        opts = CopyOptions(state_path=str(tmp_path / "s.db")).validated()
        return _Run(str(tmp_path / "src"), dst, opts, None, "copy")

    return make


def test_local_destination_gets_few_long_ranges(run_for, tmp_path):
    run = run_for(str(tmp_path / "dst"))
    assert run._part_size(512 * MiB) == 256 * MiB  # 2 streams, as rclone
    assert run._part_size(300 * MiB) == 150 * MiB
    assert run._part_size(10 << 30) == (10 << 30) // 4  # at most 4 streams
    assert run._part_size(256 * MiB) == 256 * MiB  # one range: copied as one stream


def test_s3_parts_are_chunk_sized(run_for):
    run = run_for("s3://bucket/prefix")
    assert run._part_size(512 * MiB) == 8 * MiB  # memory: chunk size x workers
    assert run._part_size(200 << 30) == -(-(200 << 30) // 10_000)  # at most 10,000 parts


def test_gcs_parts_are_part_size(run_for):
    assert run_for("gs://bucket/prefix")._part_size(512 * MiB) == 64 * MiB
