"""HDFS ACLs and extended attributes in one plain form for both HDFS clients (``--preserve
acl,xattr``, DistCp ``-pa``/``-px``).

- an ACL is the list of its extended entries as ACL spec strings, as WebHDFS GETACLSTATUS and
  ``hdfs dfs -getfacl`` give them: ``user:bob:rwx``, ``group::r-x``, ``default:user:bob:r-x``
  (the base ``user::``/``other::`` entries are the permission bits, kept by ``perms``);
- extended attributes are a dict ``name -> value`` with values as ``0x`` hex strings (WebHDFS
  ``encoding=hex``), so they survive JSON and pickling. Names in the ``raw.`` namespace are
  left out, as DistCp does outside ``/.reserved/raw``.
"""

from __future__ import annotations

from typing import Any

SKIPPED_XATTR_NAMESPACES = ("raw.",)


def acl_spec(entry: Any) -> str:
    """An hdfs-native ``AclEntry`` as a spec string."""
    prefix = "default:" if entry.scope == "default" else ""
    return f"{prefix}{entry.type}:{entry.name or ''}:{entry.permissions}"


def acl_entries(spec: list[str]) -> list[Any]:
    """Spec strings as hdfs-native ``AclEntry`` objects."""
    from hdfs_native import AclEntry

    out = []
    for s in spec:
        parts = s.split(":")
        scope = "access"
        if parts[0] == "default":
            scope, parts = "default", parts[1:]
        if len(parts) != 3:
            raise ValueError(f"ACL entry {s!r}: expected [default:]type:name:perms")
        kind, name, perms = parts
        out.append(AclEntry(kind, scope, perms, name or None))
    return out


def keep_xattr(name: str) -> bool:
    return not name.startswith(SKIPPED_XATTR_NAMESPACES)
