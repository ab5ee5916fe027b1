"""Start and stop a real HDFS on loopback: Hadoop's MiniDFSCluster (NameNode, DataNodes and
WebHDFS in one JVM, from ``hadoop-client-minicluster``), for tests, demos and benchmarks.

    python -m scripts.hadoop start DIR [--datanodes N]   # prints {"hdfs": ..., "webhdfs": ...}
    python -m scripts.hadoop stop DIR
    python -m scripts.hadoop control DIR stop-namenode|restart-namenode|stop-datanode N|
                                         restart-datanode N|allow-snapshot PATH|ping

The jars come from Maven Central through :mod:`scripts.maven` (cached under ``.tools/``); the
launcher (``scripts/HdfsLauncher.java``) is compiled once into ``.tools/hdfs-launcher/``. The
cluster keeps its data, log (``DIR/hdfs.log``) and state (``DIR/ready.json``) under DIR, binds
127.0.0.1 only, on free ports chosen here, and is configured for cross-scheme verification:
``dfs.checksum.combine.mode=COMPOSITE_CRC`` with ``dfs.checksum.type=CRC32C`` (a file's HDFS
checksum is the CRC32C of its bytes, what GCS stores). Permissions are on; the superuser is
the user running the JVM. Two DIRs give two independent clusters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from scripts.jvm import JavaNotFound, free_port, java_tool, pid_alive
from scripts.maven import TOOLS, MavenError, classpath

SOURCE = Path(__file__).resolve().parent / "HdfsLauncher.java"
HEAP = "-Xmx448m"
START_TIMEOUT = 180.0


class HadoopError(RuntimeError):
    """The cluster could not be started, reached or stopped."""


def _java(tool: str) -> str:
    try:
        return java_tool(tool)
    except JavaNotFound as exc:
        raise HadoopError(str(exc)) from None


def compiled(cp: str) -> Path:
    """The directory holding the compiled launcher (compiled once per source version)."""
    digest = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:12]
    out = TOOLS / "hdfs-launcher" / digest
    if not (out / "HdfsLauncher.class").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        proc = subprocess.run([_java("javac"), "-nowarn", "-cp", cp, "-d", str(tmp), str(SOURCE)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HadoopError(f"javac {SOURCE} failed:\n{proc.stdout}{proc.stderr}")
        try:
            tmp.rename(out)
        except OSError:  # another process compiled it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _ready(base: Path) -> dict | None:
    try:
        return json.loads((base / "ready.json").read_text())
    except (OSError, ValueError):
        return None


def _log_tail(base: Path, lines: int = 40) -> str:
    try:
        return "\n".join((base / "hdfs.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def info(base: str | Path) -> dict:
    """The running cluster's endpoints (``hdfs``, ``webhdfs``, ``pid``, ``control_port``)."""
    base = Path(base).resolve()
    state = _ready(base)
    if not state or not pid_alive(int(state["pid"])):
        raise HadoopError(f"no HDFS running under {base}")
    return state


def control(base: str | Path, command: str, timeout: float = 120.0) -> str:
    """Send one control command (``stop-namenode``, ``restart-namenode``, ``stop-datanode 0``,
    ``restart-datanode 0``, ``allow-snapshot /path``, ``ping``); returns the reply after "ok"."""
    state = info(base)
    with socket.create_connection(("127.0.0.1", int(state["control_port"])), timeout=timeout) as s:
        s.sendall(command.strip().encode() + b"\n")
        reply = s.makefile("r", encoding="utf-8").readline().strip()
    if not reply.startswith("ok"):
        raise HadoopError(f"{command}: {reply or 'no reply'}")
    return reply[2:].strip()


def start(base: str | Path, datanodes: int = 1, timeout: float = START_TIMEOUT,
          watch_pid: int | None = None, conf: dict[str, str] | None = None) -> dict:
    """Start a cluster with its data under ``base``; return its endpoints once it serves.
    With ``watch_pid`` the cluster stops by itself when that process is gone. ``conf``: more
    Hadoop keys for this cluster (kept in ``base/conf.properties``, set after the defaults)."""
    import urllib.request

    base = Path(base).resolve()
    base.mkdir(parents=True, exist_ok=True)
    props = base / "conf.properties"
    if conf:
        for key, value in conf.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", key) or "\n" in str(value):
                raise HadoopError(f"conf: bad key or value {key!r}={value!r}")
        props.write_text("".join(f"{k}={v}\n" for k, v in sorted(conf.items())), encoding="utf-8")
    else:
        props.unlink(missing_ok=True)
    state = _ready(base)
    if state and pid_alive(int(state["pid"])):
        raise HadoopError(f"an HDFS is already running under {base} (pid {state['pid']})")
    (base / "ready.json").unlink(missing_ok=True)
    try:
        cp = classpath("hadoop")
    except MavenError as exc:
        raise HadoopError(str(exc)) from exc
    classes = compiled(cp)
    rpc, http = free_port(), free_port()
    while http == rpc:
        http = free_port()
    cmd = [
        _java("java"), HEAP, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        "-Djava.net.preferIPv4Stack=true", "-cp", f"{classes}{os.pathsep}{cp}",
        "HdfsLauncher", str(base), str(rpc), str(http), str(datanodes),
    ]
    if watch_pid:
        cmd.append(str(watch_pid))
    with open(base / "hdfs.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=base, start_new_session=True)
    (base / "hdfs.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while True:
        state = _ready(base)
        if state:
            try:  # WebHDFS answers: the cluster serves requests
                url = f"{state['webhdfs']}/webhdfs/v1/?op=GETFILESTATUS"
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return state
            except OSError:
                pass
        if proc.poll() is not None:
            raise HadoopError(f"HDFS under {base} exited with {proc.returncode}:\n{_log_tail(base)}")
        if time.monotonic() > deadline:
            _kill(proc.pid)
            raise HadoopError(f"HDFS under {base} did not start in {timeout:.0f}s:\n"
                              f"{_log_tail(base)}")
        time.sleep(0.2)


def _kill(pid: int, grace: float = 30.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:  # not our child: poll for it
                if not pid_alive(pid):
                    return
            time.sleep(0.1)


def stop(base: str | Path) -> bool:
    """Stop the cluster under ``base``; False if none was running."""
    base = Path(base).resolve()
    try:
        pid = int((base / "hdfs.pid").read_text())
    except (OSError, ValueError):
        return False
    if not pid_alive(pid):
        (base / "hdfs.pid").unlink(missing_ok=True)
        return False
    try:
        control(base, "shutdown", timeout=30)
    except (OSError, HadoopError):
        pass
    _kill(pid)
    (base / "hdfs.pid").unlink(missing_ok=True)
    (base / "ready.json").unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.hadoop", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="start a cluster under DIR and print its endpoints as JSON")
    p.add_argument("dir")
    p.add_argument("--datanodes", type=int, default=1)
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hadoop key for this cluster (repeatable), e.g. dfs.ls.limit=50")
    p = sub.add_parser("stop", help="stop the cluster under DIR")
    p.add_argument("dir")
    p = sub.add_parser("control", help="send a control command to the cluster under DIR")
    p.add_argument("dir")
    p.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "start":
            if args.datanodes < 1:
                parser.error("--datanodes must be at least 1")
            conf = dict(kv.split("=", 1) for kv in args.conf if "=" in kv)
            if len(conf) != len(args.conf):
                parser.error("--conf: expected KEY=VALUE")
            print(json.dumps(start(args.dir, datanodes=args.datanodes, conf=conf)))
        elif args.cmd == "stop":
            if not stop(args.dir):
                print(f"no HDFS running under {Path(args.dir).resolve()}", file=sys.stderr)
        else:
            print(control(args.dir, " ".join(args.command)) or "ok")
    except HadoopError as exc:
        print(f"hadoop: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
