"""The ``replicator`` command: parses, calls the library, prints. Nothing else.

Exit codes: 0 success, 1 differences or failed files, 2 bad usage or bad input, 3 the run's
deadline (``--deadline``) passed.
With ``--json`` the last line of stdout is one JSON object, the run report.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from replicator.errors import ReplicatorError, describe
from replicator.options import DEFAULT_DEADLINE_S, CopyOptions, parse_duration, parse_preserve
from replicator.secrets import redact

log = logging.getLogger("replicator")
T = TypeVar("T")
STATE_HELP = ("State store: an SQLite file (default ~/.replicator/state.db) or postgresql://USER@HOST:PORT/DB "
              "(password from PGPASSWORD or ~/.pgpass), shared by runs on many hosts.")


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _setup_logging(verbose: int, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "s3transfer", "asyncio", "paramiko", "fsspec", "google"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _emit_json(data: dict[str, Any]) -> None:
    click.echo(redact(json.dumps(data, default=str, sort_keys=True)))


def _fail(exc: ReplicatorError, as_json: bool) -> None:
    message = redact(str(exc))
    click.echo(f"replicator: error: {message}", err=True)
    if as_json:
        _emit_json({"status": "error", "ok": False, "error": message, "exit_code": exc.exit_code})
    sys.exit(exc.exit_code)


def _guarded(as_json: bool, call: Callable[[], T]) -> T:
    """The one error boundary of the CLI: a ReplicatorError becomes its message and exit code
    (2 bad usage, 3 deadline, else 1); anything else (a bug, an error a back end did not
    classify) becomes one redacted line and exit 1, its traceback only in the -vv log."""
    try:
        return call()
    except ReplicatorError as exc:
        _fail(exc, as_json)
        raise  # not reached: _fail exits
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        _fail(ReplicatorError(f"unexpected error: {describe(exc)}"), as_json)
        raise  # not reached


def _filters(f):
    f = click.option("--include", multiple=True, metavar="GLOB",
                     help="Copy only paths matching GLOB (repeatable). No '/' in GLOB: matches file names anywhere; '**' crosses directories.")(f)
    f = click.option("--exclude", multiple=True, metavar="GLOB",
                     help="Leave out paths matching GLOB (repeatable); wins over --include; excluded destination files are never deleted.")(f)
    f = click.option("--include-regex", multiple=True, metavar="REGEX",
                     help="Copy only paths in which REGEX (Python re) is found (repeatable); searched in the "
                          "path relative to the root, so anchor with ^...$ for a whole path.")(f)
    f = click.option("--exclude-regex", multiple=True, metavar="REGEX",
                     help="Leave out paths in which REGEX is found (repeatable); wins over includes.")(f)
    f = click.option("--files-from", metavar="FILE",
                     help="Only the paths listed in FILE (one per line, relative to SRC; '#' and ';' start "
                          "comments; a listed directory brings its subtree). A path escaping SRC is refused; "
                          "a listed path missing from SRC fails.")(f)
    f = click.option("--copy-links", "-L", is_flag=True,
                     help="Follow symlinks (default: skip and count them). Loops are refused.")(f)
    return f


def _ages(f):
    f = click.option("--min-age", default="0", metavar="DURATION",
                     help="Leave files modified less than DURATION ago alone (still being written). "
                          "Seconds, or with a unit: 30s, 30m, 2h, 7d, 1w, 1h30m.")(f)
    f = click.option("--max-age", metavar="DURATION",
                     help="Leave files modified more than DURATION ago alone (not copied, not deleted).")(f)
    return f


def _common(f):
    f = click.option("--json", "as_json", is_flag=True, help="Print the run report as one JSON object on the last line of stdout.")(f)
    f = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="replication-platform")
def main() -> None:
    """Incremental, verified, resumable replication of directory trees.

    SRC and DST are local paths or URIs (file://, and the schemes of the installed back ends).
    A state store (SQLite, default ~/.replicator/state.db, or PostgreSQL) remembers what was copied,
    so a rerun copies only what changed and finishes anything an interrupted run left half-published.
    """


def _copy_options(**kw: Any) -> CopyOptions:
    return CopyOptions(
        delete=kw.get("delete", False),
        dry_run=kw.get("dry_run", False),
        checksum=kw.get("checksum", False),
        verify_checksum=kw.get("verify_checksum", False),
        deadline_s=kw.get("deadline", DEFAULT_DEADLINE_S),
        lock_wait_s=kw.get("wait_lock", 0.0),
        workers=kw.get("workers", 8),
        include=tuple(kw.get("include") or ()),
        exclude=tuple(kw.get("exclude") or ()),
        include_regex=tuple(kw.get("include_regex") or ()),
        exclude_regex=tuple(kw.get("exclude_regex") or ()),
        files_from=kw.get("files_from"),
        min_age_s=parse_duration(kw.get("min_age") or 0, "--min-age"),
        max_age_s=parse_duration(kw["max_age"], "--max-age") if kw.get("max_age") is not None else None,
        transforms=tuple(kw.get("transform") or ()),
        bandwidth_mbps=kw.get("bandwidth"),
        preserve=parse_preserve(kw.get("preserve", "times")),
        state_path=kw.get("state"),
        executor=kw.get("executor", "local"),
        max_delete=kw.get("max_delete", "50%"),
        marker=kw.get("marker"),
        copy_links=kw.get("copy_links", False),
        retries=kw.get("retries", 3),
        snapshot_diff=kw.get("snapshot_diff", False),
    ).validated()


def _print_summary(report, *, err: bool) -> None:
    d = report.to_dict()
    verb = "would copy" if report.dry_run else "copied"
    lines = [
        f"{report.command} {report.source} -> {report.destination}: {d['status']}",
        f"  {verb} {report.files_copied:,} files ({report.files_updated:,} updated), "
        f"{report.bytes_copied:,} bytes; skipped {report.files_skipped:,} unchanged; "
        f"{'would delete' if report.dry_run else 'deleted'} {report.files_deleted:,}",
    ]
    if report.files_held_back:
        lines.append(f"  held back {report.files_held_back:,} files newer than --min-age")
    if report.symlinks_skipped:
        lines.append(f"  skipped {report.symlinks_skipped:,} symlinks (use --copy-links to follow)")
    if report.files_recovered:
        lines.append(f"  completed {report.files_recovered:,} files published by an interrupted run")
    if not report.dry_run:
        lines.append(f"  {d['duration_s']}s, {d['throughput_mb_s']} MiB/s, verified={report.verified}")
    if report.marker:
        lines.append(f"  marker {report.marker}")
    if report.delete_refused:
        lines.append(f"  {report.delete_refused}")
    if report.error:
        lines.append(f"  error: {report.error}")
    for f in report.failures[:20]:
        lines.append(f"  FAILED {f.path}: {f.error}")
    if report.files_failed > 20:
        lines.append(f"  ... and {report.files_failed - 20} more failures (see --json)")
    if report.files_not_done:
        lines.append(f"  not done ({report.files_not_done:,} files, the next run copies them):")
        lines += [f"    {p}" for p in report.not_done[:20]]
    click.echo(redact("\n".join(lines)), err=err)


def _finish_run(report, as_json: bool) -> None:
    """Print a copy/plan report (actions first for a dry run) and exit with its code."""
    if report.dry_run and not as_json:
        for a in report.actions:
            click.echo(f"{a['action']:<7} {a['path']}")
    _print_summary(report, err=as_json)
    if as_json:
        _emit_json(report.to_dict())
    if report.deadline_exceeded:
        # workers may still sit in calls to a server that stopped answering: the report is
        # out and the pair lock released, so do not wait for them to time out
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(report.exit_code)
    sys.exit(report.exit_code)


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--delete", is_flag=True, help="Delete destination files that are not in the source.")
@click.option("--max-delete", default="50%", show_default=True, metavar="N|P%",
              help="Refuse a run that would delete more than this many files or share of the destination.")
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--checksum", "-c", is_flag=True, help="Compare and verify by CRC32C content checksum, not size+mtime.")
@click.option("--verify-checksum", is_flag=True,
              help="Decide by size+mtime, but verify every copied file by CRC32C (re-read where the "
                   "destination reports no CRC32C). Without it or --checksum, a local copy is checked "
                   "by size only and the report says verified=false.")
@click.option("--workers", "-w", default=8, show_default=True, type=click.IntRange(1, 1024), help="Parallel transfers.")
@_filters
@_ages
@click.option("--transform", "-t", multiple=True, metavar="T",
              help="Transform each file on the way, in the order given (repeatable): gunzip (x.gz -> x), "
                   "untar (x.tar -> directory x/), gpg-encrypt=RECIPIENT (x -> x.gpg), gpg-decrypt "
                   "(x.gpg -> x). Files a step does not apply to pass it unchanged. Keys from $GNUPGHOME.")
@click.option("--bandwidth", type=click.FloatRange(min=0, min_open=True), metavar="MBPS",
              help="Limit total transfer rate to MBPS MiB/s, shared by all workers.")
@click.option("--preserve", default="times", show_default=True, metavar="KINDS",
              help="Attributes to keep on the destination, a comma list: times, perms, owner, "
                   "group, replication, blocksize (DistCp -p; each where both ends have it: "
                   "owner/group on HDFS and local, as root; replication/blocksize HDFS to HDFS).")
@click.option("--state", metavar="PATH|URL", help=STATE_HELP)
@click.option("--executor", type=click.Choice(["local", "spark", "distcp"]), default="local",
              show_default=True,
              help="Who moves the bytes. distcp: real `hadoop distcp` (local MapReduce runner, or the "
                   "cluster $HADOOP_CONF_DIR names; jars from $REPLICATOR_HADOOP_CLASSPATH or "
                   "`hadoop classpath`).")
@click.option("--snapshot-diff", is_flag=True,
              help="HDFS source (webhdfs://, or hdfs:// with http_address): take a snapshot per run, copy from it, and list only "
                   "what changed since the last recorded snapshot (falls back to a full listing "
                   "where the root is not snapshottable).")
@click.option("--marker", metavar="NAME", help="Write a JSON summary named NAME at the destination root, last.")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0, 100),
              help="Retries per file for retryable errors (with backoff), never past --deadline.")
@click.option("--deadline", type=float, default=DEFAULT_DEADLINE_S, show_default=True,
              metavar="SECONDS",
              help="Give up the whole run after SECONDS (a server that stopped answering): what "
                   "was not done is listed, the next run finishes it; exit code 3.")
@click.option("--wait-lock", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="SECONDS",
              help="When another run is copying the same SRC to the same DST, wait up to SECONDS "
                   "for it to finish instead of refusing at once (exit 1 once the wait is over).")
@_common
def copy(src: str, dst: str, as_json: bool, verbose: int, quiet: bool, **kw: Any) -> None:
    """Copy the tree SRC to DST: new and changed files only, verified, published atomically."""
    _setup_logging(verbose, quiet)
    from replicator import api
    from replicator.progress import ConsoleProgress

    opts = _guarded(as_json, lambda: _copy_options(**kw))
    progress = None if quiet or opts.dry_run else ConsoleProgress()
    _finish_run(_guarded(as_json, lambda: api.copy(src, dst, opts, progress=progress)), as_json)


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--delete", is_flag=True, help="Include deletions of destination-only files.")
@click.option("--checksum", "-c", is_flag=True, help="Decide by content checksum.")
@_filters
@_ages
@click.option("--transform", "-t", multiple=True, metavar="T", help="As for copy.")
@click.option("--state", metavar="PATH|URL", help=STATE_HELP)
@click.option("--marker", metavar="NAME", help="The marker file NAME at the destination root is ours: never a delete.")
@_common
def plan(src: str, dst: str, as_json: bool, verbose: int, quiet: bool, **kw: Any) -> None:
    """Show what `copy` would do (copy / update / delete per path), doing nothing."""
    _setup_logging(verbose, quiet)
    from replicator import api

    _finish_run(_guarded(as_json, lambda: api.plan(src, dst, _copy_options(**kw))), as_json)


@main.command()
@click.argument("src")
@click.argument("dst")
@_filters
@click.option("--marker", metavar="NAME", help="Ignore the marker file NAME at the destination root.")
@click.option("--workers", "-w", default=8, show_default=True, type=click.IntRange(1, 1024))
@click.option("--transform", "-t", multiple=True, metavar="T",
              help="The transforms the copy used: transformed files are checked against the state "
                   "store's record (destination = written checksum, source = source checksum).")
@click.option("--state", metavar="PATH|URL", help="State store the copy used (read with --transform). " + STATE_HELP)
@_common
def verify(src: str, dst: str, as_json: bool, verbose: int, quiet: bool, **kw: Any) -> None:
    """Compare SRC and DST by content (CRC32C). Exit 0 when identical, 1 with the differences."""
    _setup_logging(verbose, quiet)
    from replicator import api

    report = _guarded(as_json, lambda: api.verify(src, dst, _copy_options(**kw)))
    out_err = as_json
    status = "identical" if report.identical else "DIFFERENT"
    click.echo(f"verify {report.source} -> {report.destination}: {status} "
               f"({report.files_compared:,} files compared, {report.bytes_compared:,} bytes)", err=out_err)
    for p in report.missing:
        click.echo(f"  missing   {p}", err=out_err)
    for p in report.extra:
        click.echo(f"  extra     {p}", err=out_err)
    for d in report.differing:
        click.echo(f"  differing {d['path']} ({d['reason']})", err=out_err)
    if report.marked_for_copy:
        click.echo(f"  dropped the state store's record of these {report.marked_for_copy:,} files: the "
                   "next `copy` writes missing ones again, `copy --checksum` rewrites differing ones",
                   err=out_err)
    for e in report.errors:
        click.echo(f"  error     {e}", err=out_err)
    if as_json:
        _emit_json(report.to_dict())
    sys.exit(report.exit_code)


@main.command()
@click.argument("dataset")
@click.option("--partition", "-p", metavar="P",
              help="Partition of a replication dataset, or the batch of a landing dataset to (re)process.")
@click.option("--url", metavar="URL", help="Trigger endpoint. Default: $REPLICATOR_TRIGGER_URL or http://127.0.0.1:8765.")
@click.option("--token-env", default="REPLICATOR_TRIGGER_TOKEN", show_default=True, metavar="NAME",
              help="Environment variable holding the trigger token.")
@_common
def trigger(dataset: str, partition: str | None, url: str | None, token_env: str, as_json: bool,
            verbose: int, quiet: bool) -> None:
    """Launch the pipeline of DATASET (landing or replication) through the trigger endpoint."""
    _setup_logging(verbose, quiet)
    from replicator import trigger as client

    result = _guarded(as_json, lambda: client.trigger(dataset, partition, url=url, token_env=token_env))
    click.echo(f"launched {result.job} run {result.run_id}"
               + (f" (partition {result.partition})" if result.partition else ""), err=as_json)
    if as_json:
        _emit_json({"status": "ok", "ok": True, **result.to_dict()})


if __name__ == "__main__":  # pragma: no cover
    main()
