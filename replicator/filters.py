"""Which names a listing keeps: include/exclude globs, names of files still being
written by other tools, and our own temporary names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

TEMP_PREFIX = ".rtmp-"  # our staged files: ".rtmp-<run>-<name>"

# Files other writers are still producing, and Hadoop job scratch directories.
SKIP_FILE_PATTERNS = ("*._COPYING_", "*.tmp", "*.crc.tmp", "*.inprogress", ".rtmp-*")
SKIP_DIR_NAMES = frozenset({"_temporary", ".staging", "_COPYING_"})


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


def is_temporary_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) or any(
        glob_to_regex(p).match(name) for p in SKIP_FILE_PATTERNS
    )


@dataclass(frozen=True)
class Filter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_temporary: bool = True

    def keep_file(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        if self.skip_temporary and is_temporary_name(name):
            return False
        if any(_match(p, rel) for p in self.exclude):
            return False
        if self.include:
            return any(_match(p, rel) for p in self.include)
        return True

    def keep_dir(self, rel: str) -> bool:
        """Whether to descend into a directory (excludes prune; includes never do)."""
        name = rel.rsplit("/", 1)[-1]
        if self.skip_temporary and (name in SKIP_DIR_NAMES or name.startswith(TEMP_PREFIX)):
            return False
        return not any(_match(p, rel) for p in self.exclude)

    def keep_empty_dir(self, rel: str) -> bool:
        """Whether an empty directory is part of the tree (with includes, only if one matches it)."""
        if not self.keep_dir(rel):
            return False
        if self.include:
            return any(_match(p, rel) for p in self.include)
        return True
