"""CRC32C computed while streaming, and combined across ranges of one file."""

from __future__ import annotations

import google_crc32c

_POLY = 0x82F63B78  # CRC32C (Castagnoli), reflected


def extend(crc: int, data: bytes | memoryview) -> int:
    return google_crc32c.extend(crc, data)


def format_crc32c(crc: int) -> str:
    return f"crc32c:{crc:08x}"


def _gf2_times(mat: list[int], vec: int) -> int:
    total = 0
    i = 0
    while vec:
        if vec & 1:
            total ^= mat[i]
        vec >>= 1
        i += 1
    return total


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC of A+B from crc(A), crc(B) and len(B) (zlib's crc32_combine, for CRC32C)."""
    if len2 <= 0:
        return crc1
    odd = [_POLY] + [1 << n for n in range(31)]
    even = _gf2_square(odd)
    odd = _gf2_square(even)
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def file_crc32c(fs, path: str, chunk_size: int) -> int:
    """CRC32C of a whole file on any file system (streamed in ``chunk_size`` reads)."""
    value = 0
    for data in fs.read_chunks(path, 0, None, chunk_size):
        value = google_crc32c.extend(value, data)
    return value


def crc32c_of(fs, path: str, chunk_size: int, listed: str | None = None) -> tuple[str, str]:
    """A file's ``crc32c:...`` and how it was had: ``"stored"`` (the listing's or the store's
    own whole-file CRC32C: GCS, HDFS COMPOSITE-CRC32C; no bytes read) or ``"computed"``
    (read and hashed here)."""
    if listed and listed.startswith("crc32c:"):
        return listed, "stored"
    if "crc32c" in fs.capabilities.hash_kinds:
        stored = fs.checksum(path, "crc32c")
        if stored:
            return stored, "stored"
    return format_crc32c(file_crc32c(fs, path, chunk_size)), "computed"
