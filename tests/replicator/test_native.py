"""The compiled parts (native/*.c): built on this machine, CRC32C equal to google_crc32c's,
and the switch that turns them off."""

from __future__ import annotations

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


@pytest.fixture
def fastcopy():
    mod = native.built("fastcopy")
    if mod is None:
        pytest.skip("replicator._fastcopy is not built (no compiler): nothing native to test")
    return mod


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
