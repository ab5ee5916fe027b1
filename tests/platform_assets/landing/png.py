"""A small PNG reader (8-bit RGB/RGBA, non-interlaced: what Chromium writes) for tests that
look at screenshots: zlib + the five PNG row filters, with numpy."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def read_png(path: str) -> np.ndarray:
    """The image as a (height, width, channels) uint8 array."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or interlace or color not in (2, 6):
                raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour {color})")
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        f, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 1:  # Sub: running sum per channel
            cur = np.cumsum(line.reshape(width, channels), axis=0).reshape(-1) % 256
        elif f == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average / Paeth depend on the left neighbour: byte by byte
            cur = np.zeros(stride, dtype=np.int32)
            ln, pv = line.tolist(), prev.tolist()
            c = [0] * stride
            for i in range(stride):
                a = c[i - channels] if i >= channels else 0
                b = pv[i]
                if f == 3:
                    c[i] = (ln[i] + (a + b) // 2) % 256
                else:
                    cc = pv[i - channels] if i >= channels else 0
                    p = a + b - cc
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
                    c[i] = (ln[i] + pred) % 256
            cur = np.array(c, dtype=np.int32)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels)


def count_colour(img: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 8) -> int:
    """Pixels within ``tolerance`` of ``rgb``."""
    diff = np.abs(img[:, :, :3].astype(np.int32) - np.array(rgb, dtype=np.int32))
    return int(np.all(diff <= tolerance, axis=2).sum())
