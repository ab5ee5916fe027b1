"""The compiled local walker (native/fastwalk.c) gives exactly the Python path's rows and
errors: LocalFileSystem.scan_rows with and without it, one directory and a whole listing."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from replicator import native
from replicator.filesystems.local import LocalFileSystem, native_path, text_path
from replicator.filters import Filter
from replicator.listing import ListingStats, walk


def _odd_tree(root: Path) -> Path:
    """Files, directories, symlinks (to a file, a directory, nowhere, themselves), a FIFO,
    a socket, names that are not UTF-8, hold the escape character or need quoting."""
    raw = os.fsencode(root)
    os.makedirs(raw + b"/src/sub/deeper")
    src = raw + b"/src"
    names = [b"plain.txt", b"caf\xc3\xa9.txt", b"latin1-\xe9.bin", b"\xff\xfe", b"esc-\xf4\x8f\xbf\xbd",
             b"new\nline", b" lead space", b"z" * 200, b"~tmp", b"a.part", b"UPPER", b"0"]
    for i, name in enumerate(names):
        with open(src + b"/" + name, "wb") as f:
            f.write(b"x" * i)
        os.utime(src + b"/" + name, ns=(1, 1_700_000_000_123_456_789 + i))
    os.chmod(src + b"/plain.txt", 0o4751)  # setuid and odd bits: mode & 0o7777
    with open(src + b"/old", "wb"):
        pass
    os.utime(src + b"/old", ns=(1, -1_500_000_001))  # before 1970: negative nanoseconds
    with open(src + b"/far", "wb"):
        pass
    try:
        os.utime(src + b"/far", ns=(1, 10**19 + 7))  # past 2262: beyond int64 nanoseconds
    except OSError:
        pass
    for i in range(300):  # more than one readdir buffer's worth
        with open(src + b"/sub/f%04d" % i, "wb") as f:
            f.write(b"y" * (i % 7))
    os.mkdir(src + b"/dir-\xe9")
    os.mkfifo(src + b"/fifo")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(os.fsdecode(src + b"/sock"))
    except OSError:
        pass
    finally:
        sock.close()
    os.symlink(b"plain.txt", src + b"/link-file")
    os.symlink(b"sub", src + b"/link-dir")
    os.symlink(b"nowhere", src + b"/link-dangling")
    os.symlink(b"link-self", src + b"/link-self")
    os.symlink(b"latin1-\xe9.bin", src + b"/link-\xe9")
    return Path(os.fsdecode(src))


def _both(monkeypatch, fn):
    monkeypatch.setenv(native.ENV, "0")
    py = fn()
    monkeypatch.setenv(native.ENV, "1")
    c = fn()
    return py, c


def _scan(fs: LocalFileSystem, path: str, prefix: str):
    files, others = fs.scan_rows(path, prefix)
    return sorted(files), sorted(others)


def test_scan_rows_in_c_equals_the_python_loop(tmp_path: Path, fastwalk, monkeypatch) -> None:
    src = _odd_tree(tmp_path)
    fs = LocalFileSystem()
    checked = 0
    for dirpath, _dirs, _files in os.walk(os.fsencode(src)):
        path = text_path(os.fsdecode(dirpath))
        for prefix in ("", "some/prefix/", "caf\u00e9/"):
            py, c = _both(monkeypatch, lambda: _scan(fs, path, prefix))  # noqa: B023
            assert c == py, path
            checked += 1
    assert checked == 12  # src, sub, deeper, dir-é; three prefixes each
    files, others = fs.scan_rows(text_path(str(src)), "")
    names = {r[0] for r in files} | {r[0] for r in others}
    assert text_path(os.fsdecode(b"latin1-\xe9.bin")) in names
    assert text_path(os.fsdecode(b"esc-\xf4\x8f\xbf\xbd")) in names  # a literal ESC, doubled
    assert "caf\u00e9.txt" in names
    kinds = {r[0]: r[1] for r in others}
    assert kinds["fifo"] == "o" and kinds["sub"] == "d" and kinds["link-dir"] == "l"
    assert {r[0]: r[4] for r in files}["plain.txt"] == 0o4751
    assert [r[0] for r in files] == sorted(r[0] for r in files)  # in name order already


def test_scan_dir_and_a_whole_listing_are_the_same_with_and_without_c(
        tmp_path: Path, fastwalk, monkeypatch) -> None:
    src = _odd_tree(tmp_path)
    fs = LocalFileSystem()
    root = text_path(str(src))
    py, c = _both(monkeypatch, lambda: sorted(fs.scan_dir(root)))
    assert c == py and len(c) > 20

    def listing(copy_links: bool):
        return [list(b) for b in walk(fs, root, Filter(), workers=0, ordered=True, rows=True,
                                      copy_links=copy_links)]

    for copy_links in (False, True):
        py, c = _both(monkeypatch, lambda: listing(copy_links))  # noqa: B023
        assert c == py
        assert sum(map(len, c)) > 300


@pytest.mark.parametrize("what", ["missing", "a file", "under a file"])
def test_scan_rows_raises_the_python_paths_oserror(tmp_path: Path, fastwalk, monkeypatch,
                                                   what: str) -> None:
    # tests run as root, which reads a mode-000 directory: a directory that is not there
    # (vanished since its parent was listed) or is not a directory stands in for the error
    (tmp_path / "f").write_bytes(b"x")
    path = {"missing": tmp_path / "gone\udce9", "a file": tmp_path / "f",
            "under a file": tmp_path / "f" / "x"}[what]
    fs = LocalFileSystem()
    errors = []
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV, flag)
        with pytest.raises(OSError) as caught:
            fs.scan_rows(text_path(str(path)), "p/")
        errors.append(caught.value)
    py, c = errors
    assert type(c) is type(py)
    assert (c.errno, c.strerror, c.filename) == (py.errno, py.strerror, py.filename)
    assert c.filename == native_path(text_path(str(path)))


def test_an_unlistable_subdirectory_is_reported_the_same(tmp_path: Path, fastwalk,
                                                         monkeypatch) -> None:
    """A subdirectory replaced by a file after its parent was read: the listing reports it
    and goes on, the same with or without the compiled walker."""
    src = _odd_tree(tmp_path)
    fs = LocalFileSystem()
    real = LocalFileSystem.scan_rows

    def swapping(self, path, prefix):
        out = real(self, path, prefix)
        deeper = os.path.join(str(src), "sub", "deeper")
        if path.endswith("/sub") and os.path.isdir(deeper):
            os.rmdir(deeper)
            Path(deeper).write_bytes(b"now a file")
        return out

    monkeypatch.setattr(LocalFileSystem, "scan_rows", swapping)
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV, flag)
        deeper = src / "sub" / "deeper"
        if deeper.is_file():
            deeper.unlink()
            deeper.mkdir()
        stats = ListingStats()
        seen: list[tuple] = []
        rows = [list(b) for b in walk(fs, text_path(str(src)), Filter(), workers=0,
                                      ordered=True, rows=True, stats=stats,
                                      on_error=lambda rel, exc: seen.append(  # noqa: B023
                                          (rel, type(exc), getattr(exc, "errno", None),
                                           str(exc))))]
        # a directory's mtime changes as its child is swapped back: not compared
        rows = [[r if r[1] != "d" else (*r[:3], None, *r[4:]) for r in b] for b in rows]
        results.append((rows, seen, stats))
    assert results[0] == results[1]
    assert results[1][1] and results[1][1][0][0] == "sub/deeper"
    assert results[1][2].errors == 1


_PROBE = """
import sys
from replicator.filesystems.local import LocalFileSystem
try:
    print(sorted(LocalFileSystem().scan_rows(sys.argv[1], "p/")[0]))
except OSError as e:
    print(type(e).__name__, e.errno, e.strerror, repr(e.filename))
"""


@pytest.mark.parametrize("mode", [0o000, 0o644])  # not readable; readable, not searchable
def test_an_unreadable_directory_raises_the_same_as_another_user(tmp_path: Path, fastwalk,
                                                                 mode: int) -> None:
    """Root reads any directory, so the permission errors are checked as nobody (setpriv):
    open() refused (mode 000: the path), or fstatat() refused on an entry of a directory
    that can be read but not searched (mode 644: the entry's name)."""
    import shutil
    import subprocess
    import sys

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run the probe as another user")
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="walker-perm-"))  # pytest's tmp_path is root's alone
    try:
        os.chmod(top, 0o755)
        (top / "d").mkdir()
        (top / "d" / "a").write_bytes(b"x")
        os.chmod(top / "d", mode)
        repo = str(Path(__file__).resolve().parents[2])
        out = []
        for flag in ("0", "1"):
            env = {**os.environ, native.ENV: flag, "PYTHONPATH": repo}
            run = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                                  sys.executable, "-c", _PROBE, str(top / "d")],
                                 env=env, capture_output=True, text=True, timeout=60)
            if run.returncode != 0 and "Permission denied" in run.stderr and not run.stdout:
                pytest.skip(f"nobody cannot run the probe here: {run.stderr.strip()[-200:]}")
            assert run.returncode == 0, run.stderr
            out.append(run.stdout)
    finally:
        os.chmod(top / "d", 0o755)
        shutil.rmtree(top)
    py, c = out
    assert c == py
    assert c.startswith("PermissionError 13 ")
    assert c.strip().endswith("'a'" if mode == 0o644 else repr(str(top / "d")))
