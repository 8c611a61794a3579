"""`nvr archive ls|get` (the site tool) and `nvr verify --archive`.

The site tool needs no board: the endpoint, the bucket and a credentials file are enough, from
any machine on the site network. `ls` finds every pair in the bucket by its index object
(`{prefix}/index.json`) and shows its boards and, per camera, the first and last time and the
number of segments; `get` downloads one camera's segments of a time range from a pair's prefix
(the rows under `rows/` say each segment's times and SHA-256), checks each against its row and
writes them with a manifest. `nvr verify --archive` HEADs every object this board's catalog
marks as archived (size, SHA-256 metadata) and, with --deep, downloads and re-hashes it.

Building the parser imports nothing heavy: boto3 and the config model come in when a command
runs (tests/test_start_imports.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware.archive.store import ArchiveStore
    from firmware.catalog import Catalog

PAIR_DEPTH = 4
"""A prefix has at most four parts (firmware/config.py S3_PREFIX)."""
PAIR_PARTS = ("segments/", "rows/", "evidence/")
"""A pair's own folders: not searched for further pairs."""
CHUNK = 1024 * 1024
MANIFEST = "manifest.json"
DAY_US = 86_400 * 1_000_000
SLACK_DAYS = 1
"""A segment that overlaps the range's start may have started the day before."""


def _fail(msg: str, code: int = 2) -> int:
    print(f"nvr: {msg}", file=sys.stderr)
    return code


# --- the parser -----------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """`nvr archive ls|get`."""
    r = sub.add_parser("archive", help="the archive store: list pairs, fetch footage (no board)")
    cmds = r.add_subparsers(dest="archive_cmd", required=True)
    ls = cmds.add_parser("ls", help="every pair in the bucket: boards, cameras, time ranges")
    _store_args(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)
    get = cmds.add_parser("get", help="download a camera's segments of a time range, checked")
    _store_args(get)
    get.add_argument("--pair", required=True, help="the pair's prefix (nvr archive ls)")
    get.add_argument("--camera", required=True)
    get.add_argument("--start", required=True, help="ISO 8601; without a zone: UTC")
    get.add_argument("--end", required=True, help="ISO 8601; without a zone: UTC")
    get.add_argument("--out", type=Path, required=True, help="a directory (made if missing)")
    get.set_defaults(func=cmd_get)


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", required=True, help="the store's URL (http:// or https://)")
    p.add_argument("--bucket", required=True)
    p.add_argument("--credentials", type=Path, required=True,
                   help='TOML: access_key = "...", secret_key = "..." (mode 0600)')  # fmt: skip
    p.add_argument("--region", default="us-east-1")


def _site_store(args: argparse.Namespace) -> ArchiveStore:
    """A store for the whole bucket (keys carry their pair's prefix). ConfigError if the
    arguments or the credentials file are not right."""
    from pydantic import ValidationError

    from firmware.archive.store import ArchiveStore, load_credentials
    from firmware.config import ArchiveConfig
    from firmware.configfile import ConfigError

    try:
        cfg = ArchiveConfig(endpoint=args.endpoint, bucket=args.bucket, region=args.region,
                            credentials_file=args.credentials)  # fmt: skip
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(bad) from None
    return ArchiveStore(cfg, load_credentials(args.credentials), prefix="")


def _store_failed(e: Exception, store: ArchiveStore | None) -> int:
    """A store error said by its class and code, never its text's secrets."""
    from firmware.archive.store import scrub

    text = f"{type(e).__name__}: {e}"
    if store is not None:
        text = scrub(text, store.creds)
    return _fail(f"the archive store: {text}", 1)


def _guarded(body: Any, args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from firmware.configfile import ConfigError

    store = None
    try:
        store = _site_store(args)
        return body(store, args)
    except ConfigError as e:
        return _fail(str(e))
    except (BotoCoreError, ClientError) as e:
        return _store_failed(e, store)


# --- nvr archive ls ---------------------------------------------------------------------------


def pairs(store: ArchiveStore) -> list[str]:
    """Every prefix in the bucket that holds an index object, sorted."""
    found: list[str] = []
    level = [""]
    for _ in range(PAIR_DEPTH):
        nxt: list[str] = []
        for prefix in level:
            objects, folders = _listing(store, prefix)
            if prefix and f"{prefix}index.json" in objects:
                found.append(prefix.rstrip("/"))
                folders = [f for f in folders if f[len(prefix) :] not in PAIR_PARTS]
            nxt += folders
        level = nxt
    return sorted(found)


def _listing(store: ArchiveStore, prefix: str) -> tuple[set[str], list[str]]:
    """(object keys, sub-folders) directly under prefix."""
    objects: set[str] = set()
    folders: list[str] = []
    pages = store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=prefix, Delimiter="/"
    )
    for page in pages:
        objects |= {o["Key"] for o in page.get("Contents") or []}
        folders += [c["Prefix"] for c in page.get("CommonPrefixes") or []]
    return objects, folders


def cmd_ls(args: argparse.Namespace) -> int:
    return _guarded(_ls, args)


def _ls(store: ArchiveStore, args: argparse.Namespace) -> int:
    from firmware.archive.store import index_key

    found = []
    for prefix in pairs(store):
        index = store.get_json(index_key(prefix)) or {}
        found.append({"pair": prefix, "boards": index.get("boards") or [],
                      "updated": index.get("updated"),
                      "cameras": index.get("cameras") or {}})  # fmt: skip
    if args.json:
        print(json.dumps({"bucket": store.bucket, "pairs": found}, indent=1, sort_keys=True))
        return 0
    if not found:
        print(f"bucket {store.bucket}: no pairs (no */index.json)")
        return 0
    for p in found:
        print(f"pair {p['pair']}: boards {', '.join(p['boards']) or '?'}; "
              f"index updated {p['updated'] or '?'}")  # fmt: skip
        for cam, c in sorted(p["cameras"].items()):
            print(f"  camera {cam}: {c.get('first')} .. {c.get('last')}  "
                  f"{c.get('segments')} segments")  # fmt: skip
    return 0


# --- nvr archive get --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """One segment of `get`: where it went, or why it did not."""

    id: str
    start: str
    end: str
    bytes: int
    sha256: str
    file: str | None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "start": self.start, "end": self.end, "bytes": self.bytes,
                "sha256": self.sha256, "file": self.file, "problem": self.problem}  # fmt: skip


def cmd_get(args: argparse.Namespace) -> int:
    from firmware.timefmt import parse_iso

    try:
        args.start_us, args.end_us = parse_iso(args.start), parse_iso(args.end)
    except ValueError as e:
        return _fail(f"--start/--end: {e}")
    if args.end_us <= args.start_us:
        return _fail("--end is not after --start")
    return _guarded(_get, args)


def _days(start_us: int, end_us: int) -> list[str]:
    """The UTC days a range's segments may start on (one day of slack before)."""
    first = dt.datetime.fromtimestamp(start_us / 1e6, dt.UTC).date() - dt.timedelta(SLACK_DAYS)
    last = dt.datetime.fromtimestamp(end_us / 1e6, dt.UTC).date()
    return [str(first + dt.timedelta(i)) for i in range((last - first).days + 1)]


def _get(store: ArchiveStore, args: argparse.Namespace) -> int:
    from firmware.archive.store import segment_key
    from firmware.catalog import segment_from_row
    from firmware.timefmt import iso

    prefix = args.pair.strip("/")
    rows = []
    for day in _days(args.start_us, args.end_us):
        for key, _ in store.list_keys(f"{prefix}/rows/{args.camera}/{day}/"):
            if not key.endswith(".json"):
                continue
            row = store.get_json(key)
            if not isinstance(row, dict) or not isinstance(row.get("fields"), dict):
                print(f"SKIPPED  {key}: not a segment row")
                continue
            seg = segment_from_row(row["fields"])
            if seg.end_us > args.start_us and seg.start_us < args.end_us:
                rows.append(seg)
    rows.sort(key=lambda s: (s.start_us, s.id))
    args.out.mkdir(parents=True, exist_ok=True)
    done: list[Fetched] = []
    for seg in rows:
        name = f"{seg.id}.mp4"
        problem = _download(store, segment_key(prefix, seg), seg.bytes, seg.sha256,
                            args.out / name)  # fmt: skip
        done.append(Fetched(seg.id, iso(seg.start_us), iso(seg.end_us), seg.bytes, seg.sha256,
                            None if problem else name, problem))  # fmt: skip
        print(f"{'OK      ' if problem is None else 'BAD     '} {name}"
              + (f": {problem}" if problem else ""))  # fmt: skip
    bad = [f for f in done if f.problem]
    manifest = {
        "bucket": store.bucket, "pair": prefix, "camera": args.camera,
        "start": iso(args.start_us), "end": iso(args.end_us),
        "segments": [f.to_json() for f in done],
        "bytes": sum(f.bytes for f in done if not f.problem), "problems": len(bad),
    }  # fmt: skip
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"archive get: {len(done) - len(bad)} of {len(done)} segments written to {args.out} "
          f"({manifest['bytes'] / 1e6:.1f} MB), {len(bad)} bad; {MANIFEST} lists them")  # fmt: skip
    return 1 if bad else 0


def _download(store: ArchiveStore, key: str, size: int, sha256: str, path: Path) -> str | None:
    """The object into path, hashed on the way; None when it matches, else what is wrong
    (nothing is left at path then)."""
    from botocore.exceptions import ClientError

    part = path.with_name(path.name + ".part")
    digest, count = hashlib.sha256(), 0
    try:
        body = store.open_segment(key)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NotFound"):
            return "missing from the archive"
        raise
    try:
        with body, part.open("wb") as f:
            for chunk in iter(lambda: body.read(CHUNK), b""):
                digest.update(chunk)
                count += len(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if count != size or digest.hexdigest() != sha256:
        part.unlink()
        return (f"{count} bytes, {size} in its row" if count != size
                else "its bytes do not match the SHA-256 in its row")  # fmt: skip
    part.replace(path)
    return None


# --- nvr verify --archive --------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveFinding:
    """One archived segment that the store does not hold as the catalog says."""

    id: str
    key: str
    problem: str


def check_archive(
    cat: Catalog, store: ArchiveStore, deep: bool
) -> tuple[int, list[ArchiveFinding]]:
    """(marks checked, findings): every archived mark HEADed; with deep, read and re-hashed."""
    found: list[ArchiveFinding] = []
    n = 0
    for arch in cat.archived_marks():
        n += 1
        head = store.head(arch.key)
        if head is None:
            found.append(ArchiveFinding(arch.id, arch.key, "missing from the store"))
            continue
        if head.bytes != arch.bytes:
            found.append(ArchiveFinding(arch.id, arch.key, f"{head.bytes} bytes in the store, "
                                        f"{arch.bytes} in the catalog"))  # fmt: skip
            continue
        if head.sha256 != arch.sha256:
            found.append(ArchiveFinding(arch.id, arch.key, "its sha256 metadata "
                                        f"({head.sha256}) is not the catalog's"))  # fmt: skip
            continue
        if deep:
            digest, count = hashlib.sha256(), 0
            with store.open_segment(arch.key) as body:
                for chunk in iter(lambda b=body: b.read(CHUNK), b""):
                    digest.update(chunk)
                    count += len(chunk)
            if count != arch.bytes or digest.hexdigest() != arch.sha256:
                what = "its bytes do not match the catalog's SHA-256 (damaged in the store)"
                found.append(ArchiveFinding(arch.id, arch.key, what))
    return n, found


def verify_archive(data: Path | None, config: Path, deep: bool) -> int:
    """`nvr verify --archive`: 0 when every archived segment is in the store as recorded."""
    from botocore.exceptions import BotoCoreError, ClientError

    from firmware.archive.store import ArchiveStore, load_credentials
    from firmware.catalog import CATALOG_FILE, Catalog
    from firmware.config import load_config
    from firmware.configfile import ConfigError

    store = None
    try:
        cfg = load_config(config)
        if cfg.archive is None:
            return _fail(f"{config}: no [archive] section: nothing is archived")
        data = data or cfg.board.data_dir
        if not (data / CATALOG_FILE).exists():
            return _fail(f"{data}: no catalog here ({CATALOG_FILE} missing)")
        store = ArchiveStore(cfg.archive, load_credentials(cfg.archive.credentials_file))
        n, found = check_archive(Catalog(data, reader=True), store, deep)
    except ConfigError as e:
        return _fail(str(e))
    except (BotoCoreError, ClientError) as e:
        return _store_failed(e, store)
    for f in found:
        kind = "MISSING " if "missing" in f.problem else "MISMATCH"
        print(f"{kind} segment {f.id} at {f.key}: {f.problem}")
    how = "read and re-hashed" if deep else "size and SHA-256 metadata (--deep re-hashes)"
    print(f"verify --archive: {n} archived segments checked ({how}), {len(found)} bad")
    return 1 if found else 0
