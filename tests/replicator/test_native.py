"""The compiled parts (native/*.c): built on this machine, CRC32C equal to google_crc32c's,
and the switch that turns them off."""

from __future__ import annotations

import errno
import os
import random
import shlex
import shutil
import sysconfig
from pathlib import Path

import google_crc32c
import pytest

from replicator import native


def _compiler() -> str | None:
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    return shutil.which(cc[0]) if cc else None


@pytest.mark.parametrize("stem", ["fastcopy", "fastwalk"])
def test_the_extension_is_built_and_imported_where_a_compiler_is(stem: str) -> None:
    if _compiler() is None:
        pytest.skip("no C compiler on this machine: the pure-Python paths run instead")
    mod = native.built(stem)
    assert mod is not None, f"native/{stem}.c was not built into replicator._{stem} " \
                            "(run `make venv`: uv rebuilds the project when a C file changes)"
    assert mod.__file__.endswith(".so")


@pytest.mark.parametrize("impl", ["crc32c", "crc32c_table"])
def test_crc32c_equals_google_crc32c_on_every_length_and_alignment(fastcopy, impl: str) -> None:
    fn = getattr(fastcopy, impl)
    rng = random.Random(17)
    block = rng.randbytes(4096 + 16)
    view = memoryview(block)
    for n in range(4097):
        off = n % 9  # unaligned starts too
        data = view[off:off + n]
        assert fn(0, data) == google_crc32c.value(bytes(data)), (impl, n, off)
    for _ in range(200):  # extending a running value, random lengths and seeds
        seed = rng.getrandbits(32)
        off = rng.randrange(16)
        data = view[off:off + rng.randrange(4097)]
        assert fn(seed, data) == google_crc32c.extend(seed, bytes(data))
    big = rng.randbytes(3 << 20)  # the GIL-free branch
    assert fn(0, big) == google_crc32c.value(big)


def test_crc32c_refuses_what_is_not_a_crc_or_a_buffer(fastcopy) -> None:
    with pytest.raises(ValueError):
        fastcopy.crc32c(1 << 32, b"x")
    with pytest.raises(TypeError):
        fastcopy.crc32c(0, "text")


def test_the_switch_turns_the_native_parts_off(fastcopy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "0")
    assert native.fastcopy() is None
    monkeypatch.setenv(native.ENV, "1")
    assert native.fastcopy() is fastcopy
    monkeypatch.delenv(native.ENV)
    assert native.fastcopy() is fastcopy
    assert native.module("nosuchpart") is None


def test_hardware_crc_is_used_where_the_cpu_has_it(fastcopy) -> None:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    has = " sse4_2" in flags and os.uname().machine in {"x86_64", "i686"}
    assert bool(fastcopy.hardware_crc) == has


def test_crc32c_of_long_buffers_joins_its_three_chains_right(fastcopy) -> None:
    # buffers of 3 x 8 KiB and more run three crc32 chains over adjacent blocks, joined by
    # shifting (3 x 256 bytes for what is left): every length around those block edges,
    # extending a running value, at every alignment
    rng = random.Random(18)
    block = rng.randbytes(3 * 8192 * 3 + 64)
    view = memoryview(block)
    lengths = {3 * 8192 * k + d for k in (1, 2, 3) for d in (-769, -768, -1, 0, 1, 7, 767, 768, 800)}
    for n in sorted(lengths):
        off = n % 8
        data = bytes(view[off:off + n])
        seed = rng.getrandbits(32)
        assert fastcopy.crc32c(seed, data) == google_crc32c.extend(seed, data), n
        assert fastcopy.crc32c_table(seed, data) == google_crc32c.extend(seed, data), n


@pytest.fixture
def checker(fastcopy):
    """The module, failing with what to do when its build predates verify_range."""
    if not hasattr(fastcopy, "verify_range"):
        pytest.fail(f"{fastcopy.__file__} was built before native/fastcopy.c had verify_range: "
                    "rebuild it (`make venv`, or `python setup.py build_ext --inplace`)")
    return fastcopy


def _pair(tmp_path: Path, n: int) -> tuple[bytes, int, int]:
    data = random.Random(n).randbytes(n)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data)
    return data, os.open(tmp_path / "a", os.O_RDONLY), os.open(tmp_path / "b", os.O_RDWR)


@pytest.mark.parametrize("half", [1, 4096, 100_000])
def test_verify_range_compares_both_files_and_hashes_the_source(checker, tmp_path: Path,
                                                                 half: int) -> None:
    n = 300_001
    data, a, b = _pair(tmp_path, n)
    scratch = bytearray(2 * half)
    try:
        assert checker.verify_range(a, b, 0, n, 0, scratch) == (google_crc32c.value(data), -1)
        # a range in the middle, extending a running CRC (the pieces of a big file)
        crc, bad = checker.verify_range(a, b, 0, 123_457, 0, scratch)
        assert checker.verify_range(a, b, 123_457, n - 123_457, crc, scratch) == \
            (google_crc32c.value(data), -1)
        for where in (0, half - 1, half, n // 2, n - 1):
            os.pwrite(b, bytes([data[where] ^ 0x10]), where)
            crc, bad = checker.verify_range(a, b, 0, n, 0, scratch)
            assert bad == where  # the first byte that differs, wherever the reads fall
            assert crc == google_crc32c.value(data[:where])  # the source up to there
            os.pwrite(b, data[where:where + 1], where)
        # asked past both ends (the source shrank after the copy): no difference, the bytes
        # there hashed; the caller refuses the file by its size
        assert checker.verify_range(a, b, 0, n + 5000, 0, scratch) == (google_crc32c.value(data), -1)
        os.ftruncate(b, n - 10)  # one side ends first: that is where they differ
        assert checker.verify_range(a, b, 0, n, 0, scratch) == \
            (google_crc32c.value(data[:n - 10]), n - 10)
    finally:
        os.close(a)
        os.close(b)


def test_verify_range_raises_oserror_and_refuses_bad_arguments(checker, tmp_path: Path) -> None:
    _data, a, b = _pair(tmp_path, 10)
    os.close(b)
    try:
        with pytest.raises(OSError) as info:
            checker.verify_range(a, b, 0, 10, 0, bytearray(64))
        assert info.value.errno == errno.EBADF
        with pytest.raises(ValueError):
            checker.verify_range(a, a, 0, 10, 0, bytearray(1))  # no room for two reads
        with pytest.raises(ValueError):
            checker.verify_range(a, a, -1, 10, 0, bytearray(64))
        with pytest.raises(TypeError):
            checker.verify_range(a, a, 0, 10, 0, b"read-only")
    finally:
        os.close(a)
