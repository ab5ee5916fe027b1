"""The trigger endpoint: launch a landing pipeline (or a replication copy) by command.

``python -m platform_assets.trigger [--spec replication.yaml]`` serves HTTP on the spec's
``trigger.listen`` (default 127.0.0.1:8765):

- ``POST /trigger`` with ``Authorization: Bearer <token>`` and a JSON body
  ``{"dataset": "orders", "partition": "optional"}``: launches one run through the Dagster
  webserver's GraphQL API (``trigger.dagster_url``) and answers ``{"run_id": ..., "job": ...}``;
- ``GET /health``: ``{"ok": true}``.

The token is read from the environment variable named by ``trigger.token_env`` when the server
starts (never at import, never logged) and compared with ``hmac.compare_digest``. Only the
datasets in ``trigger.allow`` may be launched: a landing dataset runs ``landing_NAME`` (with
``partition`` it names the batch: an existing batch is reprocessed), a replication dataset
runs ``copy_NAME`` for one partition (``all`` for an unpartitioned one). Refusals: 401 (bad or
missing token), 403 (dataset not allowed), 400 (bad request), 502 (Dagster refused or is down).
The client is ``replicator trigger DATASET [--partition P]``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from platform_assets.config import UNPARTITIONED_KEY, ReplicationSpec, SpecError, load_spec
from platform_assets.replication.names import TAG_TRIGGER
from replicator.secrets import redact, register_secret

log = logging.getLogger("platform_assets.trigger")
PARTITION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9=._/-]{0,199}$")
MAX_BODY = 64 * 1024


class TriggerRefused(Exception):
    """A request the endpoint refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Launch:
    job: str
    tags: dict[str, str]
    dataset: str
    partition: str | None


def plan_launch(spec: ReplicationSpec, dataset: Any, partition: Any) -> Launch:
    """Which job to launch, with which tags, for ``dataset``/``partition``; refuses anything
    not in the allow-list or malformed."""
    from platform_assets.landing.names import TAG_BATCH, TAG_LANDING, landing_job_name

    if spec.trigger is None:
        raise TriggerRefused(403, "no trigger section in the replication spec: nothing may be triggered")
    allowed = spec.trigger.allow
    if not isinstance(dataset, str) or not dataset:
        raise TriggerRefused(400, "expected a JSON body with a string field 'dataset'")
    if dataset not in allowed:
        raise TriggerRefused(
            403, f"dataset {dataset[:100]!r} is not in the trigger allow-list "
                 f"(allowed: {', '.join(allowed)})"
        )
    if partition is not None and (not isinstance(partition, str) or not PARTITION_RE.match(partition)
                                  or ".." in partition.split("/")):
        raise TriggerRefused(
            400, "partition: expected letters, digits and . _ - = / (at most 200), no '..'"
        )
    tags = {TAG_TRIGGER: "command"}
    if dataset in spec.landing:
        tags[TAG_LANDING] = dataset
        if partition:
            if "/" in partition or "=" in partition:
                raise TriggerRefused(400, "partition of a landing dataset names a batch: "
                                          "expected letters, digits, '.', '_' or '-'")
            tags[TAG_BATCH] = partition
        return Launch(landing_job_name(dataset), tags, dataset, partition)
    from platform_assets.replication.names import copy_job_name
    from platform_assets.replication.requests import copy_run_tags

    ds = spec.datasets[dataset]
    if ds.partitioned and not partition:
        raise TriggerRefused(400, f"dataset {dataset!r} is partitioned ({ds.partitions}): "
                                  "expected --partition")
    part = partition or UNPARTITIONED_KEY
    if not ds.partitioned and part != UNPARTITIONED_KEY:
        raise TriggerRefused(400, f"dataset {dataset!r} is unpartitioned: expected no partition "
                                  f"or {UNPARTITIONED_KEY!r}")
    if ds.partitioned and not ds.matches_partition(part):
        raise TriggerRefused(400, f"partition {part!r} does not match the layout {ds.partitions!r} "
                                  f"of dataset {dataset!r}")
    tags.update(copy_run_tags(dataset, part, "", "command"))
    tags.pop("replication/fingerprint", None)
    tags["dagster/partition"] = part
    return Launch(copy_job_name(dataset), tags, dataset, part)


FIND_JOB = """
query LandingTriggerFindJob {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation LandingTriggerLaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""


def graphql_launcher(dagster_url: str, timeout_s: float = 30) -> Callable[[Launch], str]:
    """Launches through the webserver's GraphQL API: finds the code location that has the job,
    then the ``launchRun`` mutation with the launch's tags; returns the run id."""
    import requests

    endpoint = dagster_url.rstrip("/") + "/graphql"

    def call(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = requests.post(endpoint, json={"query": query, "variables": variables or {}},
                                 timeout=timeout_s)
        except requests.RequestException as exc:
            raise TriggerRefused(502, f"Dagster at {dagster_url} unreachable: "
                                      f"{type(exc).__name__}") from None
        if resp.status_code != 200:
            raise TriggerRefused(502, f"Dagster GraphQL answered HTTP {resp.status_code}")
        body = resp.json()
        if body.get("errors"):
            raise TriggerRefused(502, "Dagster GraphQL error: "
                                      + redact(str(body["errors"][0].get("message")))[:300])
        return body["data"]

    def launch(plan: Launch) -> str:
        repos = call(FIND_JOB)["repositoriesOrError"]
        if repos["__typename"] != "RepositoryConnection":
            raise TriggerRefused(502, f"Dagster: {redact(str(repos.get('message')))[:300]}")
        homes = [(r["location"]["name"], r["name"]) for r in repos["nodes"]
                 if any(j["name"] == plan.job for j in r["jobs"])]
        if len(homes) != 1:
            raise TriggerRefused(502, f"Dagster: expected one code location with job {plan.job}, "
                                      f"found {len(homes)}")
        location, repository = homes[0]
        params = {
            "selector": {"repositoryLocationName": location, "repositoryName": repository,
                         "jobName": plan.job},
            "runConfigData": {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in plan.tags.items()]},
        }
        result = call(LAUNCH_RUN, {"executionParams": params})["launchRun"]
        if result["__typename"] == "LaunchRunSuccess":
            return str(result["run"]["runId"])
        detail = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
        raise TriggerRefused(502, f"Dagster refused the launch of {plan.job}: "
                                  f"{result['__typename']}: {redact(str(detail))[:300]}")

    return launch


class TriggerApp:
    """The request handling, independent of the HTTP server (tests call it too)."""

    def __init__(self, spec: ReplicationSpec, token: str, launcher: Callable[[Launch], str]) -> None:
        if not token:
            raise ValueError("trigger: the token is empty; set the variable named by trigger.token_env")
        register_secret(token)
        self._token = token.encode()
        self.spec = spec
        self.launcher = launcher

    def authorized(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token)

    def handle(self, auth: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        if not self.authorized(auth):
            return 401, {"error": "bad or missing token (expected 'Authorization: Bearer <token>')"}
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return 400, {"error": "expected a JSON body"}
        if not isinstance(data, dict):
            return 400, {"error": "expected a JSON object with 'dataset' (and 'partition')"}
        try:
            plan = plan_launch(self.spec, data.get("dataset"), data.get("partition"))
            run_id = self.launcher(plan)
        except TriggerRefused as exc:
            return exc.status, {"error": str(exc)}
        log.info("trigger: launched %s (%s) run %s", plan.job, plan.partition or "-", run_id)
        return 200, {"run_id": run_id, "job": plan.job, "dataset": plan.dataset,
                     "partition": plan.partition}


def make_server(app: TriggerApp, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "replicator-trigger/1"

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, {"ok": True})
            else:
                self._answer(404, {"error": "not found (POST /trigger, GET /health)"})

        def do_POST(self) -> None:
            if self.path != "/trigger":
                self._answer(404, {"error": "not found (POST /trigger, GET /health)"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self._answer(400, {"error": "expected a Content-Length"})
                return
            if length > MAX_BODY:
                self._answer(413, {"error": f"body larger than {MAX_BODY} bytes"})
                return
            status, payload = app.handle(self.headers.get("Authorization"), self.rfile.read(length))
            self._answer(status, payload)

        def log_message(self, fmt: str, *args: object) -> None:  # no headers, no token
            log.info("%s %s", self.address_string(), redact(fmt % args))

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(app: TriggerApp, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    server = make_server(app, host, port)
    threading.Thread(target=server.serve_forever, daemon=True, name="trigger-server").start()
    return server, f"http://{host}:{server.server_address[1]}"


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(prog="python -m platform_assets.trigger",
                                     description="HTTP endpoint that launches allowed pipelines.")
    parser.add_argument("--spec", default=str(repo / "replication.yaml"))
    parser.add_argument("--listen", help="host:port (default: trigger.listen of the spec)")
    parser.add_argument("--dagster-url", help="default: trigger.dagster_url of the spec")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(f"trigger: {exc}", file=sys.stderr)
        return 2
    if spec.trigger is None:
        print(f"trigger: {args.spec}: trigger: expected a trigger section (allow, token_env)",
              file=sys.stderr)
        return 2
    token = os.environ.get(spec.trigger.token_env, "")
    if not token:
        print(f"trigger: environment variable {spec.trigger.token_env} is not set (the token)",
              file=sys.stderr)
        return 2
    listen = args.listen or spec.trigger.listen
    host, _, port = listen.rpartition(":")
    app = TriggerApp(spec, token, graphql_launcher(args.dagster_url or spec.trigger.dagster_url))
    server = make_server(app, host, int(port))
    print(f"trigger: listening on http://{host}:{server.server_address[1]}/trigger "
          f"(allowed: {', '.join(spec.trigger.allow)})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
