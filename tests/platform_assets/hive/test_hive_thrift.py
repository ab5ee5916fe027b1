"""A cluster with ``hive_metastore: thrift://...``: the worker's session uses that metastore
(``hive.metastore.uris``); one that does not answer is reported as unavailable (retryable)."""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest

from resources.hive import HiveClient, HiveUnavailable


def test_thrift_metastore_is_used_and_unavailable_when_it_does_not_answer(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime for Spark")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections: list[int] = []
    stop = threading.Event()

    def accept() -> None:  # a "metastore" that accepts and hangs up: no thrift answer
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            connections.append(1)
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    client = HiveClient("remote", str(tmp_path / "hive"), f"thrift://127.0.0.1:{port}",
                        start_timeout_s=120)
    try:
        with pytest.raises(HiveUnavailable, match="Hive metastore of cluster 'remote' unavailable"):
            client.ping()
    finally:
        client.stop()
        stop.set()
        t.join(timeout=5)
        server.close()
    assert connections  # the worker's session went to the configured thrift URI
    assert not client.running
    assert not (tmp_path / "hive" / "metastore_db").exists()  # no embedded Derby behind it
