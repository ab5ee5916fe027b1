"""FTP: an upload whose completion fails (the control connection is lost before the
server's final reply) raises a retryable error, deletes the partial file and never
hands the broken control connection back to the pool."""

from __future__ import annotations

import os
import socket

import pytest

from replicator.errors import RetryableError
from tests.replicator.filesystems.conftest import make_backend


def test_ftp_failed_completion_removes_partial(request, tmp_path):
    b = make_backend("ftp", request, tmp_path)
    fs = b.fs
    path = b.path("partial.bin")
    w = fs.open_write(path)
    w.write(os.urandom(256 * 1024))
    broken = w.ftp
    broken.sock.shutdown(socket.SHUT_RDWR)  # e.g. a firewall drops the idle control channel
    with pytest.raises(RetryableError, match="write ftp://"):
        w.close()
    assert broken not in fs._idle
    assert fs.stat(path) is None
    assert [i.name for i in fs.list_dir(b.root)] == []
    # the pool still works: the next upload completes on a fresh control connection
    with fs.open_write(path) as w2:
        w2.write(b"whole")
    assert b"".join(fs.read_chunks(path)) == b"whole"
    fs.close()
