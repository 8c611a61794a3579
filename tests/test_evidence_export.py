"""Evidence exports: what a third party gets, and that the shipped verifier (alone, with only
Python and cryptography) passes an untouched export and names what was changed in one that
was tampered with: a replaced segment, an edited manifest, a forged checkpoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cryptography
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from conftest import NVR, ROOT, ffprobe
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_evidence_log import T0, Board, add_segment, board, rounds, two_boards

from firmware import __version__
from firmware.api import ApiContext, make_app
from firmware.audit import AUDIT_FILE
from firmware.catalog import Segment
from firmware.evidence.export import (
    MANIFEST,
    NO_RECORDING,
    VERIFIER,
    ExportRefused,
    ExportSummary,
    board_of,
    export,
    read_log,
)
from firmware.evidence.merkle import MemoryNodes, MerkleTree
from firmware.evidence.note import NoteSigner
from firmware.evidence.verifier import Checkpoint, leaf_hash, parse_note
from firmware.timefmt import iso, now_us

SEG_US = 4_000_000
START = T0 - 2_000_000
"""The range starts before the first segment: the export lists that as a gap."""
END = T0 + 3 * SEG_US
TOKEN = "export-token-0123456789"


@dataclass
class Exported:
    out: Path
    summary: ExportSummary
    segments: list[Segment]
    status_keys: tuple[str, str]
    """`key` in each board's evidence status (what `nvr status` shows): a's, then b's."""

    def manifest(self) -> dict:
        return json.loads((self.out / MANIFEST).read_text())


def record(b: Board, n: int = 3, body: Callable[[int], bytes] | None = None) -> list[Segment]:
    """n contiguous segments of camera "door" from T0, each file of its own bytes."""
    make = body or (lambda i: bytes([i + 1]) * (1000 + i))
    return [add_segment(b.data, b.catalog, "door", T0 + i * SEG_US, make(i)) for i in range(n)]


def export_of(b: Board, out: Path, **kw: object) -> ExportSummary:
    return export(b.data, b.log, b.catalog, "door", kw.pop("start", START), kw.pop("end", END),
                  out, b.name, __version__, **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """One export of three segments from board a, whose checkpoint board b cosigned."""
    root = tmp_path_factory.mktemp("pair")
    with two_boards(root) as (a, b):
        segs = record(a.b)
        rounds(a, b)
        out = root / "export"
        summary = export_of(a.b, out)
        keys = (a.svc.status()["key"], b.svc.status()["key"])
    return Exported(out, summary, segs, keys)


def verify_alone(export_dir: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """The export copied alone to another directory and its verify_export.py run in an
    interpreter that sees the standard library and cryptography only (as
    tests/test_evidence_note.py runs the verifier), as on a third party's machine."""
    alone = tmp / "alone"
    shutil.copytree(export_dir, alone)
    site = str(Path(cryptography.__file__).resolve().parent.parent)
    script = textwrap.dedent(
        f"""
        import os, runpy, sys
        sys.path[:0] = [{site!r}]
        sys.argv = ["verify_export.py", *{list(args)!r}]
        try:
            runpy.run_path("verify_export.py", run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code
        if any(m.startswith("firmware") for m in sys.modules):
            print("firmware was imported", file=sys.stderr)
            os._exit(99)
        sys.exit(code)
        """
    )
    return subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True,
                          text=True, cwd=alone, env={"PATH": os.environ["PATH"]},
                          timeout=60)  # fmt: skip


def test_a_clean_export_verifies_on_a_machine_with_only_the_verifier(
    witnessed: Exported, tmp_path: Path
) -> None:
    """Everything an outsider needs is in the directory; the verifier says PASS and which key
    fingerprints to compare."""
    s = witnessed.summary
    assert (s.segments, s.witnessed, s.damaged) == (3, True, ())
    m = witnessed.manifest()
    assert [e["id"] for e in m["segments"]] == [seg.id for seg in witnessed.segments]
    for entry, seg in zip(m["segments"], witnessed.segments, strict=True):
        exported = (witnessed.out / entry["file"]).read_bytes()
        assert hashlib.sha256(exported).hexdigest() == seg.sha256 == entry["sha256"]
    assert m["gaps"] == [{"start_us": START, "end_us": T0, "start": iso(START), "end": iso(T0),
                          "reason": NO_RECORDING}]  # fmt: skip
    assert m["checkpoint"]["witnessed"] and m["keys"]["peer_cosign"] is not None
    assert m["firmware_version"] == __version__ and m["board"]["name"] == "a"
    verifier_src = ROOT / "firmware" / "evidence" / "verifier.py"
    assert (witnessed.out / VERIFIER).read_bytes() == verifier_src.read_bytes()
    readme = (witnessed.out / "README.txt").read_text()
    assert "python3 verify_export.py ." in readme and s.board_key in readme
    assert (s.board_key, s.peer_key) == witnessed.status_keys and s.peer_key in readme
    out = verify_alone(witnessed.out, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("PASS")
    assert s.board_key in out.stdout and s.peer_key in out.stdout


def _replace_bytes(d: Path, m: dict) -> str:
    entry = m["segments"][1]
    f = d / entry["file"]
    f.write_bytes(b"\xff" * f.stat().st_size)
    return entry["id"]


def _replace_and_edit_hash(d: Path, m: dict) -> str:
    sid = _replace_bytes(d, m)
    entry = m["segments"][1]
    entry["sha256"] = hashlib.sha256((d / entry["file"]).read_bytes()).hexdigest()
    return sid


def _replace_and_edit_leaf(d: Path, m: dict) -> str:
    """The manifest's hash and its copy of the log entry both edited: the proof then fails."""
    sid = _replace_and_edit_hash(d, m)
    entry = m["segments"][1]
    leaf = json.loads(entry["leaf"])
    leaf["sha256"] = entry["sha256"]
    entry["leaf"] = json.dumps(leaf, sort_keys=True, separators=(",", ":"))
    return sid


def _delete_segment(d: Path, m: dict) -> str:
    entry = m["segments"][0]
    (d / entry["file"]).unlink()
    return entry["id"]


def _delete_segment_and_entry(d: Path, m: dict) -> str:
    """Both the file and its manifest entry gone: the range has a hole nothing explains."""
    entry = m["segments"].pop(1)
    (d / entry["file"]).unlink()
    return "range:"


def _edit_root(d: Path, m: dict) -> str:
    note = parse_note(m["checkpoint"]["note"])
    origin, size, _root, *rest = note.text.split("\n")
    text = "\n".join([origin, size, base64.b64encode(b"\x01" * 32).decode(), *rest])
    m["checkpoint"]["note"] = note.render().replace(note.text, text)
    return "not signed by the board key"


def _extra_file(d: Path, m: dict) -> str:
    (d / "segments" / "door.extra.mp4").write_bytes(b"x")
    return "door.extra.mp4"


def _drop_gap(d: Path, m: dict) -> str:
    m["gaps"] = []
    return "neither an exported segment nor a listed gap"


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (_replace_bytes, "the file was changed after recording"),
        (_replace_and_edit_hash, "the file was changed after recording"),
        (_replace_and_edit_leaf, "not in the board's log"),
        (_delete_segment, "is missing from the export"),
        (_delete_segment_and_entry, "is neither an exported segment nor a listed gap"),
        (_edit_root, "not in the board's log"),
        (_extra_file, "not listed in the manifest"),
        (_drop_gap, "range:"),
    ],
    ids=["replaced", "hash-edited", "leaf-edited", "deleted", "deleted-with-entry", "root",
         "extra-file", "gap-dropped"],
)  # fmt: skip
def test_a_tampered_export_fails_and_says_what_was_changed(
    witnessed: Exported, tmp_path: Path, tamper: Callable[[Path, dict], str], says: str
) -> None:
    """Each change an outsider could make to the copy they hold is caught and named."""
    d = tmp_path / "copy"
    shutil.copytree(witnessed.out, d)
    m = json.loads((d / MANIFEST).read_text())
    named = tamper(d, m)
    (d / MANIFEST).write_text(json.dumps(m))
    out = verify_alone(d, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    fails = [line for line in out.stdout.splitlines() if line.startswith("FAIL: ")]
    assert any(named in line for line in fails), out.stdout
    assert any(says in line for line in fails), out.stdout
    assert out.stdout.strip().endswith("FAIL")


def test_a_checkpoint_without_the_cosignature_fails_unless_accepted(
    witnessed: Exported, tmp_path: Path
) -> None:
    """Without the peer's cosignature the recording board alone vouches for its log: the
    verifier fails, or passes with a warning when told to accept that."""
    d = tmp_path / "copy"
    shutil.copytree(witnessed.out, d)
    m = json.loads((d / MANIFEST).read_text())
    note = parse_note(m["checkpoint"]["note"])
    m["checkpoint"]["note"] = note.render().splitlines(keepends=True)
    m["checkpoint"]["note"] = "".join(m["checkpoint"]["note"][:-1])  # the last line: cosignature
    assert len(parse_note(m["checkpoint"]["note"]).signatures) == 1
    (d / MANIFEST).write_text(json.dumps(m))
    out = verify_alone(d, tmp_path / "strict")
    assert out.returncode == 1 and "FAIL: checkpoint: not cosigned by the peer" in out.stdout
    out = verify_alone(d, tmp_path / "lenient", "--accept-unwitnessed")
    assert out.returncode == 0, out.stdout
    assert "WARNING: checkpoint: not cosigned by the peer" in out.stdout
    assert "NOT witnessed" in out.stdout


def test_a_forged_checkpoint_under_another_key_is_not_cosigned(
    witnessed: Exported, tmp_path: Path
) -> None:
    """A forger replaces a segment, builds a log of their own that holds it, signs its
    checkpoint with a new key named like the board's and puts that key in the manifest: every
    proof and the board signature check out, but the peer never cosigned it, and the printed
    board fingerprint is not the board's.

    What this cannot catch: a forger holding both boards' private keys can sign and cosign a
    log of their own choosing; then only the fingerprints, compared by a person with what
    `nvr status` shows on the boards (or got by another channel before), say nothing, since
    the keys are the right ones. Keys live on the boards' data disks (docs/EVIDENCE.md)."""
    d = tmp_path / "copy"
    shutil.copytree(witnessed.out, d)
    m = json.loads((d / MANIFEST).read_text())
    _replace_and_edit_leaf(d, m)
    origin = parse_note(m["checkpoint"]["note"]).text.split("\n")[0]
    forger = NoteSigner(origin, Ed25519PrivateKey.generate())
    tree = MerkleTree(MemoryNodes())
    tree.append([leaf_hash(e["leaf"].encode()) for e in m["segments"]])
    cp = Checkpoint(origin, tree.size(), tree.root(), (f"time {now_us() // 1_000_000}",))
    m["checkpoint"]["note"] = forger.sign(cp.body()).render()
    for i, e in enumerate(m["segments"]):
        e["leaf_index"] = i
        e["proof"] = [base64.b64encode(h).decode() for h in tree.inclusion_proof(i, tree.size())]
    m["keys"]["board"] = forger.vkey()
    (d / MANIFEST).write_text(json.dumps(m))
    out = verify_alone(d, tmp_path)
    assert out.returncode == 1, out.stdout
    fails = [line for line in out.stdout.splitlines() if line.startswith("FAIL: ")]
    assert fails == [fails[0]] and "not cosigned by the peer" in fails[0], out.stdout
    assert witnessed.summary.board_key not in out.stdout  # a person comparing sees another key


def test_unusable_input_exits_2(witnessed: Exported, tmp_path: Path) -> None:
    """No manifest, or one that is not JSON: not an export, which is not the same as FAIL."""
    d = tmp_path / "copy"
    shutil.copytree(witnessed.out, d)
    (d / MANIFEST).unlink()
    out = verify_alone(d, tmp_path / "none")
    assert out.returncode == 2 and "UNUSABLE" in out.stderr
    (d / MANIFEST).write_text("{not json")
    out = verify_alone(d, tmp_path / "bad")
    assert out.returncode == 2 and "not valid JSON" in out.stderr


# --- at export time ---------------------------------------------------------------------------


@contextmanager
def lone_board(root: Path) -> Iterator[Board]:
    """A board whose peer is away: its checkpoints are its own only."""
    b = board(root, "a")
    try:
        yield b
    finally:
        b.log.close()


def _sign(b: Board) -> None:
    b.log.ingest(b.catalog)
    b.log.sign(now_us(), 0)


@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_a_missing_or_changed_file_refuses_the_export_or_becomes_a_gap(
    tmp_path: Path, damage: str
) -> None:
    """The export does not paper over a segment it cannot vouch for: it names it and stops;
    told to go on, it leaves it out and the manifest says why that part is missing."""
    with lone_board(tmp_path) as b:
        segs = record(b)
        _sign(b)
        path = b.data / segs[1].path
        if damage == "missing":
            path.unlink()
        else:
            path.write_bytes(b"\x00" * segs[1].bytes)
        out = tmp_path / "out"
        with pytest.raises(ExportRefused, match=f"segment {segs[1].id}: {damage}"):
            export_of(b, out)
        assert not out.exists()  # nothing half-written is left
        s = export_of(b, out, allow_damaged=True)
    assert s.damaged == (segs[1].id,) and s.segments == 2 and not s.witnessed
    gaps = json.loads((out / MANIFEST).read_text())["gaps"]
    assert {"start_us": segs[1].start_us, "end_us": segs[1].end_us, "reason": damage,
            "segment": segs[1].id}.items() <= gaps[1].items()  # fmt: skip
    assert not (out / "segments" / Path(segs[1].path).name).exists()
    result = verify_alone(out, tmp_path, "--accept-unwitnessed")
    assert result.returncode == 0, result.stdout


def test_an_unwitnessed_export_says_so_and_the_verifier_fails_it(tmp_path: Path) -> None:
    """The peer was away: the export still comes, marked signed by this board only."""
    with lone_board(tmp_path) as b:
        record(b)
        _sign(b)
        s = export_of(b, tmp_path / "out")
    m = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert not s.witnessed and not m["checkpoint"]["witnessed"]
    assert m["checkpoint"]["signed_by"].startswith("this board only")
    assert "--accept-unwitnessed" in (tmp_path / "out" / "README.txt").read_text()
    out = verify_alone(tmp_path / "out", tmp_path)
    assert out.returncode == 1 and "not cosigned by the peer" in out.stdout


def test_a_gap_carries_the_reason_the_recording_stopped(tmp_path: Path) -> None:
    """As `nvr catalog` shows it: a run's end reason explains the time until the next run."""
    with lone_board(tmp_path) as b:
        first = add_segment(b.data, b.catalog, "door", T0, b"one")
        b.catalog.end_run(first.run_id, "camera lost")
        add_segment(b.data, b.catalog, "door", T0 + 3 * SEG_US, b"two")
        _sign(b)
        s = export_of(b, tmp_path / "out", start=T0, end=T0 + 4 * SEG_US)
    gaps = json.loads((tmp_path / "out" / MANIFEST).read_text())["gaps"]
    assert s.gaps == 1
    assert [(g["start_us"], g["end_us"], g["reason"]) for g in gaps] == [
        (T0 + SEG_US, T0 + 3 * SEG_US, "camera lost")
    ]
    out = verify_alone(tmp_path / "out", tmp_path, "--accept-unwitnessed")
    assert out.returncode == 0, out.stdout


def test_a_non_empty_directory_and_unsigned_segments_are_refused(tmp_path: Path) -> None:
    with lone_board(tmp_path) as b:
        record(b)
        b.log.ingest(b.catalog)
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "keep.txt").write_text("mine")
        with pytest.raises(ExportRefused, match="not empty"):
            export_of(b, tmp_path / "full")
        assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
        with pytest.raises(ExportRefused, match="not in a signed checkpoint"):
            export_of(b, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_the_read_side_log_reader_opens_beside_the_writer_and_signs_nothing(
    tmp_path: Path,
) -> None:
    """`nvr export` and the API read the log the firmware writes; they never sign."""
    with lone_board(tmp_path) as b:
        record(b)
        _sign(b)
        reader = read_log(b.data)
        try:
            assert reader.origin == b.log.origin and board_of(reader.origin) == "a"
            assert reader.latest() == b.log.latest()
            assert reader.tree.root() == b.log.tree.root()
            with pytest.raises(PermissionError):
                reader.sign(now_us(), 0)
            s = export(b.data, reader, b.catalog, "door", START, END, tmp_path / "out",
                       board_of(reader.origin), __version__)  # fmt: skip
            assert s.segments == 3
        finally:
            reader.close()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_a_real_mp4_is_exported_byte_for_byte_with_a_viewing_copy(tmp_path: Path) -> None:
    """The original file is what is exported and verified; view.mp4 is a remux for viewing."""
    clips = []
    for i in range(2):
        clip = tmp_path / f"clip{i}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"testsrc=size=160x120:rate=10:duration=1,hue=h={i * 90}",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
                       check=True, timeout=60)  # fmt: skip
        clips.append(clip.read_bytes())
    with lone_board(tmp_path) as b:
        segs = record(b, 2, lambda i: clips[i])
        _sign(b)
        s = export_of(b, tmp_path / "out", start=T0, end=T0 + 2 * SEG_US, view=True)
    assert s.view
    for seg in segs:
        got = tmp_path / "out" / "segments" / Path(seg.path).name
        assert got.read_bytes() == (b.data / seg.path).read_bytes()
        assert ffprobe(got)["streams"][0]["codec_name"] == "h264"
    view = ffprobe(tmp_path / "out" / "view.mp4")
    assert float(view["format"]["duration"]) >= 1.9
    out = verify_alone(tmp_path / "out", tmp_path, "--accept-unwitnessed")
    assert out.returncode == 0, out.stdout


# --- the command line and the API -------------------------------------------------------------


def test_nvr_export_round_trip_is_audited(tmp_path: Path) -> None:
    """`nvr export --data` beside the running log: the export verifies, the audit log says who
    exported what (and so, at the next ingest, the board's log does)."""
    with two_boards(tmp_path) as (a, b):
        segs = record(a.b)
        rounds(a, b)
        out = tmp_path / "out"
        done = subprocess.run(
            [*NVR, "export", "--data", str(a.b.data), "--camera", "door", "--start",
             iso(START) or "", "--end", iso(END) or "", "--out", str(out)],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        again = subprocess.run(
            [*NVR, "export", "--data", str(a.b.data), "--camera", "door", "--start",
             iso(START) or "", "--end", iso(END) or "", "--out", str(out)],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert again.returncode != 0 and "not empty" in again.stderr
        events = [json.loads(line) for line in (a.b.data / AUDIT_FILE).read_text().splitlines()]
    exports = [e for e in events if e["event"] == "export"]
    assert len(exports) == 1
    assert {"camera": "door", "segments": len(segs), "out": str(out), "source": "cli",
            "start": iso(START), "end": iso(END)}.items() <= exports[0].items()  # fmt: skip
    result = verify_alone(out, tmp_path)
    assert result.returncode == 0, result.stdout


def test_api_export_needs_the_token_and_returns_a_tar_that_verifies(tmp_path: Path) -> None:
    with two_boards(tmp_path) as (a, b):
        record(a.b)
        rounds(a, b)
        ctx = ApiContext(snapshot=lambda: None, catalog=a.b.catalog, data_dir=a.b.data,
                         token=TOKEN, camera_names=lambda: {"door"}, handover=None,
                         audit=a.b.audit)  # type: ignore[arg-type]  # fmt: skip
        query = {"camera": "door", "start": iso(START), "end": iso(END)}

        async def run() -> tuple[list[int], int, bytes, int]:
            async with TestServer(make_app(ctx)) as ts, ClientSession() as s:
                url = ts.make_url("/api/v1/export")
                denied = []
                for headers in ({}, {"Authorization": "Bearer wrong"}):
                    async with s.get(url, params=query, headers=headers) as r:
                        denied.append(r.status)
                auth = {"Authorization": f"Bearer {TOKEN}"}
                async with s.get(url, params=query, headers=auth) as r:
                    status, body = r.status, await r.read()
                async with s.get(url, params={**query, "camera": "nope"}, headers=auth) as r:
                    unknown = r.status
            return denied, status, body, unknown

        denied, status, body, unknown = asyncio.run(run())
        events = [json.loads(line) for line in (a.b.data / AUDIT_FILE).read_text().splitlines()]
    assert denied == [401, 401] and status == 200 and unknown == 404
    dest = tmp_path / "got"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
        assert all(n.split("/")[0] == names[0] and ".." not in n.split("/") for n in names)
        tar.extractall(dest)  # names checked above: one top directory, nothing outside it
    (top,) = list(dest.iterdir())
    result = verify_alone(top, tmp_path)
    assert result.returncode == 0, result.stdout
    exports = [e for e in events if e["event"] == "export"]
    assert len(exports) == 1 and exports[0]["source"] == "api" and exports[0]["segments"] == 3
    leftovers = [p for p in a.b.data.rglob("*") if "export" in p.name]
    assert leftovers == []  # the temporary directory under the data dir is gone
