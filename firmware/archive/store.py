"""The archive store: a thin adapter over boto3 for any S3-compatible endpoint.

Path-style addressing (SeaweedFS, Ceph RGW and MinIO serve buckets under the path), bounded
retries and timeouts, and never a proxy from the environment: the store is on the site
network. Credentials come from a file of their own and appear nowhere else (not in logs, not in
errors, not in status): `scrub` takes them out of any text on its way out.

Object layout under the pair's prefix (docs/ARCHIVE.md):
  {prefix}/segments/{camera}/{YYYY-MM-DD}/{segment id}.mp4
  {prefix}/rows/{camera}/{YYYY-MM-DD}/{segment id}.json
  {prefix}/index.json
  {prefix}/evidence/{log origin}/checkpoint-{size}.txt
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from firmware.catalog import Segment
from firmware.config import ArchiveConfig
from firmware.configfile import ConfigError

MIB = 1024 * 1024
MULTIPART_THRESHOLD = 16 * MIB
"""Segments above this go up in parts (resumable per part, retried per part)."""
PART_SIZE = 8 * MIB
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
ATTEMPTS = 3
"""boto3's own retries per request; the uploader retries further with its backoff."""
CONTENT_TYPE = "video/mp4"
SHA_META = "sha256"


# --- credentials ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)

    def __repr__(self) -> str:
        return "Credentials(***)"


def load_credentials(path: Path, uid: int | None = None) -> Credentials:
    """The credentials file: TOML `access_key` and `secret_key`, 0600 or 0400, owned by root or
    the user running the firmware. ConfigError otherwise (never quoting the file's contents)."""
    uid = os.getuid() if uid is None else uid
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{path}: archive credentials: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: archive credentials: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode not in (0o600, 0o400):
        raise ConfigError(
            f"{path}: archive credentials must be mode 0600 or 0400, not {mode:04o} "
            f"(chmod 600 {path})"
        )
    if st.st_uid not in (0, uid):
        raise ConfigError(
            f"{path}: archive credentials must be owned by root or uid {uid}, not uid {st.st_uid}"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        # The parser's message may quote a line of the file: the secret. Only its kind is said.
        raise ConfigError(f"{path}: archive credentials: not TOML ({type(e).__name__})") from None
    extra = set(raw) - {"access_key", "secret_key"}
    keys = [raw.get("access_key"), raw.get("secret_key")]
    if extra or not all(isinstance(k, str) and k.strip() for k in keys):
        raise ConfigError(
            f'{path}: archive credentials: must hold exactly access_key = "..." and '
            'secret_key = "..."'
        )
    return Credentials(str(keys[0]).strip(), str(keys[1]).strip())


def scrub(text: str, creds: Credentials) -> str:
    """Any text about the store on its way out (a log line, status, an alert): no secret."""
    for secret in (creds.secret_key, creds.access_key):
        if secret:
            text = text.replace(secret, "***")
    return text


# --- keys -----------------------------------------------------------------------------------


def day_of(start_us: int) -> str:
    """The UTC day a segment starts on: the folder it goes in."""
    return dt.datetime.fromtimestamp(start_us / 1e6, dt.UTC).strftime("%Y-%m-%d")


def day_prefix(prefix: str, camera: str, day: str) -> str:
    return f"{prefix}/segments/{camera}/{day}/"


def segment_key(prefix: str, seg: Segment) -> str:
    return f"{day_prefix(prefix, seg.camera, day_of(seg.start_us))}{seg.id}.mp4"


def row_key(prefix: str, seg: Segment) -> str:
    return f"{prefix}/rows/{seg.camera}/{day_of(seg.start_us)}/{seg.id}.json"


def index_key(prefix: str) -> str:
    return f"{prefix}/index.json"


def checkpoint_key(prefix: str, origin: str, size: int) -> str:
    return f"{prefix}/evidence/{origin}/checkpoint-{size}.txt"


def default_prefix(board: str, fingerprint: str | None) -> str:
    """The pair's name: the same on both boards of a pair (the pair key's fingerprint)."""
    if fingerprint:
        return "pair-" + fingerprint.replace("-", "").lower()[:12]
    return f"board-{board}"


# --- the bandwidth cap ----------------------------------------------------------------------


class Throttle:
    """A token bucket, sans-IO: `take(n, now)` says how long to wait before n more bytes may
    go. It starts empty and holds at most `burst` bytes, so over any run of takes the bytes
    taken never exceed rate x (time waited and elapsed): N bytes take at least N / rate."""

    def __init__(self, rate_bytes_s: float, burst: float | None = None) -> None:
        if rate_bytes_s <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_bytes_s
        self.burst = rate_bytes_s / 4 if burst is None else burst
        self._tokens = 0.0
        self._at: float | None = None

    def take(self, n: int, now: float) -> float:
        if self._at is None:
            self._at = now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= n
        return max(0.0, -self._tokens / self.rate)

    @staticmethod
    def mbit(mbit_s: float) -> Throttle | None:
        """The [archive] bandwidth_mbit cap; None for 0 (no cap)."""
        return Throttle(mbit_s * 1e6 / 8) if mbit_s > 0 else None


class _FileView:
    """A readable, seekable view of a file for boto3's transfer, which reads through it."""

    _f: IO[bytes]

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """The transfer closes its body when done; the file is put_segment's to close."""


class ThrottledReader(_FileView):
    """A file object whose reads wait for the Throttle (the clock and sleep injectable)."""

    def __init__(
        self,
        f: IO[bytes],
        cap: Throttle,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._f, self._cap, self._clock, self._sleep = f, cap, clock, sleep
        self._lock = threading.Lock()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data:
            with self._lock:
                wait = self._cap.take(len(data), self._clock())
            if wait > 0:
                self._sleep(wait)
        return data


# --- the store ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchivedObject:
    """What put_segment did: `uploaded` False when the store held the same bytes already."""

    key: str
    row_key: str
    bytes: int
    sha256: str
    uploaded: bool


@dataclass(frozen=True)
class Head:
    """An object's size, its sha256 metadata and its retention, from a HEAD."""

    key: str
    bytes: int
    sha256: str | None
    lock_mode: str | None
    retain_until: dt.datetime | None


class ArchiveStore:
    """One bucket on one endpoint. Errors are boto3's (botocore.exceptions); the uploader
    classifies them. Thread-safe as boto3 clients are."""

    def __init__(self, cfg: ArchiveConfig, creds: Credentials, prefix: str | None = None) -> None:
        """prefix: the pair's (default_prefix); default the configured one. A site tool that
        reads every pair passes keys with their prefix and needs none."""
        import boto3
        from botocore.config import Config as BotoConfig

        self.cfg, self.creds, self.bucket = cfg, creds, cfg.bucket
        self.prefix = prefix if prefix is not None else (cfg.prefix or "")
        self.client = boto3.client(
            "s3",
            endpoint_url=cfg.endpoint,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            region_name=cfg.region,
            config=BotoConfig(
                s3={"addressing_style": "path"},
                proxies={},  # the site network: never a proxy from the environment
                retries={"max_attempts": ATTEMPTS, "mode": "standard"},
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._lock_checked: bool | None = None

    # --- segments --------------------------------------------------------------------

    def object_lock(self) -> bool:
        """The bucket has Object Lock (asked once)."""
        if self._lock_checked is None:
            from botocore.exceptions import ClientError

            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = conf["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                if code not in ("ObjectLockConfigurationNotFoundError", "NotImplemented",
                                "NoSuchObjectLockConfiguration"):  # fmt: skip
                    raise
                enabled = False
            self._lock_checked = enabled
        return self._lock_checked

    def put_segment(
        self,
        seg: Segment,
        path: Path,
        row: bytes,
        retain_until_us: int | None,
        cap: Throttle | None,
    ) -> ArchivedObject:
        """Upload the segment's file and its row. Idempotent: an object of the same size
        whose sha256 metadata matches is left as it is (uploaded=False); the row is written
        when missing. The file is hashed as it is read; a file that no longer matches its
        catalog row is refused (ValueError), never archived under the row's hash."""
        key, rkey = segment_key(self.prefix, seg), row_key(self.prefix, seg)
        have = self.head(key)
        if have is not None and have.bytes == seg.bytes and have.sha256 == seg.sha256:
            if self.head(rkey) is None:
                self._put_row(rkey, row, retain_until_us)
            return ArchivedObject(key, rkey, seg.bytes, seg.sha256, uploaded=False)
        from boto3.s3.transfer import TransferConfig

        extra: dict[str, Any] = {
            "Metadata": {SHA_META: seg.sha256},
            "ContentType": CONTENT_TYPE,
            "ChecksumAlgorithm": "SHA256",
            **self._retention(retain_until_us),
        }
        with path.open("rb") as f:
            digest = hashlib.sha256()
            hashing = _Hashing(f, digest)
            body: Any = hashing if cap is None else ThrottledReader(hashing, cap)  # type: ignore[arg-type]
            if seg.bytes <= MULTIPART_THRESHOLD:
                # Read once (through the cap), checked, then sent from memory: botocore reads a
                # file body more than once (checksum, signature), which would count thrice.
                data = body.read()
                _check(seg, digest, hashing)
                # The SHA-256 just checked is the object's checksum: botocore need not hash
                # the bytes again (the store checks them against it all the same).
                del extra["ChecksumAlgorithm"]
                extra["ChecksumSHA256"] = base64.b64encode(digest.digest()).decode()
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
            else:
                _check_file(seg, path)  # before any part goes up: never a wrong object
                transfer = TransferConfig(
                    multipart_threshold=MULTIPART_THRESHOLD,
                    multipart_chunksize=PART_SIZE,
                    max_concurrency=1 if cap is not None else 4,
                    use_threads=cap is None,
                )
                # Parts are read once each, in order, into memory (s3transfer), then sent.
                self.client.upload_fileobj(body, self.bucket, key, ExtraArgs=extra,
                                           Config=transfer)  # fmt: skip
                try:
                    _check(seg, digest, hashing)
                except ValueError:  # changed during the upload: the object must not stay
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                    raise
        self._put_row(rkey, row, retain_until_us)
        return ArchivedObject(key, rkey, seg.bytes, seg.sha256, uploaded=True)

    def delete_segment(self, seg: Segment) -> None:
        """The segment and its row gone from the store: every version (a bucket with Object
        Lock keeps versions; a plain delete would only hide them behind a delete marker). A
        version still under retention is refused by the store (ClientError)."""
        for key in (segment_key(self.prefix, seg), row_key(self.prefix, seg)):
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=key
            )
            versions = [
                v["VersionId"]
                for page in pages
                for kind in ("Versions", "DeleteMarkers")
                for v in page.get(kind, [])
                if v["Key"] == key and v.get("VersionId") not in (None, "null")
            ]
            self.client.delete_object(Bucket=self.bucket, Key=key)
            for vid in versions:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=vid)

    def _retention(self, retain_until_us: int | None) -> dict[str, Any]:
        if retain_until_us is None:
            return {}
        until = dt.datetime.fromtimestamp(retain_until_us / 1e6, dt.UTC).replace(microsecond=0)
        return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}

    def _put_row(self, key: str, row: bytes, retain_until_us: int | None) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=row, ContentType="application/json",
            **self._retention(retain_until_us),
        )  # fmt: skip

    # --- reading ---------------------------------------------------------------------

    def head(self, key: str) -> Head | None:
        """None when there is no such object."""
        from botocore.exceptions import ClientError

        try:
            h = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return Head(
            key,
            int(h["ContentLength"]),
            (h.get("Metadata") or {}).get(SHA_META),
            h.get("ObjectLockMode"),
            h.get("ObjectLockRetainUntilDate"),
        )

    def open_segment(self, key: str) -> Any:
        """A streaming body (botocore StreamingBody: read(n), iter_chunks(), close())."""
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]

    def list_keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under prefix, in key order."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for obj in page.get("Contents") or []:
                yield obj["Key"], int(obj["Size"])

    def abort_stale_uploads(self, older_than_s: float, now: dt.datetime | None = None) -> int:
        """Abort the multipart uploads under this store's prefix begun more than older_than_s
        ago: a board stopped in the middle of one leaves its parts in the store (kept, and
        counted, until aborted); the segment itself is uploaded again whole. Returns how many."""
        now = now or dt.datetime.now(dt.UTC)
        cutoff = now - dt.timedelta(seconds=older_than_s)
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
        )
        n = 0
        for page in pages:
            for up in page.get("Uploads") or []:
                if up["Initiated"] < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                    )
                    n += 1
        return n

    def put_json(self, key: str, obj: Any) -> None:
        body = json.dumps(obj, sort_keys=True, indent=1).encode()
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
        )

    def put_text(self, key: str, text: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=text.encode(), ContentType="text/plain"
        )

    def get_json(self, key: str) -> Any:
        """The object as JSON; None when there is none."""
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        with body:
            return json.loads(body.read())


def _check_file(seg: Segment, path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    if digest.hexdigest() != seg.sha256:
        raise ValueError(f"{seg.id}: the file does not match its catalog row")


def _check(seg: Segment, digest: Any, hashing: _Hashing) -> None:
    if digest.hexdigest() != seg.sha256 or hashing.count != seg.bytes:
        raise ValueError(f"{seg.id}: the file does not match its catalog row")


class _Hashing(_FileView):
    """A file object that hashes and counts what is read (the first pass only: a retry that
    seeks back restarts the hash)."""

    def __init__(self, f: IO[bytes], digest: Any) -> None:
        self._f, self._digest, self.count = f, digest, 0

    def read(self, n: int = -1) -> bytes:
        pos = self._f.tell()
        data = self._f.read(n)
        if pos == self.count:
            self._digest.update(data)
            self.count += len(data)
        return data
