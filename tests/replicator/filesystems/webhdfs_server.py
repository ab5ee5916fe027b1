"""A WebHDFS server for tests, following the REST API of the Hadoop docs (WebHDFS.html),
backed by a local directory. The "NameNode" answers under ``/webhdfs/v1``; OPEN and CREATE
are redirected (307) to a "DataNode" URL (``/datanode/webhdfs/v1``) on the same port, as a
real NameNode redirects to a DataNode. Request bodies may use chunked transfer encoding.

Operations: LISTSTATUS, GETFILESTATUS, OPEN, CREATE, RENAME (with ``renameoptions``),
DELETE, MKDIRS, SETTIMES, SETPERMISSION, GETFILECHECKSUM (COMPOSITE-CRC32C).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import google_crc32c

NN = "/webhdfs/v1"
DN = "/datanode/webhdfs/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WebHDFSServer.HTTPServer  # type: ignore[name-defined]

    def log_message(self, *args) -> None:  # quiet
        pass

    # ------------------------------------------------------------ helpers
    def _parse(self):
        parts = urlsplit(self.path)
        q = {k.lower() if k != "user.name" else k: v[-1]
             for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        raw = unquote(parts.path)
        if raw.startswith(DN):
            return True, raw[len(DN):] or "/", q
        if raw.startswith(NN):
            return False, raw[len(NN):] or "/", q
        return None, raw, q

    def _local(self, path: str) -> str:
        norm = os.path.normpath("/" + path.lstrip("/"))
        return os.path.join(self.server.root, norm.lstrip("/"))

    def _send_json(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _remote(self, code: int, exc: str, message: str) -> None:
        self._send_json(code, {"RemoteException": {
            "exception": exc, "javaClassName": f"java.io.{exc}", "message": message}})

    def _not_found(self, path: str) -> None:
        self._remote(404, "FileNotFoundException", f"File does not exist: {path}")

    def _empty(self, code: int = 200) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _status(self, local: str, suffix: str) -> dict:
        st = os.stat(local)
        is_dir = stat.S_ISDIR(st.st_mode)
        return {
            "accessTime": int(st.st_atime * 1000), "blockSize": 134217728, "childrenNum":
            len(os.listdir(local)) if is_dir else 0, "fileId": st.st_ino, "group": "supergroup",
            "length": 0 if is_dir else st.st_size, "modificationTime": st.st_mtime_ns // 1_000_000,
            "owner": "hdfs", "pathSuffix": suffix, "permission": f"{stat.S_IMODE(st.st_mode):o}",
            "replication": 0 if is_dir else 3, "storagePolicy": 0,
            "type": "DIRECTORY" if is_dir else "FILE",
        }

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                if not line:
                    raise ConnectionError("client went away")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, 1 << 20))
                    if not data:
                        raise ConnectionError("client went away")
                    remaining -= len(data)
                    yield data
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self.rfile.read(min(remaining, 1 << 20))
                if not data:
                    raise ConnectionError("client went away")
                remaining -= len(data)
                yield data

    def _check_user(self, q) -> bool:
        if "user.name" not in q and "delegation" not in q:
            self._remote(401, "SecurityException", "Failed to obtain user group information")
            return False
        allowed = self.server.allowed_users
        if allowed is not None and q.get("user.name") not in allowed:
            self._remote(403, "AccessControlException", f"Permission denied: user={q.get('user.name')}")
            return False
        return True

    def _location(self, code: int, url: str) -> None:
        self.send_response(code)
        self.send_header("Location", url)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _redirect(self, path: str, query: str) -> None:
        host, port = self.server.server_address[:2]
        self._location(307, f"http://{host}:{port}{DN}{quote(path)}?{query}")

    def _start(self):
        """Parse and authorize a request; None if it has been answered already. Else
        ``(dn, path, q, op, local)`` where ``dn`` says whether it went to the DataNode."""
        dn, path, q = self._parse()
        if dn is None:
            self._empty(404)
            return None
        if not self._check_user(q):
            return None
        op = q.get("op", "").upper()
        self.server.ops.append(op)
        return dn, path, q, op, self._local(path)

    def _bad_op(self, op: str) -> None:
        self._remote(400, "IllegalArgumentException", f"Invalid value for webhdfs parameter \"op\": {op}")

    # ------------------------------------------------------------ verbs
    def do_GET(self) -> None:
        req = self._start()
        if req is None:
            return None
        dn, path, q, op, local = req
        if op == "OPEN":
            if not os.path.isfile(local):
                return self._not_found(path)
            if not dn:
                return self._redirect(path, urlsplit(self.path).query)
            offset = int(q.get("offset", 0) or 0)
            size = os.path.getsize(local)
            length = int(q["length"]) if q.get("length") else size - offset
            length = max(0, min(length, size - offset))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            with open(local, "rb") as f:
                f.seek(offset)
                remaining = length
                while remaining:
                    data = f.read(min(remaining, 1 << 20))
                    if not data:
                        break
                    self.wfile.write(data)
                    remaining -= len(data)
            return None
        if op == "GETFILESTATUS":
            if not os.path.exists(local):
                return self._not_found(path)
            return self._send_json(200, {"FileStatus": self._status(local, "")})
        if op == "LISTSTATUS":
            if not os.path.exists(local):
                return self._not_found(path)
            if os.path.isfile(local):
                statuses = [self._status(local, "")]
            else:
                statuses = [self._status(os.path.join(local, n), n) for n in sorted(os.listdir(local))]
            return self._send_json(200, {"FileStatuses": {"FileStatus": statuses}})
        if op == "GETFILECHECKSUM":
            if not os.path.isfile(local):
                return self._not_found(path)
            crc = google_crc32c.Checksum()
            with open(local, "rb") as f:
                for data in iter(lambda: f.read(1 << 20), b""):
                    crc.update(data)
            value = int.from_bytes(crc.digest(), "big")
            return self._send_json(200, {"FileChecksum": {
                "algorithm": "COMPOSITE-CRC32C", "bytes": f"{value:08x}", "length": 4}})
        return self._bad_op(op)

    def do_PUT(self) -> None:
        req = self._start()
        if req is None:
            return None
        dn, path, q, op, local = req
        if op == "CREATE":
            if not dn:
                if os.path.isdir(local):
                    return self._remote(403, "FileAlreadyExistsException", f"{path} is a directory")
                if os.path.exists(local) and q.get("overwrite", "false") != "true":
                    return self._remote(403, "FileAlreadyExistsException", f"{path} already exists")
                return self._redirect(path, urlsplit(self.path).query)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            try:
                with open(local, "wb") as f:
                    for data in self._read_body():
                        f.write(data)
            except ConnectionError:
                self.close_connection = True
                return None
            host, port = self.server.server_address[:2]
            return self._location(201, f"hdfs://{host}:{port}{quote(path)}")
        if op == "MKDIRS":
            if os.path.isfile(local):
                return self._remote(403, "FileAlreadyExistsException", f"{path} is a file")
            os.makedirs(local, exist_ok=True)
            return self._send_json(200, {"boolean": True})
        if op == "RENAME":
            dst = q.get("destination", "")
            if not dst.startswith("/"):
                return self._remote(400, "IllegalArgumentException", "destination must be absolute")
            dst_local = self._local(dst)
            overwrite = "OVERWRITE" in q.get("renameoptions", "").upper()
            if not os.path.exists(local):
                if overwrite:
                    return self._not_found(path)
                return self._send_json(200, {"boolean": False})
            if not os.path.isdir(os.path.dirname(dst_local)):
                if overwrite:
                    return self._not_found(os.path.dirname(dst))
                return self._send_json(200, {"boolean": False})
            if os.path.exists(dst_local) and not overwrite:
                return self._send_json(200, {"boolean": False})
            if os.path.isdir(dst_local) and overwrite and os.listdir(dst_local):
                return self._remote(403, "IOException", f"rename destination {dst} is a non-empty directory")
            os.replace(local, dst_local)
            if overwrite:
                return self._empty(200)  # rename2 answers with an empty body
            return self._send_json(200, {"boolean": True})
        if op == "SETTIMES":
            if not os.path.exists(local):
                return self._not_found(path)
            st = os.stat(local)
            mtime = int(q.get("modificationtime", -1))
            atime = int(q.get("accesstime", -1))
            os.utime(local, ns=(st.st_atime_ns if atime < 0 else atime * 1_000_000,
                                st.st_mtime_ns if mtime < 0 else mtime * 1_000_000))
            return self._empty(200)
        if op == "SETPERMISSION":
            if not os.path.exists(local):
                return self._not_found(path)
            os.chmod(local, int(q.get("permission", "755"), 8))
            return self._empty(200)
        return self._bad_op(op)

    def do_DELETE(self) -> None:
        req = self._start()
        if req is None:
            return None
        _, path, q, op, local = req
        if op != "DELETE":
            return self._remote(400, "IllegalArgumentException", f"bad op {op}")
        if not os.path.lexists(local):
            return self._send_json(200, {"boolean": False})
        if os.path.isdir(local):
            if os.listdir(local) and q.get("recursive", "false") != "true":
                return self._remote(403, "PathIsNotEmptyDirectoryException", f"{path} is non empty")
            shutil.rmtree(local)
        else:
            os.unlink(local)
        return self._send_json(200, {"boolean": True})

    do_POST = do_PUT


class WebHDFSServer:
    """``start()`` / ``stop()`` (the port is kept, so a stopped server can be restarted)."""

    class HTTPServer(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        root: str
        ops: list
        allowed_users: set | None

    def __init__(self, root: str, host: str = "127.0.0.1", port: int = 0,
                 allowed_users: set | None = None) -> None:
        self.root = root
        self.host = host
        self.port = port
        self.allowed_users = allowed_users
        self.ops: list[str] = []
        self._httpd: WebHDFSServer.HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        httpd = self.HTTPServer((self.host, self.port), _Handler)
        httpd.root, httpd.ops, httpd.allowed_users = self.root, self.ops, self.allowed_users
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def url(self) -> str:
        return f"webhdfs://{self.host}:{self.port}"


if __name__ == "__main__":  # python webhdfs_server.py ROOT PORT
    import sys
    import time

    srv = WebHDFSServer(sys.argv[1], port=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    srv.start()
    print(srv.url, flush=True)
    while True:
        time.sleep(3600)
