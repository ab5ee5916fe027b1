"""An HDFS file's COMPOSITE-CRC32C checksum, asked of its DataNodes: the CRC32C of the whole
file without reading its bytes (what ``hadoop fs -Ddfs.checksum.combine.mode=COMPOSITE_CRC
-checksum`` prints and what GCS stores as ``crc32c``).

WebHDFS's ``GETFILECHECKSUM`` cannot give it: its DataNode handler (Hadoop 3.5
``WebHdfsHandler``) always answers ``MD5-of-xMD5-of-yCRC32C``, whatever the combine mode. So we
do what the Java client's ``FileChecksumHelper`` does: ask the NameNode for the block locations
(WebHDFS ``GET_BLOCK_LOCATIONS``), ask a DataNode holding each block for that block's composite
CRC (DataTransferProtocol ``OP_BLOCK_CHECKSUM`` with ``BlockChecksumType.COMPOSITE_CRC``), and
combine the block CRCs with their lengths. Works wherever the cluster writes CRC32C chunks
(``dfs.checksum.type=CRC32C``, the default); a CRC32 cluster gives None (not comparable).

Not supported (gives None, so callers read the bytes instead): files still being written
(open lease), erasure-coded files, DataNodes that require SASL on data transfer (secure
clusters with ``dfs.data.transfer.protection``).
"""

from __future__ import annotations

import base64
import socket
import struct
from typing import Any

from replicator import checksum as crc

DATA_TRANSFER_VERSION = 28
OP_BLOCK_CHECKSUM = 85
COMPOSITE_CRC = 2  # BlockChecksumTypeProto
CHECKSUM_CRC32C = 2  # ChecksumTypeProto
SUCCESS = 0


class ChecksumUnavailable(Exception):
    """The cluster cannot give a whole-file CRC32C for this file (see module doc)."""


# ------------------------------------------------------------------ protobuf, by hand
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(tag: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(tag << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint((tag << 3) | 2) + _varint(len(data)) + data


def _parse(buf: bytes) -> dict[int, Any]:
    """Fields of one protobuf message (last value wins; nested messages stay bytes)."""
    out: dict[int, Any] = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        tag, wt = key >> 3, key & 7
        if wt == 0:
            out[tag], i = _read_varint(buf, i)
        elif wt == 2:
            n, i = _read_varint(buf, i)
            out[tag] = buf[i:i + n]
            i += n
        elif wt == 5:
            out[tag] = buf[i:i + 4]
            i += 4
        elif wt == 1:
            out[tag] = buf[i:i + 8]
            i += 8
        else:
            raise ValueError(f"protobuf wire type {wt}")
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


# ------------------------------------------------------------------ Hadoop token (Writable)
def _vlong(buf: bytes, i: int) -> tuple[int, int]:
    first = struct.unpack_from(">b", buf, i)[0]
    i += 1
    if first >= -112:
        return first, i
    negative = first < -120
    size = (-119 - first) if negative else (-111 - first)
    value = 0
    for _ in range(size - 1):
        value = (value << 8) | buf[i]
        i += 1
    return (~value if negative else value), i


def token_proto(url_string: str) -> bytes:
    """A WebHDFS ``blockToken.urlString`` (a URL-safe base64 Writable Token) as TokenProto."""
    raw = base64.urlsafe_b64decode(url_string + "=" * (-len(url_string) % 4)) if url_string else b""
    parts: list[bytes] = []
    i = 0
    for _ in range(4):  # identifier, password, kind, service
        if i >= len(raw):
            parts.append(b"")
            continue
        n, i = _vlong(raw, i)
        parts.append(raw[i:i + n])
        i += n
    return b"".join(_field(t, v) for t, v in zip((1, 2, 3, 4), parts, strict=True))


# ------------------------------------------------------------------ the DataNode call
def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("DataNode closed the connection")
        data += chunk
    return bytes(data)


def _recv_delimited(sock: socket.socket) -> bytes:
    shift = n = 0
    while True:
        b = _recv_exact(sock, 1)[0]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return _recv_exact(sock, n)


def block_crc(host: str, port: int, block: dict, token: str, timeout: float) -> tuple[int, int]:
    """(crc, crcType) of one replicated block, as the DataNode at host:port composes it."""
    extended = (_field(1, block["blockPoolId"]) + _field(2, int(block["blockId"]))
                + _field(3, int(block["generationStamp"])) + _field(4, int(block["numBytes"])))
    header = _field(1, extended) + _field(2, token_proto(token))
    msg = _field(1, header) + _field(2, _field(1, COMPOSITE_CRC))
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">hB", DATA_TRANSFER_VERSION, OP_BLOCK_CHECKSUM)
                     + _varint(len(msg)) + msg)
        reply = _parse(_recv_delimited(sock))
    if reply.get(1, SUCCESS) != SUCCESS:
        message = reply.get(5, b"").decode(errors="replace")
        raise ChecksumUnavailable(f"DataNode {host}:{port}: status {reply.get(1)} {message}")
    resp = _parse(reply.get(3, b""))
    value = resp.get(3, b"")
    if len(value) != 4:
        raise ChecksumUnavailable(f"DataNode {host}:{port}: no composite block CRC")
    return struct.unpack(">I", value)[0], int(resp.get(4, 0))


def composite_crc32c(located: dict, timeout: float = 30.0) -> int:
    """The whole-file CRC32C from a WebHDFS ``LocatedBlocks`` answer; raises
    ChecksumUnavailable where the cluster cannot give it, OSError when no DataNode answers."""
    if located.get("isUnderConstruction"):
        raise ChecksumUnavailable("file is being written (open lease)")
    if int(located.get("fileLength", 0)) == 0:
        return 0  # the CRC32C of nothing (an empty file has no blocks)
    if not located.get("isLastBlockComplete", True):
        raise ChecksumUnavailable("last block not complete")
    if located.get("ecPolicy") or located.get("isStriped"):
        raise ChecksumUnavailable("erasure-coded file")
    blocks = [b for b in located.get("locatedBlocks", []) if int(b["block"]["numBytes"]) > 0]
    if sum(int(b["block"]["numBytes"]) for b in blocks) != int(located.get("fileLength", 0)):
        raise ChecksumUnavailable("block list does not cover the file")
    value: int | None = None
    for b in blocks:
        length = int(b["block"]["numBytes"])
        last: BaseException | None = None
        for loc in b.get("locations") or []:
            try:
                block_value, kind = block_crc(loc["ipAddr"], int(loc["xferPort"]), b["block"],
                                              (b.get("blockToken") or {}).get("urlString", ""),
                                              timeout)
                break
            except OSError as exc:  # that DataNode is down: try the next replica
                last = exc
        else:
            raise last or ChecksumUnavailable(f"block {b['block']['blockId']} has no location")
        if kind != CHECKSUM_CRC32C:
            raise ChecksumUnavailable("cluster writes CRC32 chunks, not CRC32C")
        value = block_value if value is None else crc.combine(value, block_value, length)
    return 0 if value is None else value
