"""The optional compiled parts (``native/*.c``, built by setup.py as ``replicator._<stem>``)
and the one place the engine asks for them.

A machine without a C compiler still installs the project (the extensions are optional):
then every ``module()`` answer is None and the engine takes its pure-Python paths, which do
the same work. ``REPLICATOR_NATIVE=0`` forces those paths on a machine that has the build
(read when asked, not at import: a test or a run may set it late).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

ENV = "REPLICATOR_NATIVE"
_missing = object()
_loaded: dict[str, ModuleType | object] = {}


def built(stem: str) -> ModuleType | None:
    """``replicator._<stem>`` if it was built and imports, else None (whatever the switch)."""
    found = _loaded.get(stem)
    if found is None:
        try:
            found = importlib.import_module(f"replicator._{stem}")
        except ImportError:
            found = _missing
        _loaded[stem] = found
    return None if found is _missing else found  # type: ignore[return-value]


def enabled() -> bool:
    """False when ``REPLICATOR_NATIVE`` is set to 0 / false / no / off."""
    return os.environ.get(ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def module(stem: str) -> ModuleType | None:
    """``replicator._<stem>`` for the engine to use, or None: not built, or switched off."""
    return built(stem) if enabled() else None


def fastcopy() -> ModuleType | None:
    """The small-file copy loop and CRC32C (native/fastcopy.c), or None."""
    return module("fastcopy")


def fastwalk() -> ModuleType | None:
    """One local directory's listing rows (native/fastwalk.c), or None."""
    return module("fastwalk")
