"""Amazon S3 and S3-compatible stores through boto3 (``s3://bucket/key``).

Why boto3 and not ``pyarrow.fs.S3FileSystem``/s3fs: writes need ``If-None-Match: *`` /
``If-Match`` preconditions, user metadata (the source mtime), control of multipart uploads
(part size, abort on failure, parts written by several workers) and the ETag of every
listing row; pyarrow exposes none of these. boto3 clients are thread-safe, so one lazily
built client serves every worker thread.

Checksums: listings carry the ETag, which is the MD5 of the content for single-request
uploads ("md5:<hex>"). Multipart ETags are not an MD5; for those the writer checks the
multipart ETag it expects (MD5 of the part MD5s) itself. CRC32C needs ``botocore[crt]``
(not installed) and moto's CRC32C for multipart uploads does not match a full-object CRC,
so it is not used.

Configuration, read when the file system is built: the standard AWS chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
instance roles), ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``; or the options ``endpoint_url``, ``region``, ``profile``,
``access_key_id``, ``secret_access_key``, ``session_token``, ``anonymous``, ``verify``.
``AWS_CA_BUNDLE`` is ignored for plain ``http://`` endpoints.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterable
from typing import Any, BinaryIO

from replicator.errors import (
    FatalError,
    PreconditionFailed,
    ReplicatorError,
    RetryableError,
    UsageError,
    VerificationError,
)
from replicator.filesystems._common import (
    ChunkReader,
    MiB,
    ObjectStore,
    ObjectWriter,
    bucket_missing,
    clean_options,
    env,
    http_range,
    mtime_metadata,
    network_error,
    secret,
    split_bucket,
)
from replicator.filesystems.base import DIR, FILE, Capabilities, FileInfo, FileSystem, Writer
from replicator.secrets import redact

META_MTIME = "mtime-ns"  # x-amz-meta-mtime-ns
_STAGING_MIN_PART = 5 * MiB
_FATAL_CODES = {
    "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "AllAccessDisabled", "InvalidBucketName", "AccountProblem", "ExpiredToken",
    "InvalidToken", "AuthorizationHeaderMalformed", "PermanentRedirect",
}
_RETRY_CODES = {
    "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestTimeTooSkewed", "OperationAborted",
}


def _conditions(expect: str | None) -> dict[str, str]:
    """Write preconditions: "0" for must-not-exist, else the ETag the object must have."""
    if expect is None:
        return {}
    if expect == "0":
        return {"IfNoneMatch": "*"}
    return {"IfMatch": expect}


def _content_md5(body: bytes) -> tuple[bytes, str]:
    """The MD5 digest of ``body`` and its base64 for the Content-MD5 header."""
    digest = hashlib.md5(body).digest()
    return digest, base64.b64encode(digest).decode()


def _map_error(exc: BaseException, what: str) -> BaseException:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        ReadTimeoutError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    if isinstance(exc, (ReplicatorError, FileNotFoundError)):
        return exc
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        text = redact(f"{what}: {code or status} {err.get('Message', '')}".strip())
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
            return PreconditionFailed(text)
        if code in ("NoSuchKey", "NotFound") or (status == 404 and code not in _FATAL_CODES):
            return FileNotFoundError(text)
        if code in _FATAL_CODES or status in (400, 401, 403):
            return FatalError(text)
        if code in _RETRY_CODES or status in (408, 429) or status >= 500:
            return RetryableError(text)
        return FatalError(text)
    if isinstance(exc, NoCredentialsError):
        return FatalError(f"{what}: no AWS credentials found")
    if isinstance(exc, (BotoConnectionError, ReadTimeoutError)):
        return network_error(exc, what)
    if isinstance(exc, BotoCoreError):
        return RetryableError(redact(f"{what}: {type(exc).__name__}: {exc}"))
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return network_error(exc, what)
    return exc


class _S3Writer(ObjectWriter):
    """Single PUT (with Content-MD5) when the object fits in one part, otherwise a multipart
    upload; the object appears only when the PUT / CompleteMultipartUpload succeeds."""

    def __init__(self, fs: S3FileSystem, path: str, mtime_ns: int | None,
                 expect_version: str | None) -> None:
        super().__init__(fs, path, "s3", META_MTIME, mtime_ns, expect_version)
        self.fs: S3FileSystem = fs
        self.part_size = fs._part_size
        self.upload_id: str | None = None
        self.parts: list[dict] = []
        self.part_md5s: list[bytes] = []
        self.done = False
        self.etag: str | None = None

    def write(self, data: bytes | memoryview) -> None:
        self.buf += data
        while len(self.buf) > self.part_size:
            self._upload_part(self.part_size)

    def _upload_part(self, n: int) -> None:
        c = self.fs._client()
        what = f"upload s3://{self.path}"
        if self.upload_id is None:
            self.upload_id = self.fs._call(
                what, c.create_multipart_upload, Bucket=self.bucket, Key=self.key,
                Metadata=self.meta, ContentType="application/octet-stream")["UploadId"]
        body = bytes(self.buf[:n])
        digest, content_md5 = _content_md5(body)
        r = self.fs._call(what, c.upload_part, Bucket=self.bucket, Key=self.key,
                          UploadId=self.upload_id, PartNumber=len(self.parts) + 1, Body=body,
                          ContentMD5=content_md5)
        self.parts.append({"PartNumber": len(self.parts) + 1, "ETag": r["ETag"]})
        self.part_md5s.append(digest)
        del self.buf[:n]

    def close(self) -> None:
        if self.done:
            return
        what = f"upload s3://{self.path}"
        try:
            c = self.fs._client()
            if self.upload_id is None:
                body = bytes(self.buf)
                digest, content_md5 = _content_md5(body)
                r = self.fs._call(what, c.put_object, Bucket=self.bucket, Key=self.key,
                                  Body=body, Metadata=self.meta,
                                  ContentType="application/octet-stream",
                                  ContentMD5=content_md5, **_conditions(self.expect))
                expected = f'"{digest.hex()}"'
            else:
                if self.buf:
                    self._upload_part(len(self.buf))
                r = self.fs._call(what, c.complete_multipart_upload, Bucket=self.bucket,
                                  Key=self.key, UploadId=self.upload_id,
                                  MultipartUpload={"Parts": self.parts},
                                  **_conditions(self.expect))
                self.upload_id = None  # completed: nothing to abort any more
                joined = hashlib.md5(b"".join(self.part_md5s)).hexdigest()
                expected = f'"{joined}-{len(self.parts)}"'
            self.etag = r.get("ETag")
            if self.etag and self.etag != expected:
                err = VerificationError(
                    f"s3://{self.path}: store ETag {self.etag} differs from the {expected} "
                    "computed while uploading")
                err.version = self.etag  # the damaged object now live: replaced or removed
                raise err
        except BaseException:
            self.abort()
            raise
        self.done = True
        self.buf = bytearray()

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        self.buf = bytearray()
        if self.upload_id is not None:
            try:
                self.fs._client().abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:
                pass
            self.upload_id = None


class S3FileSystem(ObjectStore, FileSystem):
    scheme = "s3"
    capabilities = Capabilities(
        hash_kinds=("md5",),
        mtime_precision_ns=1_000_000_000,  # LastModified: seconds
        atomic_rename=False,
        can_set_mtime=False,
        can_set_mode=False,
        directories=False,
        parallel_write=True,
        # ListObjects carries no user metadata: listing and stat both report the upload
        # time (they must agree for the diff); the source mtime is kept in the object's
        # metadata (x-amz-meta-mtime-ns). When the engine lists this store as a destination
        # it maps upload times back to source mtimes: from the manifest for objects it
        # wrote (no request), else with source_mtime() (one HEAD, what rclone does for
        # every object). mtime_from_metadata=True reports it in every listing instead.
        listing_mtime="upload",
        min_part_size=_STAGING_MIN_PART,
        part_in_memory=True,  # write_part sends one body per part
    )

    def __init__(self, endpoint_url: str | None = None, region: str | None = None,
                 profile: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, session_token: str | None = None,
                 anonymous: bool = False, verify: bool | str | None = None,
                 part_size: int = 16 * MiB, max_pool_connections: int = 64,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0,
                 addressing_style: str = "path", mtime_from_metadata: bool = False) -> None:
        self._endpoint_url = endpoint_url or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
        self._region = region or env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1"
        self._profile = profile
        self._access_key_id = access_key_id
        self._secret_access_key = secret(secret_access_key)
        self._session_token = secret(session_token)
        self._anonymous = bool(anonymous)
        self._verify = verify
        self._part_size = max(_STAGING_MIN_PART, int(part_size))
        self._pool = int(max_pool_connections)
        self._timeouts = (float(connect_timeout), float(read_timeout))
        self._addressing_style = addressing_style
        self._mtime_from_metadata = bool(mtime_from_metadata)
        # the values of the environment's credentials are secrets too
        secret(env("AWS_SECRET_ACCESS_KEY"))
        secret(env("AWS_SESSION_TOKEN"))
        self._lock = threading.Lock()
        self._c = None

    @classmethod
    def from_uri_credentials(cls, user: str | None, password: str | None) -> FileSystem:
        """``s3://KEY_ID:SECRET@bucket/...`` (as Hadoop's s3a once took): the pair is used as
        the access key, never kept in the path, the pair key or any message."""
        if not user or not password:
            raise UsageError("s3:// URI credentials: expected ACCESS_KEY_ID:SECRET_ACCESS_KEY@bucket")
        return cls(access_key_id=user, secret_access_key=password)

    def options(self) -> dict[str, Any]:
        return clean_options({
            "endpoint_url": self._endpoint_url, "region": self._region, "profile": self._profile,
            "access_key_id": self._access_key_id, "secret_access_key": self._secret_access_key,
            "session_token": self._session_token, "anonymous": self._anonymous or None,
            "verify": self._verify, "part_size": self._part_size,
            "max_pool_connections": self._pool, "connect_timeout": self._timeouts[0],
            "read_timeout": self._timeouts[1], "addressing_style": self._addressing_style,
            "mtime_from_metadata": self._mtime_from_metadata or None,
        })

    def _client(self):
        if self._c is not None:
            return self._c
        with self._lock:
            if self._c is None:
                import boto3
                from botocore import UNSIGNED
                from botocore.config import Config

                session = boto3.session.Session(profile_name=self._profile)
                cfg = Config(
                    region_name=self._region,
                    max_pool_connections=self._pool,
                    connect_timeout=self._timeouts[0],
                    read_timeout=self._timeouts[1],
                    retries={"total_max_attempts": 2, "mode": "standard"},
                    s3={"addressing_style": self._addressing_style},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    signature_version=UNSIGNED if self._anonymous else None,
                )
                verify = self._verify
                if verify is None and (self._endpoint_url or "").startswith("http://"):
                    verify = False  # AWS_CA_BUNDLE is meaningless for plain http
                creds = session.get_credentials()
                if creds is not None:
                    secret(creds.secret_key)
                    secret(creds.token)
                self._c = session.client(
                    "s3", endpoint_url=self._endpoint_url, config=cfg, verify=verify,
                    aws_access_key_id=self._access_key_id,
                    aws_secret_access_key=self._secret_access_key,
                    aws_session_token=self._session_token)
        return self._c

    def _call(self, what: str, fn, **kw):
        try:
            return fn(**kw)
        except Exception as exc:
            raise _map_error(exc, what) from None

    # ------------------------------------------------------------ metadata
    def list_dir(self, path: str) -> list[FileInfo]:
        bucket, key = split_bucket(path)
        prefix = key.rstrip("/") + "/" if key else ""
        c = self._client()
        out: list[FileInfo] = []
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": 1000}
        while True:
            try:
                page = self._call(f"list s3://{bucket}/{prefix}", c.list_objects_v2, **kw)
            except FileNotFoundError as exc:
                raise bucket_missing("s3", bucket, exc) from None
            for p in page.get("CommonPrefixes", []):
                out.append(FileInfo(path=f"{bucket}/{p['Prefix'][:-1]}", kind=DIR))  # "a//" is not "a/"
            for obj in page.get("Contents", []):
                if obj["Key"] == prefix:
                    continue
                out.append(self._info(bucket, obj["Key"], obj["Size"], obj["ETag"],
                                      obj["LastModified"], None))
            if not page.get("IsTruncated"):
                break
            kw["ContinuationToken"] = page["NextContinuationToken"]
        if not out and prefix and not self._exists_prefix(bucket, prefix):
            raise FileNotFoundError(f"s3://{path}: no such directory")
        if self._mtime_from_metadata:
            out = self._with_metadata_mtimes(out)
        return out

    def _with_metadata_mtimes(self, infos: list[FileInfo]) -> list[FileInfo]:
        """One HEAD per object (what rclone does): exact source mtimes, slow listings."""
        from concurrent.futures import ThreadPoolExecutor

        def one(info: FileInfo) -> FileInfo:
            return (self.stat(info.path) or info) if info.kind == FILE else info

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, infos))

    def _exists_prefix(self, bucket: str, prefix: str) -> bool:
        page = self._call(f"list s3://{bucket}/{prefix}", self._client().list_objects_v2,
                          Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return bool(page.get("KeyCount") or page.get("Contents"))

    def _info(self, bucket: str, key: str, size: int, etag: str | None, modified,
              meta: dict | None) -> FileInfo:
        mtime_ns = int(modified.timestamp()) * 1_000_000_000 + modified.microsecond * 1000
        if self._mtime_from_metadata and meta and META_MTIME in meta:
            try:
                mtime_ns = int(meta[META_MTIME])
            except ValueError:
                pass
        tag = (etag or "").strip('"')
        checksum = f"md5:{tag}" if len(tag) == 32 and "-" not in tag else None
        return FileInfo(path=f"{bucket}/{key}", kind=FILE, size=int(size), mtime_ns=mtime_ns,
                        checksum=checksum, version=etag)

    def stat(self, path: str) -> FileInfo | None:
        bucket, key = split_bucket(path)
        c = self._client()
        if not key:
            try:
                self._call(f"stat s3://{bucket}", c.head_bucket, Bucket=bucket)
            except (FileNotFoundError, FatalError):
                return None
            return FileInfo(path=bucket, kind=DIR)
        try:
            h = self._call(f"stat s3://{path}", c.head_object, Bucket=bucket, Key=key)
        except FileNotFoundError:
            try:
                if self._exists_prefix(bucket, key.rstrip("/") + "/"):
                    return FileInfo(path=path.rstrip("/"), kind=DIR)
            except (FileNotFoundError, FatalError):
                pass
            return None
        return self._info(bucket, key, h["ContentLength"], h.get("ETag"), h["LastModified"],
                          h.get("Metadata"))

    def source_mtime(self, path: str) -> int | None:
        """One HEAD: the ``mtime-ns`` metadata our writer kept (None if absent or gone)."""
        bucket, key = split_bucket(path)
        try:
            h = self._call(f"stat s3://{path}", self._client().head_object, Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        try:
            return int((h.get("Metadata") or {})[META_MTIME])
        except (KeyError, ValueError):
            return None

    # ------------------------------------------------------------ data
    def open_read(self, path: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        """``length`` bounds the HTTP range, so a ranged read does not make the server
        stream the rest of the object."""
        bucket, key = split_bucket(path)
        kw: dict[str, Any] = {"Bucket": bucket, "Key": key}
        rng = http_range(offset, length)
        if rng:
            kw["Range"] = rng
        what = f"read s3://{path}"
        try:
            r = self._call(what, self._client().get_object, **kw)
        except FatalError as exc:
            if "InvalidRange" in str(exc):
                return ChunkReader(lambda n: b"")  # type: ignore[return-value]
            raise
        body = r["Body"]
        return ChunkReader(body.read, body.close,  # type: ignore[return-value]
                           lambda exc: _map_error(exc, what))

    def open_write(self, path: str, *, mtime_ns: int | None = None,
                   expect_version: str | None = None) -> Writer:
        return _S3Writer(self, path, mtime_ns, expect_version)

    # ------------------------------------------------------------ namespace
    def delete_file(self, path: str) -> None:
        bucket, key = split_bucket(path)
        try:
            self._call(f"delete s3://{path}", self._client().delete_object, Bucket=bucket, Key=key)
        except FileNotFoundError:
            pass

    def delete_version(self, path: str, version: str) -> None:
        bucket, key = split_bucket(path)
        try:
            self._call(f"delete s3://{path}", self._client().delete_object, Bucket=bucket,
                       Key=key, IfMatch=version)
        except (FileNotFoundError, PreconditionFailed):
            pass  # gone, or replaced by someone else since: not ours to delete

    def copy(self, src: str, dst: str) -> None:
        sb, sk = split_bucket(src)
        db, dk = split_bucket(dst)
        self._call(f"copy s3://{src}", self._client().copy,
                   CopySource={"Bucket": sb, "Key": sk}, Bucket=db, Key=dk)

    # ------------------------------------------------------------ parallel ranges (multipart)
    def begin_parallel_write(self, path: str, size: int, mtime_ns: int | None = None,
                             expect_version: str | None = None) -> dict:
        bucket, key = split_bucket(path)
        meta = mtime_metadata(META_MTIME, mtime_ns)
        r = self._call(f"upload s3://{path}", self._client().create_multipart_upload,
                       Bucket=bucket, Key=key, Metadata=meta,
                       ContentType="application/octet-stream")
        return {"path": path, "size": size, "upload_id": r["UploadId"], "expect": expect_version}

    def write_part(self, handle: dict, index: int, offset: int, chunks: Iterable[bytes]) -> dict:
        """Parts are numbered ``index + 1``; every part but the last must be >= 5 MiB."""
        bucket, key = split_bucket(handle["path"])
        body = b"".join(chunks)  # one part in memory: bounded by the part size
        r = self._call(f"upload s3://{handle['path']}", self._client().upload_part,
                       Bucket=bucket, Key=key, UploadId=handle["upload_id"],
                       PartNumber=index + 1, Body=body, ContentMD5=_content_md5(body)[1])
        return {"index": index, "offset": offset, "size": len(body), "etag": r["ETag"]}

    def complete_parallel_write(self, handle: dict, parts: list[dict]) -> None:
        bucket, key = split_bucket(handle["path"])
        parts = sorted(parts, key=lambda p: p["index"])
        total = sum(p["size"] for p in parts)
        if total != handle["size"]:
            self.abort_parallel_write(handle)
            raise RetryableError(f"parallel write of s3://{handle['path']} wrote {total} of "
                                 f"{handle['size']} bytes")
        try:
            self._call(f"upload s3://{handle['path']}", self._client().complete_multipart_upload,
                       Bucket=bucket, Key=key, UploadId=handle["upload_id"],
                       MultipartUpload={"Parts": [{"PartNumber": p["index"] + 1, "ETag": p["etag"]}
                                                  for p in parts]},
                       **_conditions(handle.get("expect") or None))
        except BaseException:
            self.abort_parallel_write(handle)
            raise

    def discard_staged(self, path: str) -> None:
        """Abort every unfinished multipart upload of exactly this key (an interrupted run's
        in-place or parallel write; nothing else may be uploading it while the pair is locked)."""
        bucket, key = split_bucket(path)
        c = self._client()
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
        try:
            while True:
                page = self._call(f"list uploads s3://{path}", c.list_multipart_uploads, **kw)
                for up in page.get("Uploads", []):
                    if up["Key"] == key:
                        self._call(f"abort upload s3://{path}", c.abort_multipart_upload,
                                   Bucket=bucket, Key=key, UploadId=up["UploadId"])
                if not page.get("IsTruncated"):
                    return
                kw["KeyMarker"] = page.get("NextKeyMarker")
                kw["UploadIdMarker"] = page.get("NextUploadIdMarker")
        except FileNotFoundError:
            return

    def abort_parallel_write(self, handle: dict) -> None:
        bucket, key = split_bucket(handle["path"])
        try:
            self._client().abort_multipart_upload(Bucket=bucket, Key=key,
                                                  UploadId=handle["upload_id"])
        except Exception:
            pass
