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
    "gs": "replicator.filesystems.gcs:GCSFileSystem",
    "s3": "replicator.filesystems.s3:S3FileSystem",
    "ftp": "replicator.filesystems.ftp:FTPFileSystem",
    "ftps": "replicator.filesystems.ftp:FTPFileSystem",
    "sftp": "replicator.filesystems.sftp:SFTPFileSystem",
    "hdfs": "replicator.filesystems.hdfs:HDFSFileSystem",
    "webhdfs": "replicator.filesystems.webhdfs:WebHDFSFileSystem",
    "swebhdfs": "replicator.filesystems.webhdfs:WebHDFSFileSystem",
}
_REMOTE = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*):(?!//)(.*)$")
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


def remotes_file() -> str:
    """``REPLICATOR_REMOTES`` or ``~/.config/replicator/remotes.yaml`` (read when used)."""
    return os.environ.get("REPLICATOR_REMOTES") or os.path.join(
        os.path.expanduser("~"), ".config", "replicator", "remotes.yaml")


def load_remotes(path: str | None = None) -> dict[str, dict[str, Any]]:
    """Named file systems, like rclone remotes::

        remotes:
          lake:                       # used as  lake:/table/dt=2026-11-20
            type: gs                  # a scheme of this registry
            root: my-bucket/warehouse # prepended to every path (optional)
            endpoint: http://127.0.0.1:4443      # other keys: the back end's options
          dropzone:
            type: sftp
            host: sftp.example.com
            username: etl
            password: ${DROPZONE_PASSWORD}       # ${VAR} is read from the environment

    The ``remotes:`` level is optional. A missing file means no remotes.
    """
    import yaml

    path = path or remotes_file()
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read remotes: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("remotes"), dict):
        data = data["remotes"]
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of remote names")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in data.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise UsageError(f"{path}: remotes.{name}: expected a mapping with a 'type' (a scheme)")
        out[str(name)] = {k: _expand(v) for k, v in spec.items()}
    return out


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return os.path.expandvars(value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def _resolve_remote(name: str, rest: str, spec: dict[str, Any]) -> tuple[FileSystem, str]:
    spec = dict(spec)
    scheme = spec.pop("type")
    root = str(spec.pop("root", "") or "")
    cls = get_filesystem_class(scheme)
    try:
        fs = cls(**spec)
    except TypeError as exc:
        raise UsageError(f"remote {name!r}: bad options for {scheme}: {exc}") from None
    rel = rest.strip("/")
    if not cls.capabilities.directories and cls.scheme in ("gs", "s3"):
        base = root.strip("/")  # object stores: "bucket/prefix"
        if not base:
            return fs, rel
        return fs, f"{base}/{rel}" if rel else base
    base = "/" + root.strip("/") if root else ""
    return fs, (f"{base}/{rel}" if rel else base) or "/"


def resolve(uri: str) -> tuple[FileSystem, str]:
    """Return ``(filesystem, native_root)`` for a URI, a named remote or a local path."""
    if not uri:
        raise UsageError("empty path")
    m = _REMOTE.match(uri)
    if m and "://" not in uri:
        remotes = load_remotes()
        if m.group(1) in remotes:
            return _resolve_remote(m.group(1), m.group(2), remotes[m.group(1)])
        if m.group(1).lower() in set(known_schemes()) - {"file"}:
            # "hdfs:data/x" is neither a URI nor a remote: refuse it rather than copy into a
            # local directory named "hdfs:data"
            scheme = m.group(1).lower()
            raise UsageError(f"{uri}: a {scheme} URI needs '//' and an absolute path, e.g. "
                             f"{scheme}://host/path (or define a remote named {m.group(1)!r})")
    scheme, _ = split_scheme(uri)
    if scheme == "file" and not uri.startswith("file://"):
        # a plain path is no URI: '#', '?' and '%' are part of its name
        return get_filesystem_class("file").from_path(uri)  # type: ignore[attr-defined]
    return get_filesystem_class(scheme).from_uri(uri)
