"""DistCp executor: the engine lists, diffs and plans; real ``hadoop distcp`` moves the bytes.

The plan's files (and only those) go to DistCp as its ``-f`` listing, one absolute,
percent-encoded source URI a line. DistCp's own ``-f`` listing roots every file at its
parent directory (``a/b/x`` would land as ``target/x``) and globs each line, so the job runs
with ``distcp.copy.listing.class`` set to ``ReplicatorCopyListing`` (``java/``, compiled
once against the Hadoop jars in use and cached under ``~/.cache/replicator/java``): it reads
the same ``-f`` file and keys each file by its path under the source root. DistCp's
mapper and committer are untouched: each file is written to a ``.distcp.tmp.*`` name next
to the target and renamed into place (no ``-direct`` on file systems with rename; object
stores get ``-direct``: the object appears whole on close), with ``-overwrite`` (the plan
has already decided), ``-i -log DIR`` (one bad file fails alone; its ``FAIL:`` line names
it), ``-p`` letters from ``--preserve``, ``-m`` from ``--workers`` and ``-bandwidth``
(per map in DistCp: our total divided by the maps).

After the job, every planned file is checked by the driver: size, then the CRC32C of the
destination (the store's own, e.g. HDFS COMPOSITE-CRC32C, else read) against the
source's (likewise), and the source must still be the file that was planned. Only files
that pass are published to the manifest; DistCp's counters and job id go into the report
(``executor_details``).

Where it runs: the local MapReduce runner in a child JVM (default; heap ``heap``, 512m),
or whatever cluster the Hadoop configuration names: ``hadoop_conf_dir`` (default
``$HADOOP_CONF_DIR``) goes first on the classpath, so a ``mapred-site.xml`` with
``mapreduce.framework.name=yarn`` submits to YARN (then ``log_dir`` must be a URI the
driver can read, e.g. ``hdfs://nn/tmp/distcp-logs``). The jars: ``classpath`` (default
``$REPLICATOR_HADOOP_CLASSPATH``, else ``hadoop classpath`` when ``hadoop`` is on PATH).
Nothing here starts a JVM at import.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import posixpath
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from replicator import checksum as crc
from replicator.errors import FatalError, UsageError, describe
from replicator.executors.base import Executor
from replicator.filesystems.base import FILE, FileSystem
from replicator.options import MiB
from replicator.transfer import Outcome, StageContext, Task

log = logging.getLogger("replicator")

DISTCP_MAIN = "org.apache.hadoop.tools.DistCp"
LISTING_CLASS = "replicator.distcp.ReplicatorCopyListing"
JAVA_SOURCE = Path(__file__).parent / "java" / "ReplicatorCopyListing.java"
# DistCp -p letters for our --preserve kinds (DistCpOptions.FileAttribute)
PRESERVE_LETTERS = {"replication": "r", "blocksize": "b", "owner": "u", "group": "g",
                    "perms": "p", "checksumtype": "c", "acl": "a", "xattr": "x", "times": "t"}
OBJECT_STORE_SCHEMES = frozenset({"gs", "s3a", "s3", "abfs", "abfss", "wasb", "wasbs"})
HADOOP_SCHEMES = {"s3": "s3a"}  # our scheme -> Hadoop's FileSystem scheme
# composite CRCs do not depend on block or chunk sizes: DistCp's own check compares them
BASE_PROPERTIES = {"dfs.checksum.combine.mode": "COMPOSITE_CRC"}
LOG4J = """log4j.rootLogger=WARN,stderr
log4j.logger.org.apache.hadoop.mapreduce.Job=INFO
log4j.logger.org.apache.hadoop.tools.DistCp=INFO
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=%p %c{1}: %m%n
"""
_SCHEME_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(//[^/]*)?")
_PROP_KEY = re.compile(r"[A-Za-z0-9_.:-]+")


# ---------------------------------------------------------------------------- flags
def preserve_flag(preserve: frozenset[str] | set[str]) -> str | None:
    """``-p`` with the DistCp letters of ``preserve`` (None when nothing is preserved)."""
    unknown = set(preserve) - set(PRESERVE_LETTERS)
    if unknown:
        raise UsageError(f"distcp cannot preserve {', '.join(sorted(unknown))}")
    letters = "".join(letter for kind, letter in PRESERVE_LETTERS.items() if kind in preserve)
    return f"-p{letters}" if letters else None


def distcp_tuning_args(workers: int, bandwidth_mbps: float | None,
                       preserve: frozenset[str] | set[str]) -> list[str]:
    """The flags our copy options map to: ``-p...``, ``-m``, ``-bandwidth`` (per map in
    DistCp, so our total MiB/s is divided by the maps)."""
    args: list[str] = []
    flag = preserve_flag(preserve)
    if flag:
        args.append(flag)
    args += ["-m", str(workers)]
    if bandwidth_mbps:
        args += ["-bandwidth", f"{bandwidth_mbps / workers:.6g}"]
    return args


def hadoop_uri(fs: FileSystem, path: str) -> str:
    """The URI Hadoop's ``Path(URI)`` reads back as exactly ``path`` (percent-encoded)."""
    if fs.scheme == "file":
        return "file://" + quote(path)
    raw = fs.uri(path)
    scheme, _, rest = raw.partition("://")
    authority, _, tail = rest.partition("/")
    return f"{HADOOP_SCHEMES.get(scheme, scheme)}://{authority}/{quote(tail)}"


def hadoop_path_arg(fs: FileSystem, path: str) -> str:
    """``path`` as a command-line argument DistCp reads back as exactly ``path``: DistCp parses
    its target with ``new Path(String)``, which quotes every ``%`` instead of decoding it, so the
    argument is the raw URI (a percent-encoded ``dt%3D1`` would be written as a directory named
    ``dt%3D1``)."""
    if fs.scheme == "file":
        return "file://" + path
    scheme, sep, rest = fs.uri(path).partition("://")
    return f"{HADOOP_SCHEMES.get(scheme, scheme)}{sep}{rest}"


def parse_counters(text: str) -> dict[str, dict[str, int]]:
    """The job counters Hadoop's ``Job`` prints at the end (``Counters: N`` then groups)."""
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.search(r"\bCounters: \d+\s*$", line):
            group: dict[str, int] | None = None
            for row in lines[i + 1:]:
                if row.startswith("\t\t") and group is not None and "=" in row:
                    name, _, value = row.strip().rpartition("=")
                    with contextlib.suppress(ValueError):
                        group[name] = int(value)
                elif row.startswith("\t") and not row.startswith("\t\t"):
                    group = out.setdefault(row.strip(), {})
                else:
                    break
    return out


def path_part(uri: str) -> str:
    """``/a/b`` of ``hdfs://nn:8020/a/b`` or ``file:/a/b`` (Hadoop prints both forms)."""
    return _SCHEME_AUTHORITY.sub("", uri, count=1)


def parse_failures(text: str, by_path: Mapping[str, str], *, marker: str = "FAIL: ",
                   separator: str = " - ") -> dict[str, str]:
    """``FAIL: <path> - <exception>`` lines of DistCp's ``-log`` output (or, with another
    ``marker``/``separator``, the mapper's ``Failure in copying <path> to <target>`` log
    line, whose exception follows on the next line) -> {rel: error}. ``by_path`` maps each
    source's absolute path (as Hadoop prints it, decoded) to its rel."""
    out: dict[str, str] = {}
    for block in re.split(f"(?m)^(?={re.escape(marker)})", text):
        if not block.startswith(marker):
            continue
        body = block[len(marker):]
        found = None  # the longest known path followed by the separator (names may hold it)
        start = 0
        while (cut := body.find(separator, start)) >= 0:
            rel = by_path.get(path_part(body[:cut]))
            if rel is not None:
                found = (rel, body[cut + len(separator):])
            start = cut + len(separator)
        if found is None:
            continue
        lines = []
        for n, ln in enumerate(found[1].strip().splitlines()):
            if n and re.match(r"^(INFO|WARN|ERROR|DEBUG|FATAL) ", ln):
                break  # the next log record
            lines.append(ln)
        # the deepest cause names the real problem ("File copy failed" wraps it)
        causes = [ln.strip().removeprefix("Caused by: ") for ln in lines[1:]
                  if ln.strip().startswith("Caused by: ")]
        if causes:
            reason = causes[-1]
        elif separator == " - ":
            reason = lines[0] if lines else "copy failed"
        else:  # the first line names the target; the exception follows
            found_exc = [ln.strip() for ln in lines[1:]
                         if re.match(r"^[\w.$]+(Exception|Error)\b", ln.strip())]
            reason = found_exc[0] if found_exc else "copy failed"
        out.setdefault(found[0], "distcp: " + reason)
    return out


# ---------------------------------------------------------------------------- the JVM side
def resolve_classpath(option: str | None = None) -> str:
    cp = option or os.environ.get("REPLICATOR_HADOOP_CLASSPATH")
    if cp:
        return cp
    hadoop = shutil.which("hadoop")
    if hadoop:
        proc = subprocess.run([hadoop, "classpath"], capture_output=True, text=True, timeout=120)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    raise UsageError("--executor distcp needs the Hadoop jars (hadoop-client-api/-runtime and "
                     "hadoop-distcp): set REPLICATOR_HADOOP_CLASSPATH (in this repository: "
                     "`python -m scripts.maven fetch hadoop` prints one) or put `hadoop` on PATH")


def _java(option: str | None) -> str:
    if option:
        return option
    home = os.environ.get("JAVA_HOME")
    if home and os.path.exists(os.path.join(home, "bin", "java")):
        return os.path.join(home, "bin", "java")
    found = shutil.which("java")
    if not found:
        raise UsageError("--executor distcp needs Java (java on PATH or JAVA_HOME)")
    return found


def listing_classes(classpath: str, java: str) -> str:
    """The compiled ``ReplicatorCopyListing``: a directory to put on the classpath.
    Compiled once per (source, jar names) into ``$XDG_CACHE_HOME/replicator/java`` (default
    ``~/.cache``); two runs at once each compile into a temporary directory and the first
    rename wins."""
    source = JAVA_SOURCE.read_bytes()
    jars = sorted(os.path.basename(p) for p in classpath.split(os.pathsep) if p)
    key = hashlib.sha1(source + "\n".join(jars).encode()).hexdigest()[:16]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    base = Path(cache) / "replicator" / "java"
    final = base / f"distcp-listing-{key}"
    if (final / "replicator" / "distcp" / "ReplicatorCopyListing.class").exists():
        return str(final)
    javac = os.path.join(os.path.dirname(os.path.realpath(java)), "javac")
    if not os.path.exists(javac):
        javac = shutil.which("javac") or ""
    if not javac:
        raise UsageError("--executor distcp compiles a small DistCp copy listing once and needs "
                         "javac (a JDK, not only a JRE)")
    base.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".compile-", dir=base)
    try:
        proc = subprocess.run([javac, "-nowarn", "-d", work, "-cp", classpath, str(JAVA_SOURCE)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise FatalError(f"could not compile the DistCp copy listing against this "
                             f"classpath (does it hold hadoop-distcp?):\n{tail}")
        try:
            os.rename(work, final)
        except OSError:  # another run got there first
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if os.path.exists(work):
            shutil.rmtree(work, ignore_errors=True)
    return str(final)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The JVM dies with us (kill -9 of the driver must not leave a copy running)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# ---------------------------------------------------------------------------- executor
class DistCpExecutor(Executor):
    name = "distcp"
    stages = False  # DistCp writes (temp + rename per file) and publishes itself
    ranges = False  # whole files only

    def __init__(self, workers: int = 8, *, classpath: str | None = None, java: str | None = None,
                 heap: str = "512m", hadoop_conf_dir: str | None = None,
                 properties: Mapping[str, Any] | None = None, log_dir: str | None = None,
                 direct: bool | None = None, listing_threads: int = 8,
                 verify_workers: int | None = None, collateral_retries: int = 1) -> None:
        if not re.fullmatch(r"\d+[mMgG]", heap):
            raise UsageError(f"distcp heap: expected e.g. 512m or 2g, got {heap!r}")
        self.workers = workers
        self.classpath = resolve_classpath(classpath)  # bad set-up: refused before any work
        self.java = _java(java)
        self.heap = heap
        self.hadoop_conf_dir = hadoop_conf_dir or os.environ.get("HADOOP_CONF_DIR") or None
        self.properties = {}
        for key, value in (properties or {}).items():
            key, value = str(key), str(value)
            if not _PROP_KEY.fullmatch(key) or any(ord(c) < 32 for c in value):
                raise UsageError(f"distcp properties: bad property {key!r}={value!r}")
            self.properties[key] = value
        self.log_dir = log_dir
        self.direct = direct
        self.listing_threads = listing_threads
        self.verify_workers = verify_workers or workers
        # a write failure fails DistCp's whole map (-i only forgives read failures): files the
        # failed job never reached run once more, without the files that failed themselves
        self.collateral_retries = collateral_retries
        self._details: dict[str, Any] = {}
        self._work: str | None = None

    def details(self) -> dict[str, Any]:
        return self._details

    def close(self) -> None:
        if self._work:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    # ------------------------------------------------------------------ command
    def command(self, ctx: StageContext, listing_uri: str, log_uri: str, classes: str,
                classpath: str, java: str) -> list[str]:
        src_root = hadoop_uri(ctx.src_fs, ctx.src_root)  # read back by new Path(new URI(...))
        dst_root = hadoop_path_arg(ctx.dst_fs, ctx.dst_root)  # read back by new Path(String)
        props = dict(BASE_PROPERTIES)
        if not self.hadoop_conf_dir:  # the local MapReduce runner, in this JVM
            props.update({
                "mapreduce.framework.name": "local",
                "mapreduce.local.map.tasks.maximum": str(self.workers),
                "mapreduce.jobtracker.staging.root.dir": os.path.join(self._work or "", "staging"),
                "mapreduce.cluster.local.dir": os.path.join(self._work or "", "local"),
                "hadoop.tmp.dir": os.path.join(self._work or "", "tmp"),
            })
        props.update(self.properties)
        props["distcp.copy.listing.class"] = LISTING_CLASS
        props["replicator.distcp.source.root"] = src_root
        props["replicator.distcp.listing.threads"] = str(self.listing_threads)
        cp = [self._work or "", classes]
        if self.hadoop_conf_dir:
            cp.insert(0, self.hadoop_conf_dir)
        cmd = [java, f"-Xmx{self.heap}", "-Dlog4j.configuration=replicator-distcp-log4j.properties",
               "-cp", os.pathsep.join([*cp, classpath]), DISTCP_MAIN]
        cmd += [f"-D{k}={v}" for k, v in props.items()]
        cmd += ["-overwrite", "-i", "-log", log_uri]
        cmd += distcp_tuning_args(self.workers, ctx.throttle.rate / MiB if ctx.throttle and
                                  ctx.throttle.rate else None, ctx.preserve)
        direct = self.direct
        if direct is None:
            direct = not ctx.dst_fs.capabilities.atomic_rename or \
                ctx.dst_fs.scheme in OBJECT_STORE_SCHEMES
        if direct:
            cmd.append("-direct")
        cmd += ["-f", listing_uri, dst_root]
        return cmd

    # ------------------------------------------------------------------ run
    def run(self, bins: Iterator[list[Task]], ctx: StageContext) -> Iterator[Outcome]:
        classes = listing_classes(self.classpath, self.java)  # before a bin is pulled (journalled)
        tasks: list[Task] = [t for b in bins for t in b]
        if not tasks:
            return
        if any(t.part is not None for t in tasks):
            raise FatalError("distcp executor got ranges of a file: it copies whole files")
        self._work = tempfile.mkdtemp(prefix="replicator-distcp-")
        (Path(self._work) / "replicator-distcp-log4j.properties").write_text(LOG4J)
        pending: list[Task] = []
        for t in tasks:  # Hadoop's Path refuses ':' in a name (HDFS too): fail those alone
            if ":" in t.rel:
                yield Outcome(t.seq, t.rel, ok=False,
                              error="Hadoop paths cannot hold ':' in a name: not copied by distcp")
            else:
                pending.append(t)
        self._details = {"tool": "hadoop distcp", "jobs": []}
        for attempt in range(1 + self.collateral_retries):
            if not pending:
                break
            job_error, outcomes = self._job(pending, ctx, classes, attempt)
            pending = []
            retry = job_error is not None and any(own for _, own in outcomes)
            for out, attributed in outcomes:
                if out.ok or attributed or not retry:
                    yield out
                elif attempt < self.collateral_retries:
                    pending.append(next(t for t in tasks if t.seq == out.seq))
                else:
                    yield out
            if pending:
                log.warning("distcp: %d file(s) not copied because the job failed on "
                            "another file: running them again", len(pending))
        last = self._details["jobs"][-1] if self._details["jobs"] else {}
        self._details.update({k: last.get(k) for k in ("exit_code", "job_id", "counters", "error")})
        self._details["failed_files"] = sum(j["failed_files"] for j in self._details["jobs"])

    def _job(self, tasks: list[Task], ctx: StageContext, classes: str,
             attempt: int) -> tuple[str | None, list[tuple[Outcome, bool]]]:
        """One DistCp job over ``tasks``; each outcome says whether its failure is its own."""
        work = Path(self._work or ".")
        listing = work / f"listing-{attempt}.txt"
        by_path: dict[str, str] = {}
        by_target: dict[str, str] = {}
        with listing.open("w", encoding="ascii") as f:
            for t in tasks:
                uri = hadoop_uri(ctx.src_fs, ctx.src_path(t.rel))
                f.write(uri + "\n")
                by_path[path_part(unquote(uri))] = t.rel
                by_target[path_part(unquote(hadoop_uri(ctx.dst_fs, ctx.dst_path(t.rel))))] = t.rel
        log_uri = (self.log_dir.rstrip("/") + f"/{ctx.run_id}-{attempt}" if self.log_dir else
                   "file://" + quote(str(work / f"log-{attempt}")))
        cmd = self.command(ctx, "file://" + quote(str(listing)), log_uri, classes,
                           self.classpath, self.java)
        env = dict(os.environ)
        user = next((fs.options().get("user") for fs in (ctx.src_fs, ctx.dst_fs)
                     if fs.options().get("user")), None)
        if user:
            env["HADOOP_USER_NAME"] = str(user)
        out_path = work / f"distcp-{attempt}.out"
        started = time.monotonic()
        log.info("distcp: %d file(s) -> %s", len(tasks), ctx.dst_fs.uri(ctx.dst_root))
        with out_path.open("wb") as out:
            try:
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      cwd=self._work, preexec_fn=_die_with_parent, check=False)
            except OSError as exc:
                raise FatalError(f"could not start DistCp ({self.java}): {exc}") from None
        text = out_path.read_text(errors="replace")
        failures, missing = self._job_failures(text, log_uri, by_path)
        for m in re.finditer(r"Can't replace (.+?)\. Target is", text):  # thrown by the map itself
            rel = by_target.get(path_part(m.group(1)))
            if rel is not None:
                failures.setdefault(rel, "distcp: " + m.group(0).removesuffix(" Target is")
                                    + " a directory, the source a file")
        job = re.search(r"DistCp job-id: (\S+)", text)
        job_error = _job_error(text, proc.returncode) if proc.returncode != 0 else None
        self._details["jobs"].append({
            "exit_code": proc.returncode, "job_id": job.group(1) if job else None,
            "files": len(tasks), "duration_s": round(time.monotonic() - started, 3),
            "counters": parse_counters(text), "failed_files": len(failures) + len(missing),
            "error": job_error,
        })
        if job_error:
            log.warning("distcp failed: %s", job_error)
        if ctx.dst_fs.scheme == "file":
            self._drop_crc_sidecars(tasks, ctx)
        with ThreadPoolExecutor(self.verify_workers, thread_name_prefix="distcp-verify") as pool:
            outcomes = list(pool.map(
                lambda t: (self._check(t, ctx, failures, missing, job_error),
                           t.rel in failures or t.rel in missing), tasks))
        if failures or job_error:
            self._clean_temporaries(tasks, ctx)
        return job_error, outcomes

    @staticmethod
    def _job_failures(text: str, log_uri: str,
                      by_path: dict[str, str]) -> tuple[dict[str, str], set[str]]:
        missing = set()
        for m in re.finditer(r"^REPLICATOR-MISSING (\S+)$", text, re.M):
            rel = by_path.get(path_part(unquote(m.group(1))))
            if rel is not None:
                missing.add(rel)
        logs = []
        if log_uri.startswith("file://"):
            root = unquote(urlsplit(log_uri).path)
            for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
                if name.startswith("part-"):
                    logs.append(Path(root, name).read_text(errors="replace"))
        else:
            from replicator.filesystems.registry import resolve

            fs, root = resolve(log_uri)
            with contextlib.suppress(FileNotFoundError):
                for info in fs.list_dir(root):
                    if info.name.startswith("part-"):
                        logs.append(b"".join(fs.read_chunks(info.path)).decode(errors="replace"))
        failures = parse_failures(text, by_path, marker="ERROR CopyMapper: Failure in copying ",
                                  separator=" to ")  # local runner: the map's own log
        failures.update(parse_failures("\n".join(logs), by_path))  # -i: read failures
        return failures, missing

    def _check(self, t: Task, ctx: StageContext, failures: dict[str, str], missing: set[str],
               job_error: str | None) -> Outcome:
        """The copied file is the planned source's bytes: size, then CRC32C on both sides."""
        def fail(error: str, retryable: bool = False) -> Outcome:
            return Outcome(t.seq, t.rel, ok=False, error=error, retryable=retryable)

        if t.rel in missing:
            return fail("source vanished before DistCp read it", True)
        if t.rel in failures:
            return fail(failures[t.rel])
        src, dst = ctx.src_path(t.rel), ctx.dst_path(t.rel)
        try:
            info = ctx.dst_fs.stat(dst)
            if info is None or info.kind != FILE:
                return fail(job_error or "distcp did not write the file", job_error is not None)
            if info.size != t.size:
                return fail(job_error or f"size {info.size} after distcp, expected {t.size}")
            now = ctx.src_fs.stat(src)
            if now is None or now.size != t.size or now.mtime_ns != t.mtime_ns:
                return fail("source changed during the copy; the next run copies it again", True)
            want = ctx.src_fs.checksum(src, "crc32c") if t.size else None
            want = want or _read_crc(ctx.src_fs, src, ctx.chunk_size)
            got = ctx.dst_fs.checksum(dst, "crc32c") if t.size else None
            got = got or _read_crc(ctx.dst_fs, dst, ctx.chunk_size)
        except Exception as exc:
            return fail(describe(exc))
        if got != want:
            return fail(job_error or f"checksum after distcp {got}, source {want}")
        if ctx.progress:
            ctx.progress.on_bytes(t.size)
        return Outcome(t.seq, t.rel, ok=True, size=t.size, mtime_ns=t.mtime_ns, checksum=want,
                       tmp=None, bytes_moved=t.size, verified=True)

    @staticmethod
    def _drop_crc_sidecars(tasks: list[Task], ctx: StageContext) -> None:
        """Hadoop's LocalFileSystem writes a ``.NAME.crc`` beside each file: not ours to leave
        (unless the source has a file of that name)."""
        for t in tasks:
            head, name = posixpath.split(t.rel)
            side = posixpath.join(head, f".{name}.crc") if head else f".{name}.crc"
            if ctx.src_fs.stat(ctx.src_path(side)) is None:
                with contextlib.suppress(OSError):
                    os.unlink(ctx.dst_path(side))

    @staticmethod
    def _clean_temporaries(tasks: list[Task], ctx: StageContext) -> None:
        """A failed or killed map can leave ``.distcp.tmp.*`` files: remove them."""
        dirs = {posixpath.dirname(t.rel) for t in tasks}
        for d in dirs:
            with contextlib.suppress(Exception):
                for info in ctx.dst_fs.list_dir(ctx.dst_path(d)):
                    if info.kind == FILE and info.name.startswith(".distcp.tmp."):
                        ctx.dst_fs.delete_file(info.path)


def _read_crc(fs: FileSystem, path: str, chunk_size: int) -> str:
    return crc.format_crc32c(crc.file_crc32c(fs, path, chunk_size))


def _job_error(text: str, code: int) -> str:
    """DistCp's last ERROR record and the exception under it (no stack traces)."""
    lines = text.splitlines()
    found = None
    for i, line in enumerate(lines):
        if line.startswith(("ERROR ", "Exception in thread")) or "Invalid arguments" in line:
            detail = ""
            if i + 1 < len(lines) and re.match(r"^[\w.$]+(Exception|Error)\b", lines[i + 1]):
                detail = lines[i + 1].strip()
            found = f"{line.strip()} {detail}".strip()
    return f"distcp exited {code}: {found}" if found else f"distcp exited {code}"
