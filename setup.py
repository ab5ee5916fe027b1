"""Only the compiled parts: every ``native/<stem>.c`` builds as ``replicator._<stem>``
(pyproject.toml holds the metadata); ``native/*.h`` are headers they share. Optional: without a compiler the install still
succeeds and the engine takes its pure-Python paths (see replicator/native.py)."""

from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent

setup(
    ext_modules=[
        Extension(
            f"replicator._{source.stem}",
            [source.relative_to(HERE).as_posix()],
            depends=[h.relative_to(HERE).as_posix() for h in sorted((HERE / "native").glob("*.h"))],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
            optional=True,
        )
        for source in sorted((HERE / "native").glob("*.c"))
    ],
)
