"""Which names a listing keeps: include/exclude globs and regular expressions, names of
files still being written by other tools, and our own temporary names.

Regular expressions (``--include-regex`` / ``--exclude-regex``) are Python ``re`` patterns
*searched* (not anchored) in the path relative to the root, ``/``-separated, as CDAP's
path regex filter and ``grep`` do: anchor with ``^`` and ``$`` to match a whole path.
A directory is tested with a trailing ``/`` (``^logs/`` leaves out the directory
``logs`` itself); directories are never pruned by a regex, only the files are tested, so
``^a/$`` cannot hide ``a/x``. Excludes (glob or regex) win over includes; with any
include (glob or regex) a file must match at least one of them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from replicator.errors import UsageError

TEMP_PREFIX = ".rtmp-"  # our staged files: ".rtmp-<run>-<name>"

# Files other writers are still producing, and Hadoop job scratch directories.
SKIP_FILE_PATTERNS = ("*._COPYING_", "*.tmp", "*.crc.tmp", "*.inprogress", ".rtmp-*",
                      ".distcp.tmp.*")  # DistCp's own temporaries
# ".replicator-parts": our own part objects of parallel writes to GCS (never data)
SKIP_DIR_NAMES = frozenset({"_temporary", ".staging", "_COPYING_", ".replicator-parts"})


@lru_cache(maxsize=512)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob (``*`` within a name, ``**`` across directories, ``?``, ``[..]``)."""
    i, n, out = 0, len(pattern), []
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern[i : i + 3] == "**/":
                out.append("(?:.*/)?")
                i += 3
                continue
            if pattern[i : i + 2] == "**":
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append(f"[{'^' if negate else ''}{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _match(pattern: str, rel: str) -> bool:
    """A pattern with no ``/`` matches the base name anywhere; otherwise the whole path."""
    if "/" not in pattern.rstrip("/"):
        return bool(glob_to_regex(pattern.rstrip("/")).match(rel.rsplit("/", 1)[-1]))
    return bool(glob_to_regex(pattern.lstrip("/").rstrip("/")).match(rel))


@lru_cache(maxsize=1)
def _temporary_regex() -> re.Pattern[str]:
    """``SKIP_FILE_PATTERNS`` as one regex (each alternative is anchored at both ends)."""
    return re.compile("|".join(f"(?:{glob_to_regex(p).pattern})" for p in SKIP_FILE_PATTERNS), re.DOTALL)


def is_temporary_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) or _temporary_regex().match(name) is not None


def compile_regex(pattern: str, flag: str = "--include-regex/--exclude-regex") -> re.Pattern[str]:
    """Compile a path regex; a malformed one is a UsageError naming the flag and the pattern."""
    if not pattern:
        raise UsageError(f"{flag}: empty pattern")
    try:
        return _compiled(pattern)
    except re.error as exc:
        raise UsageError(f"{flag}: not a valid regular expression {pattern!r}: {exc}") from None


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


@dataclass(frozen=True)
class Filter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_temporary: bool = True
    include_regex: tuple[str, ...] = ()
    exclude_regex: tuple[str, ...] = ()

    @property
    def selective(self) -> bool:
        """Whether any include or exclude (glob or regex) is set."""
        return bool(self.include or self.exclude or self.include_regex or self.exclude_regex)

    def _excluded_by_regex(self, text: str) -> bool:
        return any(_compiled(p).search(text) for p in self.exclude_regex)

    def _included(self, rel: str, text: str) -> bool:
        if not (self.include or self.include_regex):
            return True
        return (any(_match(p, rel) for p in self.include)
                or any(_compiled(p).search(text) for p in self.include_regex))

    def keep_file(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        if self.skip_temporary and is_temporary_name(name):
            return False
        if any(_match(p, rel) for p in self.exclude) or self._excluded_by_regex(rel):
            return False
        return self._included(rel, rel)

    def keep_dir(self, rel: str) -> bool:
        """Whether to descend into a directory (excludes prune; includes never do)."""
        name = rel.rsplit("/", 1)[-1]
        if self.skip_temporary and (name in SKIP_DIR_NAMES or name.startswith(TEMP_PREFIX)):
            return False
        return not any(_match(p, rel) for p in self.exclude)

    def keep_empty_dir(self, rel: str) -> bool:
        """Whether an empty directory is part of the tree (with includes, only if one matches it)."""
        if not self.keep_dir(rel) or self._excluded_by_regex(rel + "/"):
            return False
        return self._included(rel, rel + "/")
