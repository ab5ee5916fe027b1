"""Google Cloud Storage over the JSON API (``gs://bucket/key``).

Why not ``pyarrow.fs.GcsFileSystem`` or gcsfs: the engine needs generation preconditions
(``ifGenerationMatch``) on every write, the source mtime kept as object metadata, the
store's crc32c and generation in every listing row, and control over the resumable upload
(chunk size, cancel on abort). pyarrow exposes none of the preconditions or checksums, and
gcsfs stalls against emulators (DESIGN.md). The JSON API is small, so we speak it with
``requests``: one ``objects.list`` call per 1000 keys (delimiter listing), one multipart
upload for small objects, a resumable session in ``chunk_size`` pieces for big ones, and
``compose`` for ranges written in parallel.

Configuration, read when the file system is built: ``STORAGE_EMULATOR_HOST`` (an emulator
endpoint, no auth), ``GOOGLE_APPLICATION_CREDENTIALS`` / application default credentials
(via google-auth), or the options ``endpoint``, ``credentials_file``, ``token``,
``anonymous``, ``project``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

import requests
import urllib3
from requests.adapters import HTTPAdapter

from replicator import checksum as crc
from replicator.errors import FatalError, PreconditionFailed, RetryableError
from replicator.filesystems._common import (
    ChunkReader,
    MiB,
    ObjectStore,
    ObjectWriter,
    bucket_missing,
    clean_options,
    crc32c_hex_from_b64,
    env,
    http_error,
    http_range,
    md5_hex_from_b64,
    mtime_metadata,
    network_error,
    object_path,
    parse_rfc3339_ns,
    secret,
    split_bucket,
)
from replicator.filesystems.base import DIR, FILE, Capabilities, FileInfo, FileSystem, Writer

GCS_ENDPOINT = "https://storage.googleapis.com"
META_MTIME = "mtime_ns"  # x-goog-meta-mtime_ns
_Q = 256 * 1024  # resumable chunks are multiples of 256 KiB
_STAGING = ".replicator-parts"
_LIST_FIELDS = (
    "items(name,size,generation,crc32c,md5Hash,updated,metadata),prefixes,nextPageToken"
)


def _staging_prefix(path: str) -> str:
    """Where the parts of parallel writes of ``path`` go: ``<bucket>/.replicator-parts/<hash
    of the key>``, one sub-prefix per write; recovery finds them from the path alone."""
    bucket, key = object_path(path, "gs")
    return f"{bucket}/{_STAGING}/{hashlib.sha1(key.encode()).hexdigest()}"


def _q(name: str) -> str:
    return quote(name, safe="")


class _GCSWriter(ObjectWriter):
    """Buffers up to ``chunk_size``; small objects go in one multipart request, bigger ones
    through a resumable session. Nothing is visible before the final request succeeds."""

    def __init__(self, fs: GCSFileSystem, path: str, mtime_ns: int | None,
                 expect_version: str | None) -> None:
        super().__init__(fs, path, "gs", META_MTIME, mtime_ns, expect_version)
        self.fs: GCSFileSystem = fs
        self.chunk = max(_Q, fs._chunk_size // _Q * _Q)
        self.sent = 0
        self.session: str | None = None
        self.done = False
        self.result: dict | None = None
        self.crc = 0  # CRC32C of every byte written, sent with the upload

    def _crc_b64(self) -> str:
        return base64.b64encode(self.crc.to_bytes(4, "big")).decode()

    def _params(self, upload_type: str) -> dict[str, str]:
        params = {"uploadType": upload_type}
        if self.expect is not None:
            params["ifGenerationMatch"] = str(self.expect)
        return params

    def _resource(self) -> dict[str, Any]:
        res: dict[str, Any] = {"name": self.key, "contentType": "application/octet-stream"}
        if self.meta:
            res["metadata"] = self.meta
        return res

    def write(self, data: bytes | memoryview) -> None:
        self.crc = crc.extend(self.crc, data)
        self.buf += data
        while len(self.buf) > self.chunk:
            self._send(final=False)

    def _start_session(self) -> None:
        url = f"{self.fs._endpoint}/upload/storage/v1/b/{_q(self.bucket)}/o"
        r = self._upload_request("POST", url, params=self._params("resumable"),
                             json=self._resource(), what=f"start upload gs://{self.path}")
        loc = r.headers.get("Location")
        if not loc:
            raise RetryableError(f"start upload gs://{self.path}: no session URI")
        self.session = loc

    def _send(self, final: bool) -> None:
        if self.session is None:
            self._start_session()
        n = len(self.buf) if final else self.chunk
        start = self.sent
        if final:
            total = str(start + n)
            rng = f"bytes {start}-{start + n - 1}/{total}" if n else f"bytes */{total}"
        else:
            rng = f"bytes {start}-{start + n - 1}/*"
        body = bytes(self.buf[:n])
        headers = {"Content-Range": rng}
        if final:  # the store checks the whole object's CRC32C and refuses damaged bytes
            headers["x-goog-hash"] = f"crc32c={self._crc_b64()}"
        r = self.fs._request("PUT", self.session, data=body, headers=headers,
                             ok=(200, 201, 308), what=f"upload gs://{self.path}")
        if final:
            if r.status_code == 308:
                raise RetryableError(f"upload gs://{self.path}: server did not finalize")
            self.result = r.json()
        elif r.status_code != 308:
            raise RetryableError(f"upload gs://{self.path}: unexpected {r.status_code}")
        self.sent += n
        del self.buf[:n]

    def close(self) -> None:
        if self.done:
            return
        try:
            if self.session is None:
                self._multipart()
            else:
                self._send(final=True)
        except BaseException:
            self.abort()
            raise
        self.done = True
        self.buf = bytearray()
        if self.result and self.result.get("name") == self.key and \
                not self.key.startswith(_STAGING + "/"):
            self.fs._remember(self.fs._info(self.bucket, self.result))

    def _upload_request(self, *args: Any, **kw: Any):
        try:
            return self.fs._request(*args, **kw)
        except FileNotFoundError as exc:  # the bucket is missing
            raise bucket_missing("gs", self.bucket, exc) from None

    def _multipart(self) -> None:
        boundary = "rpl" + uuid.uuid4().hex
        resource = self._resource()
        resource["crc32c"] = self._crc_b64()  # the store refuses the upload if bytes differ
        head = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            + json.dumps(resource)
            + f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body = head + bytes(self.buf) + f"\r\n--{boundary}--\r\n".encode()
        url = f"{self.fs._endpoint}/upload/storage/v1/b/{_q(self.bucket)}/o"
        try:
            self.result = self.fs._post_json(
                url, self._params("multipart"), body,
                {"Content-Type": f"multipart/related; boundary={boundary}"},
                what=f"upload gs://{self.path}")
        except FileNotFoundError as exc:  # the bucket is missing
            raise bucket_missing("gs", self.bucket, exc) from None

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        self.buf = bytearray()
        if self.session is not None:
            try:  # cancel the resumable session: GCS answers 499
                self.fs._session().delete(self.session, timeout=self.fs._timeout)
            except Exception:
                pass


class GCSFileSystem(ObjectStore, FileSystem):
    scheme = "gs"
    capabilities = Capabilities(
        hash_kinds=("crc32c", "md5"),
        mtime_precision_ns=1,  # source mtime kept in metadata at full precision
        atomic_rename=False,
        can_set_mtime=False,
        can_set_mode=False,
        directories=False,
        parallel_write=True,
    )

    def __init__(self, endpoint: str | None = None, project: str | None = None,
                 credentials_file: str | None = None, token: str | None = None,
                 anonymous: bool | None = None, chunk_size: int = 16 * MiB,
                 timeout: float = 60.0, user_project: str | None = None) -> None:
        emulator = env("STORAGE_EMULATOR_HOST")
        if endpoint is None and emulator:
            endpoint = emulator if "://" in emulator else f"http://{emulator}"
            if anonymous is None:
                anonymous = True
        self._endpoint = (endpoint or GCS_ENDPOINT).rstrip("/")
        self._project = project or env("GOOGLE_CLOUD_PROJECT")
        self._credentials_file = credentials_file
        self._token = secret(token)
        self._anonymous = bool(anonymous)
        self._chunk_size = int(chunk_size)
        self._timeout = float(timeout)
        self._user_project = user_project
        self._local = threading.local()
        self._creds = None
        self._creds_lock = threading.Lock()
        self._just_written: dict[str, FileInfo] = {}
        self._pool_manager: urllib3.PoolManager | None = None

    def _remember(self, info: FileInfo) -> None:
        """The object resource the upload response returned (the store's own size, crc32c
        and generation for the object just created): the engine's stat right after close
        is answered from it once, saving one request per file."""
        with self._creds_lock:
            if len(self._just_written) > 4096:
                self._just_written.clear()
            self._just_written[info.path] = info

    # ------------------------------------------------------------ identity
    def options(self) -> dict[str, Any]:
        return clean_options({
            "endpoint": self._endpoint, "project": self._project,
            "credentials_file": self._credentials_file, "token": self._token,
            "anonymous": self._anonymous, "chunk_size": self._chunk_size,
            "timeout": self._timeout, "user_project": self._user_project,
        })

    # ------------------------------------------------------------ HTTP
    def _credentials(self):
        with self._creds_lock:
            if self._creds is None:
                import google.auth
                from google.oauth2 import service_account

                scopes = ["https://www.googleapis.com/auth/devstorage.read_write"]
                try:
                    path = self._credentials_file
                    if path:
                        self._creds = service_account.Credentials.from_service_account_file(
                            path, scopes=scopes)
                    else:
                        self._creds, project = google.auth.default(scopes=scopes)
                        self._project = self._project or project
                except Exception as exc:
                    raise FatalError(f"gs: no usable credentials: {type(exc).__name__}: {exc}") from None
            return self._creds

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            if self._anonymous or self._token:
                s = requests.Session()
                if self._token:
                    s.headers["Authorization"] = f"Bearer {self._token}"
            else:
                from google.auth.transport.requests import AuthorizedSession

                s = AuthorizedSession(self._credentials())
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            # the environment's proxies and CA bundle, read once here: with trust_env
            # requests re-reads them (and ~/.netrc) on every request, ~0.4 ms per small file
            s.proxies.update(requests.utils.get_environ_proxies(self._endpoint))
            ca = env("REQUESTS_CA_BUNDLE") or env("CURL_CA_BUNDLE")
            if ca:
                s.verify = ca
            s.trust_env = False
            self._local.session = s
        return s

    def _request(self, method: str, url: str, *, ok: tuple[int, ...] = (200, 201, 204),
                 what: str, stream: bool = False, **kw: Any) -> requests.Response:
        if self._user_project:
            kw.setdefault("params", {})["userProject"] = self._user_project
        try:
            r = self._session().request(method, url, timeout=self._timeout, stream=stream, **kw)
        except requests.RequestException as exc:
            raise network_error(exc, what) from None
        if r.status_code not in ok:
            body = r.text if not stream else ""
            r.close()
            raise http_error(r.status_code, what, body)
        return r

    def _pool(self) -> urllib3.PoolManager:
        """A urllib3 pool (thread-safe) for the one request per small file: a bare
        urllib3 request costs ~0.3 ms of CPU where requests costs ~0.5 ms, and small-file
        copies are bound by this process's CPU."""
        pool = self._pool_manager
        if pool is None:
            with self._creds_lock:
                if self._pool_manager is None:
                    ca = env("REQUESTS_CA_BUNDLE") or env("CURL_CA_BUNDLE")
                    kw: dict[str, Any] = {"ca_certs": ca} if ca else {}
                    proxy = requests.utils.get_environ_proxies(self._endpoint)
                    proxy_url = proxy.get(self._endpoint.split(":", 1)[0])
                    self._pool_manager = (
                        urllib3.ProxyManager(proxy_url, num_pools=4, maxsize=64, retries=False, **kw)
                        if proxy_url else
                        urllib3.PoolManager(num_pools=4, maxsize=64, retries=False, **kw))
                pool = self._pool_manager
        return pool

    def close(self) -> None:
        pool, self._pool_manager = self._pool_manager, None
        if pool is not None:
            pool.clear()

    def _auth_headers(self, method: str, url: str, headers: dict[str, str]) -> None:
        if self._anonymous:
            return
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
            return
        from google.auth.transport.requests import Request

        self._credentials().before_request(Request(), method, url, headers)  # refreshes

    def _post_json(self, url: str, params: dict[str, str], body: bytes,
                   headers: dict[str, str], *, what: str) -> dict:
        """POST ``body`` and return the JSON answer, over :meth:`_pool`."""
        if self._user_project:
            params = {**params, "userProject": self._user_project}
        full = f"{url}?{urlencode(params)}"
        headers = dict(headers)
        try:
            self._auth_headers("POST", full, headers)
            r = self._pool().request("POST", full, body=body, headers=headers,
                                     timeout=self._timeout, retries=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise network_error(exc, what) from None
        if r.status not in (200, 201):
            raise http_error(r.status, what, r.data.decode("utf-8", "replace"))
        return json.loads(r.data)

    def _obj_url(self, bucket: str, key: str) -> str:
        return f"{self._endpoint}/storage/v1/b/{_q(bucket)}/o/{_q(key)}"

    def _info(self, bucket: str, item: dict) -> FileInfo:
        meta = item.get("metadata") or {}
        mtime = meta.get(META_MTIME)
        try:
            mtime_ns = int(mtime) if mtime is not None else parse_rfc3339_ns(item.get("updated"))
        except ValueError:
            mtime_ns = parse_rfc3339_ns(item.get("updated"))
        checksum = crc32c_hex_from_b64(item.get("crc32c")) or md5_hex_from_b64(item.get("md5Hash"))
        return FileInfo(path=f"{bucket}/{item['name']}", kind=FILE, size=int(item.get("size", 0)),
                        mtime_ns=mtime_ns, checksum=checksum,
                        version=str(item["generation"]) if item.get("generation") else None)

    # ------------------------------------------------------------ metadata
    def _list(self, bucket: str, prefix: str, delimiter: str | None = "/",
              max_results: int = 1000) -> Iterator[dict]:
        url = f"{self._endpoint}/storage/v1/b/{_q(bucket)}/o"
        params: dict[str, Any] = {"prefix": prefix, "maxResults": max_results,
                                  "fields": _LIST_FIELDS, "projection": "noAcl"}
        if delimiter:
            params["delimiter"] = delimiter
        while True:
            try:
                page = self._request("GET", url, params=dict(params),
                                     what=f"list gs://{bucket}/{prefix}").json()
            except FileNotFoundError as exc:
                raise bucket_missing("gs", bucket, exc) from None
            yield page
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    def list_dir(self, path: str) -> list[FileInfo]:
        bucket, key = split_bucket(path)
        prefix = key.rstrip("/") + "/" if key else ""
        out: list[FileInfo] = []
        for page in self._list(bucket, prefix):
            for p in page.get("prefixes", []):
                out.append(FileInfo(path=f"{bucket}/{p[:-1]}", kind=DIR))  # keep "a//" apart from "a/"
            for item in page.get("items", []):
                if item["name"] == prefix:  # a "directory marker" object
                    continue
                out.append(self._info(bucket, item))
        if not out and prefix and not self._exists_prefix(bucket, prefix):
            raise FileNotFoundError(f"gs://{path}: no such directory")
        return out

    def _exists_prefix(self, bucket: str, prefix: str) -> bool:
        page = next(self._list(bucket, prefix, delimiter=None, max_results=1))
        return bool(page.get("items"))

    def _get_object(self, bucket: str, key: str) -> dict | None:
        try:
            return self._request("GET", self._obj_url(bucket, key), params={"projection": "noAcl"},
                                 what=f"stat gs://{bucket}/{key}").json()
        except FileNotFoundError:
            return None

    def stat(self, path: str) -> FileInfo | None:
        with self._creds_lock:
            fresh = self._just_written.pop(path, None)
        if fresh is not None:
            return fresh
        bucket, key = split_bucket(path)
        if not key:
            try:
                self._request("GET", f"{self._endpoint}/storage/v1/b/{_q(bucket)}",
                              what=f"stat gs://{bucket}")
            except FileNotFoundError:
                return None
            return FileInfo(path=bucket, kind=DIR)
        item = self._get_object(bucket, key)
        if item is not None:
            return self._info(bucket, item)
        try:
            if self._exists_prefix(bucket, key.rstrip("/") + "/"):
                return FileInfo(path=path.rstrip("/"), kind=DIR)
        except FatalError:
            return None
        return None

    def checksum(self, path: str, kind: str) -> str | None:
        bucket, key = split_bucket(path)
        item = self._get_object(bucket, key)
        if item is None:
            return None
        if kind == "crc32c":
            return crc32c_hex_from_b64(item.get("crc32c"))
        if kind == "md5":
            return md5_hex_from_b64(item.get("md5Hash"))
        return None

    # ------------------------------------------------------------ data
    def open_read(self, path: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        """``length`` bounds the HTTP range, so a ranged read does not make the server
        stream the rest of the object."""
        bucket, key = split_bucket(path)
        headers = {"Accept-Encoding": "identity"}
        rng = http_range(offset, length)
        if rng:
            headers["Range"] = rng
        what = f"read gs://{path}"
        try:
            r = self._request("GET", self._obj_url(bucket, key), params={"alt": "media"},
                              headers=headers, stream=True, ok=(200, 206), what=what)
        except FatalError as exc:
            if "HTTP 416" in str(exc):  # offset at EOF
                return ChunkReader(lambda n: b"")  # type: ignore[return-value]
            raise
        return ChunkReader(r.raw.read, r.close,  # type: ignore[return-value]
                           lambda exc: network_error(exc, what))

    def open_write(self, path: str, *, mtime_ns: int | None = None,
                   expect_version: str | None = None) -> Writer:
        return _GCSWriter(self, path, mtime_ns, expect_version)

    # ------------------------------------------------------------ namespace
    def delete_file(self, path: str, generation: str | None = None) -> None:
        with self._creds_lock:
            self._just_written.pop(path, None)
        bucket, key = split_bucket(path)
        params = {"ifGenerationMatch": generation} if generation else None
        try:
            self._request("DELETE", self._obj_url(bucket, key), params=params,
                          what=f"delete gs://{path}")
        except FileNotFoundError:
            pass

    def delete_version(self, path: str, version: str) -> None:
        self.delete_file(path, generation=version)

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy (rewrite) keeping metadata."""
        sb, sk = split_bucket(src)
        db, dk = split_bucket(dst)
        url = f"{self._obj_url(sb, sk)}/rewriteTo/b/{_q(db)}/o/{_q(dk)}"
        params: dict[str, Any] = {}
        while True:
            r = self._request("POST", url, params=dict(params), json={},
                              what=f"copy gs://{src} to gs://{dst}").json()
            if r.get("done", True):
                return
            params["rewriteToken"] = r["rewriteToken"]

    # ------------------------------------------------------------ parallel ranges (compose)
    def begin_parallel_write(self, path: str, size: int, mtime_ns: int | None = None,
                             expect_version: str | None = None) -> dict:
        return {"path": path, "size": size, "mtime_ns": mtime_ns, "expect": expect_version,
                "staging": f"{_staging_prefix(path)}/{uuid.uuid4().hex}"}

    def write_part(self, handle: dict, index: int, offset: int, chunks: Iterable[bytes]) -> dict:
        part = f"{handle['staging']}/{index:06d}"
        w = _GCSWriter(self, part, None, None)
        size = 0
        try:
            for data in chunks:
                w.write(data)
                size += len(data)
            w.close()
        except BaseException:
            w.abort()
            raise
        return {"index": index, "offset": offset, "size": size, "name": split_bucket(part)[1]}

    def _compose(self, bucket: str, sources: list[str], dest: str, metadata: dict | None,
                 expect: str | None) -> dict:
        body: dict[str, Any] = {"sourceObjects": [{"name": s} for s in sources],
                                "destination": {"contentType": "application/octet-stream"}}
        if metadata:
            body["destination"]["metadata"] = metadata
        params = {"ifGenerationMatch": expect} if expect is not None else None
        return self._request("POST", self._obj_url(bucket, dest) + "/compose", json=body,
                             params=params, what=f"compose gs://{bucket}/{dest}").json()

    def complete_parallel_write(self, handle: dict, parts: list[dict]) -> None:
        bucket, key = split_bucket(handle["path"])
        parts = sorted(parts, key=lambda p: p["index"])
        names = [p["name"] for p in parts]
        staging_key = split_bucket(handle["staging"])[1]
        level = 0
        try:  # whatever happens, the part objects under the staging prefix go
            total = sum(p["size"] for p in parts)
            if total != handle["size"]:
                raise RetryableError(f"parallel write of gs://{handle['path']} wrote {total} of "
                                     f"{handle['size']} bytes")
            while len(names) > 32:  # compose takes at most 32 sources: build a tree
                level += 1
                grouped = []
                for i in range(0, len(names), 32):
                    name = f"{staging_key}/l{level}-{i // 32:06d}"
                    self._compose(bucket, names[i:i + 32], name, None, None)
                    grouped.append(name)
                names = grouped
            meta = mtime_metadata(META_MTIME, handle.get("mtime_ns")) or None
            self._compose(bucket, names, key, meta, handle.get("expect"))
        finally:
            self.abort_parallel_write(handle)

    def abort_parallel_write(self, handle: dict) -> None:
        self._delete_prefix(handle["staging"])

    def discard_staged(self, path: str) -> None:
        """Delete the part objects of every interrupted parallel write of ``path``."""
        self._delete_prefix(_staging_prefix(path))

    def _delete_prefix(self, path: str) -> None:
        bucket, prefix = split_bucket(path)
        try:
            for page in self._list(bucket, prefix + "/", delimiter=None):
                for item in page.get("items", []):
                    self.delete_file(f"{bucket}/{item['name']}")
        except (FatalError, RetryableError, PreconditionFailed):
            pass
