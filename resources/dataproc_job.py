"""The driver of a ``replicator`` Dataproc job: our engine's CLI inside Dagster Pipes.

Runs on the cluster as the PySpark job's main file (``spark-submit ... dataproc_job.py
copy SRC DST --executor spark ... --dagster-pipes-context X --dagster-pipes-messages Y``):
it opens Pipes from the two bootstrap arguments ``PipesDataprocJobClient`` appends (context
and messages through GCS), runs ``replicator copy`` with the other arguments, forwards its
log lines through Pipes into the Dagster log as they come, and reports the engine's run
report (the ``--json`` line) as the materialization's metadata. Its exit code is the CLI's,
so a failed copy ends the job in ERROR with the reason in the driver output.

Imports neither dagster nor anything of the code location but this file: the cluster needs
``dagster-pipes``, ``google-cloud-storage`` and the replicator package only.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys

# run as a script, its own directory comes first on sys.path, and the modules beside it
# (replicator.py, ...) would shadow the libraries of those names
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

PIPES_FLAGS = ("--dagster-pipes-context", "--dagster-pipes-messages")


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the CLI's arguments, the Pipes bootstrap arguments)."""
    cli: list[str] = []
    pipes: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in PIPES_FLAGS:
            pipes += [arg, next(it, "")]
        else:
            cli.append(arg)
    return cli, pipes


class _PipesLogHandler(logging.Handler):
    def __init__(self, pipes) -> None:
        super().__init__()
        self.pipes = pipes

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            level = "warning" if record.levelno >= logging.WARNING else "info"
            getattr(self.pipes.log, level)(self.format(record))


def main(argv: list[str] | None = None) -> int:
    from dagster_pipes import (
        PipesCliArgsParamsLoader,
        PipesGCSContextLoader,
        PipesGCSMessageWriter,
        open_dagster_pipes,
    )
    from google.cloud import storage

    from replicator.cli import main as cli

    args, pipes_args = split_args(list(sys.argv[1:] if argv is None else argv))
    sys.argv = [sys.argv[0], *pipes_args]  # the Pipes params loader reads sys.argv
    client = storage.Client()
    with open_dagster_pipes(params_loader=PipesCliArgsParamsLoader(),
                            context_loader=PipesGCSContextLoader(client=client),
                            message_writer=PipesGCSMessageWriter(client=client)) as pipes:
        handler = _PipesLogHandler(pipes)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger("replicator").addHandler(handler)
        out = io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out):
            try:
                cli.main(args=args, prog_name="replicator", standalone_mode=False)
            except SystemExit as exc:
                code = int(exc.code or 0)
            except Exception as exc:  # click's usage errors and the like
                print(json.dumps({"ok": False, "error": str(exc)}))
                code = 2
        text = out.getvalue()
        sys.stdout.write(text)  # the driver output keeps it too
        lines = [ln for ln in text.splitlines() if ln.strip()]
        report = {}
        with contextlib.suppress(ValueError, IndexError):
            report = json.loads(lines[-1])
        if isinstance(report, dict) and isinstance(report.get("exit_code"), int):
            code = code or report["exit_code"]
        if code == 0:
            pipes.report_asset_materialization(metadata={
                "run_report": {"raw_value": json.dumps(report, sort_keys=True), "type": "json"},
            })
        else:
            pipes.log.error(f"replicator copy failed (exit {code}): "
                            f"{report.get('error') if isinstance(report, dict) else text[-500:]}")
    return code


if __name__ == "__main__":
    sys.exit(main())
