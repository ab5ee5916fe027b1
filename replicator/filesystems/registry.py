"""Lazy registry of back ends by URI scheme (fsspec ``registry.py``).

Importing the engine imports no back end; a back end's module (and its client
library) is imported the first time its scheme is used.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from replicator.errors import UsageError
from replicator.filesystems.base import FileSystem

_KNOWN: dict[str, str] = {
    "file": "replicator.filesystems.local:LocalFileSystem",
}
_loaded: dict[str, type[FileSystem]] = {}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def register(scheme: str, target: str | type[FileSystem]) -> None:
    """Register a back end: a class, or ``"module:Class"`` imported on first use."""
    if isinstance(target, str):
        _KNOWN[scheme] = target
        _loaded.pop(scheme, None)
    else:
        _loaded[scheme] = target


def known_schemes() -> list[str]:
    return sorted(set(_KNOWN) | set(_loaded))


def get_filesystem_class(scheme: str) -> type[FileSystem]:
    if scheme in _loaded:
        return _loaded[scheme]
    target = _KNOWN.get(scheme)
    if target is None:
        raise UsageError(
            f"unknown scheme {scheme!r}: expected one of {', '.join(known_schemes())}"
        )
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    _loaded[scheme] = cls
    return cls


def filesystem_from_options(scheme: str, options: dict[str, Any]) -> FileSystem:
    """Rebuild a file system from :meth:`FileSystem.options` (used by ``pickle``)."""
    return get_filesystem_class(scheme)(**options)


def split_scheme(uri: str) -> tuple[str, str]:
    """``("gs", "bucket/x")`` for ``gs://bucket/x``; plain paths are ``file``."""
    m = _SCHEME.match(uri)
    if not m:
        return "file", uri
    return m.group(1).lower(), uri[m.end():]


def resolve(uri: str) -> tuple[FileSystem, str]:
    """Return ``(filesystem, native_root)`` for a URI or a local path."""
    if not uri:
        raise UsageError("empty path")
    scheme, _ = split_scheme(uri)
    if scheme == "file" and not uri.startswith("file://"):
        uri = "file://" + os.path.abspath(os.path.expanduser(uri))
    return get_filesystem_class(scheme).from_uri(uri)
