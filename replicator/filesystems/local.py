"""Local (POSIX) file system: also the stand-in for an on-prem cluster in the demo."""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import Iterable
from typing import Any, BinaryIO
from urllib.parse import unquote

from replicator import native
from replicator.errors import SourceChangedError, SourceReadError, UsageError, on_side
from replicator.filesystems.base import (
    DIR,
    FILE,
    LINK,
    OTHER,
    Capabilities,
    FileInfo,
    FileSystem,
    Writer,
)

# Names are bytes on POSIX; Python shows bytes that are not UTF-8 as lone surrogates
# (surrogateescape), which no state store, JSON report or terminal takes. The engine only
# ever sees *text paths*: valid Unicode, the byte 0xXY of such a name written as ESC + "XY"
# and a literal ESC doubled, so the mapping is lossless both ways. Only the system calls
# below see the native form. ESC is U+10FFFD, a private-use code point.
ESC = "\U0010fffd"


def text_path(native: str) -> str:
    """A native path (maybe with surrogate escapes) as valid Unicode; see ESC."""
    if native.isascii():
        return native
    try:
        native.encode("utf-8")
        if ESC not in native:
            return native
    except UnicodeEncodeError:
        pass
    out = []
    for ch in native:
        if ch == ESC:
            out.append(ESC + ESC)
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"{ESC}{ord(ch) - 0xDC00:02X}")
        else:
            out.append(ch)
    return "".join(out)


def native_path(text: str) -> str:
    """The inverse of :func:`text_path`."""
    if text.isascii() or ESC not in text:
        return text
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch == ESC and i + 1 < n and text[i + 1] == ESC:
            out.append(ESC)
            i += 2
        elif ch == ESC and i + 2 < n and _is_hex(text[i + 1:i + 3]):
            out.append(chr(0xDC00 + int(text[i + 1:i + 3], 16)))
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _is_hex(two: str) -> bool:
    return len(two) == 2 and all(c in "0123456789ABCDEF" for c in two)


def has_byte_names(text: str) -> bool:
    """Whether a text path holds an escape (a name that is not UTF-8, or a literal ESC)."""
    return ESC in text


def shown(text: str) -> str:
    """A text path for people: non-UTF-8 bytes as \\xNN, as Python's repr shows them."""
    if ESC not in text:
        return text
    raw = os.fsencode(native_path(text))
    return raw.decode("utf-8", "backslashreplace")


def _info_from_stat(path: str, st: os.stat_result) -> FileInfo:
    if stat_mod.S_ISDIR(st.st_mode):
        kind = DIR
    elif stat_mod.S_ISLNK(st.st_mode):
        kind = LINK
    elif stat_mod.S_ISREG(st.st_mode):
        kind = FILE
    else:
        kind = OTHER  # FIFO, socket, device: never copied
    return FileInfo(
        path=path,
        kind=kind,
        size=st.st_size if kind == FILE else 0,
        mtime_ns=st.st_mtime_ns,
        mode=stat_mod.S_IMODE(st.st_mode),
        inode=(st.st_dev, st.st_ino),
    )


def _link_info(path: str, lst: os.stat_result) -> FileInfo:
    return _link_info_ns(path, lst.st_mtime_ns)


def _link_info_ns(path: str, link_mtime_ns: int) -> FileInfo:
    """:func:`_link_info` from the link's own mtime (what the compiled walker hands back)."""
    try:
        st = os.stat(native_path(path))
    except OSError:
        return FileInfo(path=path, kind=LINK, mtime_ns=link_mtime_ns, target_kind=None)
    target = _info_from_stat(path, st)
    return FileInfo(
        path=path,
        kind=LINK,
        size=target.size,
        mtime_ns=target.mtime_ns,
        mode=target.mode,
        target_kind=target.kind,
        inode=target.inode,
    )


def _scan_other(parent: str, name: str, st: os.stat_result) -> tuple:
    """:meth:`LocalFileSystem.scan_dir`'s tuple for an entry that is not a plain file."""
    fmt = st.st_mode & 0o170000
    if fmt == 0o040000:
        return (name, DIR, 0, st.st_mtime_ns, st.st_mode & 0o7777, (st.st_dev, st.st_ino), None)
    if fmt == 0o120000:
        return _scan_link(parent, name, st.st_mtime_ns)
    # FIFO, socket, device: never copied
    return (name, OTHER, 0, st.st_mtime_ns, st.st_mode & 0o7777, (st.st_dev, st.st_ino), None)


def _scan_link(parent: str, name: str, link_mtime_ns: int) -> tuple:
    """:func:`_scan_other`'s tuple for a symlink (its target stat'ed, not followed further)."""
    sep = "" if parent.endswith("/") else "/"
    info = _link_info_ns(parent + sep + name, link_mtime_ns)
    return (name, LINK, info.size, info.mtime_ns, info.mode, info.inode, info.target_kind)


_WALK_KINDS = (FILE, DIR, OTHER)


def open_regular(path: str, *, follow: bool = True) -> int:
    """Open a local source for reading without blocking: a FIFO put in a file's place since
    the listing would block ``open()`` forever (O_NONBLOCK returns at once; devices and
    sockets are refused the same way by the ``fstat`` check). Without ``follow`` a symlink
    put in the file's place is refused (O_NOFOLLOW). Raises SourceReadError."""
    return open_regular_stat(path, follow=follow)[0]


def open_regular_stat(path: str, *, follow: bool = True) -> tuple[int, os.stat_result]:
    """:func:`open_regular`, and the ``fstat`` of the open file it checked."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(native_path(path), flags if follow else flags | os.O_NOFOLLOW)
    except OSError as exc:
        if not follow and exc.errno == errno.ELOOP:
            raise SourceChangedError(f"cannot read {path}: replaced by a symlink since it was "
                                     f"listed, not followed (without --copy-links)") from exc
        raise on_side("source", path, exc) from exc
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise SourceReadError(f"cannot read {path}: not a regular file any more")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


_NEW_FILE = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create_new(path: str, mode: int = 0o666, *, readable: bool = False) -> int:
    """A descriptor of a file created afresh at ``path`` for writing (and reading, if
    ``readable``): whatever has that name (a stale staged file, or a symlink planted there)
    is removed first, never written through (O_TRUNC would truncate what a link points to).
    Raises FileNotFoundError when the directory is missing."""
    native = native_path(path)
    flags = _NEW_FILE | (os.O_RDWR if readable else os.O_WRONLY)
    for _ in range(3):
        try:
            return os.open(native, flags, mode)
        except FileExistsError:
            try:
                os.unlink(native)
            except FileNotFoundError:
                pass
    return os.open(native, flags, mode)


class _LocalWriter(Writer):
    def __init__(self, path: str) -> None:
        self.path = path
        self._f = os.fdopen(create_new(path), "wb")

    def write(self, data: bytes | memoryview) -> None:
        self._f.write(data)

    def close(self) -> None:
        self._f.close()

    def abort(self) -> None:
        self._f.close()
        try:
            os.unlink(native_path(self.path))
        except FileNotFoundError:
            pass


class LocalFileSystem(FileSystem):
    scheme = "file"
    capabilities = Capabilities(
        hash_kinds=(),
        mtime_precision_ns=1,
        atomic_rename=True,
        can_set_mtime=True,
        can_set_mode=True,
        directories=True,
        parallel_write=True,
        byte_names=True,
        host_paths=True,
        attributes=("owner", "group"),  # by name; setting them needs root
    )

    def __init__(self, **options: Any) -> None:
        self._options = dict(options)

    @classmethod
    def from_uri(cls, uri: str) -> tuple[FileSystem, str]:
        from replicator.filesystems._common import split_uri

        parts = split_uri(uri)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"file URI with a host is not supported: {uri}")
        return cls.from_path(unquote(parts.path) or "/")

    @classmethod
    def from_path(cls, path: str) -> tuple[FileSystem, str]:
        """A plain local path, taken as it is: no URI decoding (``run#1``, ``100%20``)."""
        return cls(), text_path(os.path.normpath(os.path.abspath(os.path.expanduser(path))))

    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def uri(self, path: str) -> str:
        return path

    def join(self, root: str, rel: str) -> str:
        if not rel:
            return root
        if rel[0] == "/":
            return rel  # as os.path.join (the engine's rel paths are never absolute)
        return root + rel if root[-1:] == "/" else root + "/" + rel

    def real_path(self, path: str) -> str:
        return text_path(os.path.realpath(native_path(path)))

    # metadata
    def list_dir(self, path: str) -> list[FileInfo]:
        out: list[FileInfo] = []
        with os.scandir(native_path(path)) as it:
            for entry in it:
                full = text_path(entry.path)
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished between readdir and stat
                if stat_mod.S_ISLNK(st.st_mode):
                    out.append(_link_info(full, st))
                else:
                    out.append(_info_from_stat(full, st))
        return out

    def scan_dir(self, path: str) -> list[tuple]:
        """Like :meth:`list_dir`, but plain tuples ``(name, kind, size, mtime_ns, mode, inode,
        target_kind)`` for the listing's hot loop (no FileInfo per entry). ``inode`` is only
        filled in for directories and symlinks, the only kinds loop detection looks at."""
        files, others = self.scan_rows(path, "")
        others.extend((name, FILE, size, mtime, mode, None, None)
                      for name, _k, size, mtime, mode, *_ in files)
        return others

    def scan_rows(self, path: str, prefix: str) -> tuple[list[tuple], list[tuple]]:
        """One directory in two lists: its plain files as listing rows ``(prefix + name, FILE,
        size, mtime_ns, mode, None, None, False)`` (the layout of
        :meth:`replicator.listing.Entry.row`, built once, no object per file) and everything
        else as :meth:`scan_dir` tuples. Each entry is stat'ed relative to the open directory
        (``fstatat``: the kernel does not walk the whole path again per file). With the
        compiled walker (native/fastwalk.c) the directory is read and stat'ed in C, the
        interpreter lock released, and the lists come in name order."""
        walker = native.fastwalk()
        if walker is not None:
            files, others, links = walker.scan_rows(native_path(path), prefix, text_path,
                                                    _WALK_KINDS)
            if links:
                others.extend(_scan_link(path, name, mtime) for name, mtime in links)
            return files, others
        return self._scan_rows_py(path, prefix)

    def _scan_rows_py(self, path: str, prefix: str) -> tuple[list[tuple], list[tuple]]:
        """:meth:`scan_rows` in Python (no compiled walker, or ``REPLICATOR_NATIVE=0``)."""
        files: list[tuple] = []
        others: list[tuple] = []
        append = files.append
        fd = os.open(native_path(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    name = entry.name
                    if not name.isascii():
                        name = text_path(name)
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # vanished between readdir and stat
                    mode = st.st_mode
                    if mode & 0o170000 == 0o100000:  # the common case first
                        append((prefix + name, FILE, st.st_size, st.st_mtime_ns, mode & 0o7777,
                                None, None, False))
                    else:
                        others.append(_scan_other(path, name, st))
        finally:
            os.close(fd)
        return files, others

    def stat(self, path: str) -> FileInfo | None:
        try:
            st = os.lstat(native_path(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat_mod.S_ISLNK(st.st_mode):
            return _link_info(path, st)
        return _info_from_stat(path, st)

    # data
    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        f = os.fdopen(open_regular(path), "rb", buffering=0)  # never blocks on a FIFO
        if offset:
            f.seek(offset)
        return f  # type: ignore[return-value]

    def open_write(
        self, path: str, *, mtime_ns: int | None = None, expect_version: str | None = None
    ) -> Writer:
        os.makedirs(native_path(os.path.dirname(path)), exist_ok=True)
        return _LocalWriter(path)

    # namespace
    def makedirs(self, path: str) -> None:
        os.makedirs(native_path(path), exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        os.replace(native_path(src), native_path(dst))

    def delete_file(self, path: str) -> None:
        try:
            os.unlink(native_path(path))
        except FileNotFoundError:
            pass

    def delete_dir(self, path: str) -> None:
        try:
            os.rmdir(native_path(path))
        except (FileNotFoundError, OSError):
            pass

    def set_times(self, path: str, mtime_ns: int) -> None:
        os.utime(native_path(path), ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def set_mode(self, path: str, mode: int) -> None:
        os.chmod(native_path(path), mode)

    def attributes(self, path: str, kinds: frozenset[str] | None = None) -> dict[str, Any]:
        import grp
        import pwd

        st = os.lstat(native_path(path))
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        return {"owner": owner, "group": group}

    def set_attributes(self, path: str, attrs: dict[str, Any]) -> None:
        import shutil

        from replicator.errors import FatalError

        owner, group = attrs.get("owner"), attrs.get("group")
        if not (owner or group):
            return
        try:  # names (HDFS owners are names); an all-digit name is taken as an id
            shutil.chown(native_path(path), user=_id_or_name(owner), group=_id_or_name(group))
        except LookupError as exc:
            raise FatalError(f"chown {path}: {exc} on this machine") from None
        except PermissionError as exc:
            raise FatalError(f"chown {path}: {exc} (keeping owner/group needs root)") from None

    # ranges: a preallocated temporary written at offsets by several workers
    def begin_parallel_write(self, path: str, size: int, mtime_ns: int | None = None) -> dict:
        os.makedirs(native_path(os.path.dirname(path)), exist_ok=True)
        fd = create_new(path, 0o644)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        return {"path": path, "size": size}

    def write_part(self, handle: dict, index: int, offset: int, chunks: Iterable[bytes]) -> dict:
        fd = os.open(native_path(handle["path"]), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        written = 0
        try:
            for data in chunks:
                view = memoryview(data)
                while view:
                    n = os.pwrite(fd, view, offset + written)
                    written += n
                    view = view[n:]
        finally:
            os.close(fd)
        return {"index": index, "offset": offset, "size": written}

    def complete_parallel_write(self, handle: dict, parts: list[dict]) -> None:
        total = sum(p["size"] for p in parts)
        if total != handle["size"]:
            self.abort_parallel_write(handle)
            raise OSError(f"parallel write of {handle['path']} wrote {total} of {handle['size']} bytes")

    def abort_parallel_write(self, handle: dict) -> None:
        self.delete_file(handle["path"])


def _id_or_name(value: str | None) -> str | int | None:
    return int(value) if value and value.isdigit() else value
