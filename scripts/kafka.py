"""A real Apache Kafka broker on loopback for tests, demos and docs: one KRaft node that is both
broker and controller, jars from Maven Central (``scripts.maven`` bundle ``kafka``).

    python -m scripts.kafka start DIR [--port P]   # prints {"bootstrap": "127.0.0.1:P"}
    python -m scripts.kafka stop DIR

``start`` formats ``DIR/data`` once (the ``kafka-storage format`` step, ``kafka.tools.StorageTool``),
writes ``DIR/server.properties``, starts the JVM in its own session (log in ``DIR/kafka.log``)
and returns once the broker answers a metadata request with itself in it. ``DIR/state.json``
keeps the ports, so starting a stopped broker again serves the same data on the same address
(what the "broker was down" tests need). ``stop`` sends SIGTERM (a controlled shutdown) and
SIGKILL after ``--grace`` seconds. Exit codes: 0 ok, 1 the broker failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from scripts.jvm import JavaNotFound, free_port, java_tool, pid_alive
from scripts.maven import MavenError, classpath

HEAP = "-Xmx384m"
START_TIMEOUT_S = 120.0
_PROBE_LOG = logging.getLogger("scripts.kafka.probe")  # librdkafka's "connection refused" while it boots
_PROBE_LOG.setLevel(logging.CRITICAL)

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = info
logger.kafkaorg.name = org.apache.kafka
logger.kafkaorg.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


class KafkaError(RuntimeError):
    """The broker could not be started or stopped (the message says why, with the log tail)."""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM binds (TIME_WAIT ok)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_id() -> str:
    """A random cluster id as ``kafka-storage random-uuid`` makes it (URL-safe base64 of 16
    bytes; like Kafka's ``Uuid.randomUuid`` never starting with ``-``)."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def _properties(home: Path, port: int, controller_port: int, partitions: int) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(home / "data"),
        "num.partitions": str(partitions),
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "log.cleaner.enable": "false",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _java(home: Path) -> list[str]:
    return [java_tool("java"), HEAP, "-Xms64m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            "-cp", classpath("kafka")]


def _state(home: Path) -> dict:
    path = home / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _log_tail(home: Path, lines: int = 30) -> str:
    log = home / "kafka.log"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _serves(bootstrap: str, timeout: float) -> bool:
    """True when the broker answers a metadata request and lists itself (node 1)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000,
                         "logger": _PROBE_LOG})
    try:
        md = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return 1 in md.brokers


def start(home: Path, port: int | None = None, partitions: int = 3,
          timeout: float = START_TIMEOUT_S) -> dict:
    """Start the broker in ``home`` (formatting it on first use) and return ``{"bootstrap": ...}``."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    state = _state(home)
    if state.get("pid") and pid_alive(state["pid"]):
        bootstrap = f"127.0.0.1:{state['port']}"
        if _serves(bootstrap, 5):
            return {"bootstrap": bootstrap}
        raise KafkaError(f"{home}: a broker process {state['pid']} exists but does not answer")
    port = port or state.get("port") or free_port()
    controller_port = state.get("controller_port") or free_port()
    while controller_port == port:
        controller_port = free_port()
    for p in (port, controller_port):
        if not _port_free(p):
            raise KafkaError(f"port 127.0.0.1:{p} is in use")
    (home / "log4j2.properties").write_text(LOG4J2)
    props = home / "server.properties"
    props.write_text(_properties(home, port, controller_port, partitions))
    java = _java(home)
    if not (home / "data" / "meta.properties").exists():
        # "--cluster-id=ID": a base64 id may start with "-" (1 in 64 starts failed as
        # "expected one argument" with "-t ID")
        proc = subprocess.run([*java, "kafka.tools.StorageTool", "format",
                               f"--cluster-id={cluster_id()}", f"--config={props}"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise KafkaError(f"storage format failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    with open(home / "kafka.log", "a") as log:
        proc = subprocess.Popen([*java, "kafka.Kafka", str(props)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=home)
    state = {"pid": proc.pid, "port": port, "controller_port": controller_port}
    (home / "state.json").write_text(json.dumps(state))
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not _serves(bootstrap, 3):
        if proc.poll() is not None:
            raise KafkaError(f"broker exited with {proc.returncode}:\n{_log_tail(home)}")
        if time.monotonic() > deadline:
            _kill(proc.pid, grace=5)
            raise KafkaError(f"broker did not serve within {timeout:.0f} s:\n{_log_tail(home)}")
        time.sleep(0.5)
    return {"bootstrap": bootstrap}


def _kill(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while pid_alive(pid):
        time.sleep(0.1)


def stop(home: Path, grace: float = 30.0) -> bool:
    """Stop the broker of ``home``; False when none was running."""
    home = home.resolve()
    state = _state(home)
    pid = state.get("pid")
    if not pid or not pid_alive(pid):
        return False
    _kill(pid, grace)
    state["pid"] = None
    (home / "state.json").write_text(json.dumps(state))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.kafka", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="start (formatting on first use) the broker in DIR")
    p_start.add_argument("dir", type=Path)
    p_start.add_argument("--port", type=int, default=None,
                         help="client port (default: the one DIR used before, else a free one)")
    p_start.add_argument("--partitions", type=int, default=3, help="partitions of new topics")
    p_start.add_argument("--timeout", type=float, default=START_TIMEOUT_S)
    p_stop = sub.add_parser("stop", help="stop the broker of DIR")
    p_stop.add_argument("dir", type=Path)
    p_stop.add_argument("--grace", type=float, default=30.0,
                        help="seconds of controlled shutdown before SIGKILL")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "start":
            print(json.dumps(start(args.dir, args.port, args.partitions, args.timeout)), flush=True)
        else:
            if not stop(args.dir, args.grace):
                print(f"kafka: no broker running in {args.dir}", file=sys.stderr)
    except (KafkaError, MavenError, JavaNotFound) as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
