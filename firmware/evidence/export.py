"""Evidence exports: one camera's segments over a time range, as recorded, with what anyone
needs to check them offline.

An export directory holds `segments/` (the files, copied byte for byte), `manifest.json`
(camera, range, board, the segments with their log entries and inclusion proofs, the gaps with
their reasons, the checkpoint they are proven against and the two boards' verifier keys),
`verify_export.py` (firmware/evidence/verifier.py, verbatim) and `README.txt`.

The checkpoint is the newest one of this board's log that the peer cosigned and that covers
every exported entry; when the peer has not cosigned one yet (it was away), the newest one this
board signed, marked as not witnessed (the verifier then fails unless told to accept that)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from firmware.catalog import Catalog, Segment
from firmware.evidence.log import EvidenceLog, LogMissing, segment_leaf
from firmware.evidence.verifier import (
    Checkpoint,
    Note,
    VerifierKey,
    key_fingerprint,
)
from firmware.evidence.witness import cosign_key_of, cosignature_ok
from firmware.recorder.segment_file import fsync_dir
from firmware.timefmt import iso, now_us

MANIFEST = "manifest.json"
SEGMENTS_DIR = "segments"
VERIFIER = "verify_export.py"
README = "README.txt"
VIEW = "view.mp4"
FORMAT = "nvr-evidence-export/1"
CHUNK = 1 << 20


class ExportRefused(Exception):
    """The export cannot be made as asked; the text says why, naming the segment if one."""


class Damage(StrEnum):
    """Why a segment of the range is not in an export (a gap's reason in the manifest)."""

    MISSING = "missing"
    """The catalog has the segment, its file is gone."""
    DAMAGED = "damaged"
    """The file's bytes are not the ones recorded (its SHA-256 differs from the catalog's)."""
    NOT_LOGGED = "not in log"
    """The catalog row is not what the board's log holds for that segment (or not there)."""


NO_RECORDING = "no recording"
"""A gap's reason where neither a run's end nor a damaged segment explains it."""


@dataclass(frozen=True)
class Damaged:
    segment: Segment
    damage: Damage
    detail: str


@dataclass(frozen=True)
class ExportSummary:
    out_dir: Path
    camera: str
    start_us: int
    end_us: int
    segments: int
    bytes: int
    gaps: int
    damaged: tuple[str, ...]
    """Ids of the segments left out (only with allow_damaged)."""
    checkpoint_size: int
    witnessed: bool
    """False: the checkpoint is signed by this board only (the peer was away)."""
    board_key: str
    peer_key: str | None
    """Key fingerprints, as `nvr status` shows them on each board."""
    view: bool = False

    def to_json(self) -> dict:
        return {
            "out": str(self.out_dir), "camera": self.camera, "start": iso(self.start_us),
            "end": iso(self.end_us), "segments": self.segments, "bytes": self.bytes,
            "gaps": self.gaps, "damaged": list(self.damaged),
            "checkpoint_size": self.checkpoint_size, "witnessed": self.witnessed,
            "board_key": self.board_key, "peer_key": self.peer_key, "view": self.view,
        }  # fmt: skip


# --- the board's log, read beside the running firmware ----------------------------------------


def read_log(data_dir: Path) -> EvidenceLog:
    """The board's log opened read-only, for `nvr export` and the API beside the running
    firmware: nothing can be signed, ingested or stored through it."""
    try:
        evlog = EvidenceLog(Path(data_dir), "", reader=True)
    except LogMissing as e:
        raise FileNotFoundError(str(e)) from None
    if evlog.latest() is None:
        evlog.close()
        raise ExportRefused("the evidence log has no signed checkpoint yet; the firmware "
                            "signs one within seconds of starting")  # fmt: skip
    return evlog


def board_of(origin: str) -> str:
    """The board's name in a log origin "nvr-<board>-<8 hex of its key>"."""
    if not origin.startswith("nvr-") or len(origin) < 14 or origin[-9] != "-":
        raise ExportRefused(f"log origin {origin!r} is not of the form nvr-BOARD-KEYID")
    return origin[4:-9]


# --- the export -------------------------------------------------------------------------------


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ExportRefused(f"{out_dir}: exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportRefused(f"{out_dir}: not empty; an export goes into a new or empty directory")


def _write(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _copy_hashing(src: Path, dst: Path) -> tuple[str, int]:
    """Copy src to dst byte for byte, fsynced; the SHA-256 and size of what was written."""
    h = hashlib.sha256()
    n = 0
    with open(src, "rb") as f, open(dst, "xb") as out:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
            out.write(block)
            n += len(block)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest(), n


def _leaf_index(evlog: EvidenceLog, ids: set[str]) -> dict[str, list[tuple[int, bytes]]]:
    """Every leaf of the log that records one of these segments, by segment id (one scan)."""
    needles = {json.dumps(i, ensure_ascii=False).encode(): i for i in ids}
    found: dict[str, list[tuple[int, bytes]]] = {}
    for idx, data in evlog.iter_leaves():
        if b'"kind":"segment"' not in data:
            continue
        for needle, sid in needles.items():
            if b'"id":' + needle in data:
                found.setdefault(sid, []).append((idx, data))
    return found


@dataclass
class _Plan:
    good: list[tuple[Segment, int, bytes]] = field(default_factory=list)
    """Segment, leaf index, leaf bytes."""
    damaged: list[Damaged] = field(default_factory=list)


def _plan(data_dir: Path, evlog: EvidenceLog, segs: list[Segment]) -> _Plan:
    """Which segments have their file and their log entry; the files are hashed at copy."""
    leaves = _leaf_index(evlog, {s.id for s in segs})
    plan = _Plan()
    for s in segs:
        want = segment_leaf(s)
        match = [(i, d) for i, d in leaves.get(s.id, []) if d == want]
        if not (data_dir / s.path).is_file():
            plan.damaged.append(Damaged(s, Damage.MISSING, f"{s.path} is gone"))
        elif not match:
            what = "differs from" if s.id in leaves else "is not in"
            plan.damaged.append(Damaged(s, Damage.NOT_LOGGED,
                                        f"its catalog row {what} the board's log"))  # fmt: skip
        else:
            idx, leaf = match[0]
            plan.good.append((s, idx, leaf))
    return plan


def _checkpoint(evlog: EvidenceLog, covering: int) -> tuple[Checkpoint, Note, bool]:
    """The newest cosigned checkpoint covering `covering` entries, else the newest own one."""
    got = evlog.cosigned(covering)
    if got is not None:
        return got[0], got[1], True
    own = evlog.latest()
    if own is None or own[0].size < covering:
        raise ExportRefused("the newest segments are not in a signed checkpoint of the log yet; "
                            "try again in a few seconds")  # fmt: skip
    return own[0], own[1], False


def _gaps(
    catalog: Catalog, camera: str, start_us: int, end_us: int,
    good: list[Segment], damaged: list[Damaged],
) -> list[dict]:  # fmt: skip
    """The parts of [start, end) no exported segment covers, each with its reason: a damaged
    or missing segment, else the end reason of the run before it (`nvr catalog`'s gaps),
    else "no recording"."""
    covered = sorted((max(s.start_us, start_us), min(s.end_us, end_us)) for s in good)
    holes: list[tuple[int, int]] = []
    at = start_us
    for s, e in covered:
        if s > at:
            holes.append((at, s))
        at = max(at, e)
    if at < end_us:
        holes.append((at, end_us))
    reasons: list[tuple[int, int, str, str | None]] = [
        (d.segment.start_us, d.segment.end_us, str(d.damage), d.segment.id) for d in damaged
    ]
    reasons += [(g.start_us, end_us if g.end_us is None else g.end_us, g.reason, None)
                for g in catalog.gaps(camera, start_us, end_us)]  # fmt: skip
    out: list[dict] = []
    for hs, he in holes:
        cuts = {hs, he}
        for rs, re_, _, _ in reasons:
            cuts |= {t for t in (rs, re_) if hs < t < he}
        points = sorted(cuts)
        for a, b in itertools.pairwise(points):
            why = next(((r, sid) for rs, re_, r, sid in reasons if rs <= a and re_ >= b),
                       (NO_RECORDING, None))  # fmt: skip
            if out and out[-1]["end_us"] == a and (out[-1]["reason"], out[-1].get("segment")) \
                    == why:  # fmt: skip
                out[-1]["end_us"], out[-1]["end"] = b, iso(b)
                continue
            gap = {"start_us": a, "end_us": b, "start": iso(a), "end": iso(b), "reason": why[0]}
            if why[1] is not None:
                gap["segment"] = why[1]
            out.append(gap)
    return out


def _readme(board_fp: str, peer_fp: str | None, witnessed: bool) -> str:
    peer = peer_fp or "none (the peer's key is not known to this board)"
    lines = [
        "To check this export: python3 verify_export.py .   (run in this directory)",
        "It needs only Python 3 and the 'cryptography' package (pip install cryptography);",
        "it prints PASS or FAIL with the reason for each failure, and uses no network.",
        "",
        "Compare these key fingerprints with the keys that `nvr status` shows on each board:",
        f"  recording board: {board_fp}",
        f"  peer board:      {peer}",
    ]
    if not witnessed:
        lines.append("The checkpoint is signed by the recording board only (the peer was away): "
                     "the verifier fails unless run with --accept-unwitnessed.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _view(out_dir: Path, files: list[str]) -> bool:
    """view.mp4: the segments joined for viewing, remuxed (no transcoding) by ffmpeg's concat
    demuxer, when ffmpeg is there. Not verified: the originals are."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None or not files:
        return False
    listing = out_dir / ".view.txt"
    listing.write_text("".join(f"file '{SEGMENTS_DIR}/{f}'\n" for f in files))
    try:
        done = subprocess.run(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-f", "concat", "-safe", "0",
             "-i", str(listing), "-c", "copy", "-movflags", "+faststart", str(out_dir / VIEW)],
            cwd=out_dir, capture_output=True, timeout=600, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        done = None
    finally:
        listing.unlink(missing_ok=True)
    if done is None or done.returncode != 0:
        (out_dir / VIEW).unlink(missing_ok=True)
        return False
    return True


def _empty(out_dir: Path, made: bool) -> None:
    """Undo a refused export: the directory was new or empty, so all in it is ours."""
    if made:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for p in out_dir.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def export(
    data_dir: Path,
    evlog: EvidenceLog,
    catalog: Catalog,
    camera: str,
    start_us: int,
    end_us: int,
    out_dir: Path,
    board: str,
    firmware_version: str,
    allow_damaged: bool = False,
    view: bool = False,
    clock: int | None = None,
) -> ExportSummary:
    """Write the export of `camera` over [start_us, end_us) into `out_dir` (new or empty).

    Raises ExportRefused: the range is empty or backwards, out_dir is not empty, a segment's
    file is missing or changed or its catalog row is not what the log holds (unless
    allow_damaged: then it is left out and listed as a gap with that reason), or the log has
    no checkpoint over the segments yet."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if end_us <= start_us:
        raise ExportRefused(f"end ({iso(end_us)}) is not after start ({iso(start_us)})")
    _check_out_dir(out_dir)
    segs = catalog.segments(camera, start_us, end_us)
    if not segs:
        raise ExportRefused(f"camera {camera!r} has no segments between {iso(start_us)} and "
                            f"{iso(end_us)}")  # fmt: skip
    plan = _plan(data_dir, evlog, segs)
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _write_export(data_dir, evlog, catalog, camera, start_us, end_us, out_dir, board,
                             firmware_version, allow_damaged, view, clock, plan)  # fmt: skip
    except BaseException:
        _empty(out_dir, made)
        raise


def _proof(evlog: EvidenceLog, index: int, size: int) -> list[str]:
    return [base64.b64encode(h).decode() for h in evlog.tree.inclusion_proof(index, size)]


def _refuse_damaged(damaged: Iterable[Damaged]) -> None:
    first = next(iter(damaged), None)
    if first is not None:
        raise ExportRefused(
            f"segment {first.segment.id}: {first.damage}: {first.detail}; not "
            "exported (--allow-damaged exports the rest and lists it as a gap)"
        )


def _write_export(
    data_dir: Path, evlog: EvidenceLog, catalog: Catalog, camera: str, start_us: int,
    end_us: int, out_dir: Path, board: str, firmware_version: str, allow_damaged: bool,
    view: bool, clock: int | None, plan: _Plan,
) -> ExportSummary:  # fmt: skip
    if not allow_damaged:
        _refuse_damaged(plan.damaged)
    seg_dir = out_dir / SEGMENTS_DIR
    seg_dir.mkdir()
    copied: list[tuple[Segment, int, bytes, str]] = []
    for s, idx, leaf in plan.good:
        name = Path(s.path).name
        digest, size = _copy_hashing(data_dir / s.path, seg_dir / name)
        if digest != s.sha256 or size != s.bytes:
            (seg_dir / name).unlink()
            d = Damaged(s, Damage.DAMAGED, f"{s.path}: its SHA-256 is not the one recorded")
            if not allow_damaged:
                _refuse_damaged([d])
            plan.damaged.append(d)
            continue
        copied.append((s, idx, leaf, name))
    fsync_dir(seg_dir)
    if not copied:
        raise ExportRefused(f"no segment of camera {camera!r} in the range could be exported")
    cp, note, witnessed = _checkpoint(evlog, max(i for _, i, _, _ in copied) + 1)
    board_key = evlog.signer.note_key
    pinned = evlog.pinned()
    peer_cosign: VerifierKey | None = None if pinned is None else cosign_key_of(pinned)
    board_fp = key_fingerprint(board_key)
    peer_fp = None if pinned is None else key_fingerprint(pinned)
    if witnessed and (pinned is None or not cosignature_ok(note, pinned)):
        witnessed = False  # cosigned by a peer key this board no longer pins (a new peer)
    entries = [
        {
            "file": f"{SEGMENTS_DIR}/{name}", "id": s.id, "origin": s.origin,
            "start_us": s.start_us, "end_us": s.end_us, "start": iso(s.start_us),
            "end": iso(s.end_us), "bytes": s.bytes, "sha256": s.sha256,
            "leaf": leaf.decode("utf-8"), "leaf_index": idx,
            "proof": _proof(evlog, idx, cp.size),
        }
        for s, idx, leaf, name in copied
    ]  # fmt: skip
    gaps = _gaps(catalog, camera, start_us, end_us, [c[0] for c in copied], plan.damaged)
    at = now_us() if clock is None else clock
    manifest = {
        "format": FORMAT,
        "camera": camera,
        "start": iso(start_us), "end": iso(end_us), "start_us": start_us, "end_us": end_us,
        "board": {"name": board, "log": evlog.origin, "key_fingerprint": board_fp},
        "firmware_version": firmware_version,
        "exported": iso(at), "exported_us": at,
        "segments": entries,
        "gaps": gaps,
        "checkpoint": {
            "note": note.render(), "size": cp.size, "witnessed": witnessed,
            "signed_by": "board and peer" if witnessed else "this board only (not witnessed)",
        },
        "keys": {
            "board": board_key.vkey(),
            "peer_cosign": None if peer_cosign is None else peer_cosign.vkey(),
            "peer_fingerprint": peer_fp,
        },
    }  # fmt: skip
    _write(out_dir / MANIFEST, (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode())
    verifier = Path(__file__).with_name("verifier.py").read_bytes()
    _write(out_dir / VERIFIER, verifier)
    _write(out_dir / README, _readme(board_fp, peer_fp, witnessed).encode())
    shown = _view(out_dir, [name for *_, name in copied]) if view else False
    fsync_dir(out_dir)
    return ExportSummary(
        out_dir, camera, start_us, end_us, len(copied), sum(s.bytes for s, *_ in copied),
        len(gaps), tuple(d.segment.id for d in plan.damaged), cp.size, witnessed, board_fp,
        peer_fp, shown,
    )  # fmt: skip


# --- for the command line and the API ---------------------------------------------------------

EXPORT_EVENT = "export"
"""The audit event of an export (and so an entry of the board's log)."""


def export_fields(summary: ExportSummary, source: str) -> dict[str, object]:
    """The `export` audit event's fields; source: cli or api."""
    return {
        "camera": summary.camera, "start": iso(summary.start_us), "end": iso(summary.end_us),
        "segments": summary.segments, "damaged": list(summary.damaged),
        "witnessed": summary.witnessed, "out": str(summary.out_dir), "source": source,
    }  # fmt: skip


@dataclass(frozen=True)
class TempExport:
    """An export made in a temporary directory under the data directory, to be sent and then
    removed."""

    root: Path
    name: str
    summary: ExportSummary

    @property
    def path(self) -> Path:
        return self.root / self.name

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def export_to_temp(
    data_dir: Path, catalog: Catalog, camera: str, start_us: int, end_us: int,
    firmware_version: str, allow_damaged: bool = False,
) -> TempExport:  # fmt: skip
    """The export, made beside the running firmware (its log read-only) in DATA/.export-*.
    Raises ExportRefused, or FileNotFoundError when the board has no evidence log."""
    reader = read_log(data_dir)
    root = Path(tempfile.mkdtemp(prefix=".export-", dir=data_dir))
    name = f"{camera}-{iso(start_us)}".replace(":", "")
    try:
        summary = export(data_dir, reader, catalog, camera, start_us, end_us, root / name,
                         board_of(reader.origin), firmware_version, allow_damaged)  # fmt: skip
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    finally:
        reader.close()
    return TempExport(root, name, summary)


def tar_stream(src: Path, arcname: str) -> Iterator[bytes]:
    """An uncompressed POSIX (pax) tar of the directory src under `arcname`, as chunks: the
    files are read as the chunks are sent, nothing is staged."""
    for path in [src, *sorted(src.rglob("*"))]:
        rel = arcname if path == src else f"{arcname}/{path.relative_to(src).as_posix()}"
        st = path.lstat()
        info = tarfile.TarInfo(rel)
        info.mtime = int(st.st_mtime)
        if path.is_dir():
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            yield info.tobuf(tarfile.PAX_FORMAT)
            continue
        info.size, info.mode = st.st_size, 0o644
        yield info.tobuf(tarfile.PAX_FORMAT)
        sent = 0
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                sent += len(block)
                yield block
        if sent != info.size:
            raise OSError(f"{path}: changed while it was sent")
        if info.size % tarfile.BLOCKSIZE:
            yield b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)
