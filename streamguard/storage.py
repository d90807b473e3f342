"""Artifact stores: one protocol, a local-folder and an S3 implementation, chosen by URI.

Keys are `/`-separated relative paths
(`tenants/<t>/jobs/<id>/checkpoints/epoch-0001/model.safetensors`).
`store_from_uri("file:///abs/dir")` or `store_from_uri("s3://bucket/prefix")` picks the backend;
boto3 is imported only by the S3 store, so the training core never needs it.

Writes are all-or-nothing: a reader sees the old object or the new one, never half a file.
Credentials for S3 come from boto3's normal chain (environment, profile, instance role);
presigned URLs are signed with SigV4.

Error messages reach API callers, so they name the key (without the `tenants/<id>/` area) and
never the store's root folder, bucket, endpoint or the S3 service's own text; the underlying
exception stays chained (`raise ... from exc`) for the server's log. A store that cannot take a
write (read-only, full, out of quota, unreachable, refusing access) raises `StoreUnavailable`:
the API answers 503 `store_unavailable` and a worker fails its job with that message.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlparse

from streamguard.errors import StorageError

MiB = 1024 * 1024
#: S3 client timeouts (seconds): fail a stuck request instead of hanging a worker or the API.
S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 60
SUPPORTED_SCHEMES = ("file://", "s3://")
#: S3 error codes that mean the store (not the request) is at fault: StoreUnavailable, 503.
S3_UNAVAILABLE_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId",
                                  "SignatureDoesNotMatch", "ExpiredToken", "NoSuchBucket",
                                  "SlowDown", "ServiceUnavailable", "InternalError",
                                  "RequestTimeout", "QuotaExceeded"})
_TMP_SUFFIX = ".partial"  # in-flight writes are named `.<name>.<random>.partial`


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@runtime_checkable
class ArtifactStore(Protocol):
    """Where checkpoints, datasets and exported models live."""

    def put_file(self, local_path: str | Path, key: str) -> None:
        """Upload a local file under `key` (replacing any object there)."""

    def get_file(self, key: str, local_path: str | Path) -> None:
        """Download `key` to `local_path`; raises StorageError if it does not exist."""

    def put_bytes(self, data: bytes, key: str) -> None:
        """Store a small object (manifests, pointers)."""

    def get_bytes(self, key: str) -> bytes:
        """Read a small object; raises StorageError if it does not exist."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key."""

    def delete(self, key: str) -> None:
        """Remove an object; a missing key is not an error."""

    def uri(self, key: str) -> str:
        """A URI naming the object (`file:///...` or `s3://bucket/key`)."""


class ArtifactNotFound(StorageError):
    """No object is stored under the requested key."""

    code = "artifact_not_found"


class StoreUnavailable(StorageError, OSError):
    """The store cannot take or serve objects right now (read-only, full, unreachable, ...).

    An operator's problem, not the caller's: the API answers 503; retrying later may succeed.
    Also an OSError, as the failed local write it replaces was (callers catching that still do).
    """

    code = "store_unavailable"


#: What a failed write says, by errno; anything else is "could not write (<errno name>)".
_WRITE_FAULTS = {
    errno.EROFS: "is read-only",
    errno.ENOSPC: "is full (no space left on the device)",
    errno.EDQUOT: "is over its disk quota",
    errno.EACCES: "is not writable (permission denied)",
    errno.EPERM: "is not writable (operation not permitted)",
    errno.ENOTDIR: "is misconfigured (its root is not a folder)",
    errno.EEXIST: "is misconfigured (its root is not a folder)",
    errno.EIO: "has an I/O error",
}


@contextmanager
def _store_write(key: str, action: str = "writing") -> Iterator[None]:
    """OSError of a local write -> StoreUnavailable naming the key and the cause, never a path."""
    try:
        yield
    except OSError as exc:
        cause = exc.strerror or (str(exc) if exc.filename is None else "") or \
            errno.errorcode.get(exc.errno or 0, type(exc).__name__)  # never the file name
        what = _WRITE_FAULTS.get(exc.errno or 0) or f"could not be written ({cause})"
        raise StoreUnavailable(f"the artifact store {what}: {action} {display_key(key)!r} "
                               "failed; retry once an operator has made the store writable "
                               "again") from exc


def display_key(key: str) -> str:
    """`key` as its tenant knows it: `tenants/<id>/jobs/x` -> `jobs/x` (other keys unchanged)."""
    parts = key.split("/", 2)
    if len(parts) == 3 and parts[0] == "tenants" and parts[1]:
        return parts[2]
    return key


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so checkpoints never sit whole in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def check_key(key: str, *, allow_prefix: bool = False) -> str:
    """Return `key` if it is a safe relative `/`-path, else raise StorageError.

    With `allow_prefix`, the empty string and a trailing `/` are accepted (list prefixes).
    """
    parts = key.split("/")
    if allow_prefix and parts[-1] == "":
        parts = parts[:-1]
    bad = (
        (not key and not allow_prefix)
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
    )
    if bad:
        raise StorageError(
            f"invalid artifact key {key!r}: keys are relative '/'-separated paths without "
            "'.', '..', empty parts, backslashes or a leading '/' (e.g. 'checkpoints/last.pt')",
            field="key",
        )
    return key


@contextmanager
def _atomic_destination(dest: Path) -> Iterator[IO[bytes]]:
    """Yield a temp file beside `dest`; on success fsync it and `os.replace` it onto `dest`.

    Same folder means same filesystem, so the replace is atomic. The fsync costs one flush per
    object, which is what makes a checkpoint that `exists()` also survive a power cut.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=_TMP_SUFFIX, dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


class LocalArtifactStore:
    """Objects are files under `root`; keys map to relative paths.

    Args:
        root: the folder holding the objects; created if missing.

    Raises:
        StorageError: for keys that would escape `root`; ArtifactNotFound (a StorageError)
            when reading a missing key.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # read-only or misplaced: every write raises StoreUnavailable, /readyz says so

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def local_path(self, key: str) -> Path:
        """The file that holds `key` (it may not exist yet); used to stream downloads."""
        check_key(key)
        if _is_temp_name(key.rsplit("/", 1)[-1]):
            raise StorageError(f"invalid artifact key {key!r}: names like '.x.partial' are "
                               "reserved for in-flight writes", field="key")
        path = self.root / key
        # A symlink inside root could still point outside it; resolve to be sure.
        if not path.resolve().is_relative_to(self.root):
            raise StorageError(f"artifact key {display_key(key)!r} resolves outside the store "
                               "root (a link inside it points elsewhere)", field="key")
        return path

    def _existing(self, key: str) -> Path:
        path = self.local_path(key)
        if not path.is_file():
            raise ArtifactNotFound(f"no artifact under key {display_key(key)!r}", field="key")
        return path

    def put_file(self, local_path: str | Path, key: str) -> None:
        """Copy a local file under `key` atomically; StoreUnavailable if the store refuses."""
        dest = self.local_path(key)
        with open(local_path, "rb") as src:  # a missing source stays the caller's OSError
            with _store_write(key), _atomic_destination(dest) as out:
                shutil.copyfileobj(src, out, MiB)

    def get_file(self, key: str, local_path: str | Path) -> None:
        """Copy `key` to `local_path` atomically; ArtifactNotFound if missing."""
        src_path = self._existing(key)
        with open(src_path, "rb") as src, _atomic_destination(Path(local_path)) as out:
            shutil.copyfileobj(src, out, MiB)

    def put_bytes(self, data: bytes, key: str) -> None:
        """Write a small object atomically; StoreUnavailable if the store refuses."""
        dest = self.local_path(key)
        with _store_write(key), _atomic_destination(dest) as out:
            out.write(data)

    def get_bytes(self, key: str) -> bytes:
        """Read a small object; ArtifactNotFound if missing."""
        return self._existing(key).read_bytes()

    def exists(self, key: str) -> bool:
        """Whether a file is stored under `key`."""
        return self.local_path(key).is_file()

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Files whose key starts with `prefix` (plain string prefix), sorted by key."""
        check_key(prefix, allow_prefix=True)
        # Walk only the deepest folder the prefix names, not the whole store.
        folder = self.root / prefix.rpartition("/")[0]
        if not folder.resolve().is_relative_to(self.root) or not folder.is_dir():
            return []
        found: list[ObjectInfo] = []
        for dirpath, _dirnames, filenames in os.walk(folder):
            for name in filenames:
                if _is_temp_name(name):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key=key, size=path.stat().st_size))
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        """Remove the file under `key`; a missing key is not an error."""
        path = self.local_path(key)
        with _store_write(key, "deleting"):
            path.unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        """`file:///abs/path` of the object."""
        return self.local_path(key).as_uri()


class S3ArtifactStore:
    """Objects live in an S3 (or MinIO, moto) bucket under `prefix/`.

    Args:
        bucket: the bucket name.
        prefix: a key prefix inside the bucket ('' for the bucket root).
        endpoint_url: a non-AWS endpoint (MinIO, moto); path-style addressing is used then.
        region_name: the bucket's region; default from the boto3 chain.
        client: a ready boto3 S3 client (the other connection arguments are then ignored).
        multipart_threshold: files at least this big upload in parts (lowered in tests).
        multipart_chunksize: part size; S3 requires at least 5 MiB for all but the last part.

    Raises:
        StorageError: when S3 refuses a request; ArtifactNotFound for a missing key.
    """

    list_page_size = 1000  # keys per ListObjectsV2 request (S3's maximum); tests lower it

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region_name: str | None = None, client: Any = None,
                 multipart_threshold: int = 8 * MiB, multipart_chunksize: int = 8 * MiB) -> None:
        # Imported here so that importing streamguard.storage never pulls in boto3.
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if not bucket:
            raise StorageError("S3 artifact store needs a bucket name", field="bucket")
        self.bucket = bucket
        self.prefix = check_key(prefix.strip("/"), allow_prefix=True)
        if client is None:
            config = Config(
                signature_version="s3v4", connect_timeout=S3_CONNECT_TIMEOUT_S,
                read_timeout=S3_READ_TIMEOUT_S, retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"} if endpoint_url else None)
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region_name,
                                  config=config)
        self.client = client
        self.transfer_config = TransferConfig(multipart_threshold=multipart_threshold,
                                              multipart_chunksize=multipart_chunksize)

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.uri('').rstrip('/')!r})"

    def _full(self, key: str, *, allow_prefix: bool = False) -> str:
        check_key(key, allow_prefix=allow_prefix)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn botocore failures into StorageError naming the key and S3's error code only.

        S3's message and botocore's text can hold the endpoint, bucket or account; they stay in
        the chained exception.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        shown = display_key(key)
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "")) or "error"
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ArtifactNotFound(f"no artifact under key {shown!r}", field="key") from exc
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status >= 500 or code in S3_UNAVAILABLE_CODES:
                raise StoreUnavailable(f"the object store is unavailable for {shown!r} ({code});"
                                       " retry later") from exc
            raise StorageError(f"the object store refused the request for {shown!r} ({code})",
                               field="key") from exc
        except BotoCoreError as exc:  # connect/read timeouts (after the retries), DNS, TLS
            raise StoreUnavailable(f"the object store could not be reached for {shown!r} "
                                   f"({type(exc).__name__}); retry later") from exc

    def put_file(self, local_path: str | Path, key: str) -> None:
        """Upload a file; multipart above `multipart_threshold` (S3 makes it visible at once)."""
        full = self._full(key)
        with self._errors(key):
            self.client.upload_file(str(local_path), self.bucket, full,
                                    Config=self.transfer_config)

    def get_file(self, key: str, local_path: str | Path) -> None:
        """Download to a temp file beside `local_path`, then rename it into place."""
        full = self._full(key)
        dest = Path(local_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=_TMP_SUFFIX, dir=dest.parent)
        os.close(fd)
        try:
            with self._errors(key):
                self.client.download_file(self.bucket, full, tmp, Config=self.transfer_config)
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_bytes(self, data: bytes, key: str) -> None:
        """Store a small object in one PUT."""
        full = self._full(key)
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)

    def get_bytes(self, key: str) -> bytes:
        """Read a small object; ArtifactNotFound if missing."""
        full = self._full(key)
        with self._errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key` (one HEAD request)."""
        try:
            with self._errors(key):
                self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ArtifactNotFound:
            return False
        return True

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key (paginated, any count)."""
        full = self._full(prefix, allow_prefix=True)
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: list[ObjectInfo] = []
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full,
                PaginationConfig={"PageSize": self.list_page_size})
            for page in pages:
                for obj in page.get("Contents", []):
                    found.append(ObjectInfo(key=obj["Key"][strip:], size=int(obj["Size"])))
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        """Remove an object; S3 itself treats a missing key as success."""
        full = self._full(key)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def uri(self, key: str) -> str:
        """`s3://bucket/prefix/key`."""
        return f"s3://{self.bucket}/{self._full(key, allow_prefix=True)}"

    def presigned_get_url(self, key: str, expires_s: int = 3600,
                          filename: str | None = None) -> str:
        """A time-limited GET URL; with `filename`, browsers save it as an attachment.

        The URL is signed offline: it does not check that the object exists.
        """
        params: dict[str, str] = {"Bucket": self.bucket, "Key": self._full(key)}
        if filename is not None:
            params["ResponseContentDisposition"] = _attachment(filename)
        with self._errors(key):
            return str(self.client.generate_presigned_url("get_object", Params=params,
                                                          ExpiresIn=expires_s))

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent; for dev, compose and tests)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket"):
                raise StorageError(f"cannot use bucket {self.bucket!r}: {exc}") from exc
        region = self.client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":  # us-east-1 refuses an explicit constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise StorageError(f"cannot create bucket {self.bucket!r}: {exc}") from exc


def _attachment(filename: str) -> str:
    """A Content-Disposition value: an ASCII fallback plus the RFC 5987 UTF-8 name."""
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                    for c in filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def store_from_uri(uri: str, *, endpoint_url: str | None = None) -> ArtifactStore:
    """Open the store a URI names: `file:///abs/dir`, a plain path, or `s3://bucket/prefix`.

    Raises:
        StorageError: for any other scheme, listing the supported ones.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "s3" and parsed.netloc:
        return S3ArtifactStore(parsed.netloc, parsed.path.strip("/"), endpoint_url=endpoint_url)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path:
        return LocalArtifactStore(unquote(parsed.path))
    if not parsed.scheme and uri:
        return LocalArtifactStore(uri)
    raise StorageError(f"unsupported artifact store URI {uri!r}; supported schemes: "
                       f"{', '.join(SUPPORTED_SCHEMES)} (or a plain local path)", field="uri")
