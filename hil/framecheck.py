"""Read the camera simulator's frame numbers back from recordings, without decoding.

Every access unit sent by hil.camera carries an SEI message with its frame number and the
sender's wall clock (see hil.camera.sei). Demuxing a recording with PyAV and looking at the
NAL units before the first slice of each packet tells exactly which camera frames made it
into the file; check_contiguous() turns a sequence of numbers (possibly from many files, in
recording order) into counts of lost, duplicated and reordered frames.

    python -m hil.framecheck FILE [FILE ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import av

from hil.camera.sei import find_stamp, iter_annexb_nals, iter_length_prefixed_nals, normalize_codec


class FrameRecord(NamedTuple):
    """One stamped video frame found in a file."""

    frame: int
    sender_us: int


def _length_size(codec: str, extradata: bytes | None) -> int | None:
    """NAL length field size from avcC/hvcC extradata; None means Annex B samples."""
    if not extradata or extradata[0] != 1:
        return None  # absent or Annex B parameter sets
    if codec == "h264" and len(extradata) >= 5:
        return (extradata[4] & 0x03) + 1
    if codec == "h265" and len(extradata) >= 22:
        return (extradata[21] & 0x03) + 1
    return 4


def _iter_nals(data: bytes, length_size: int | None) -> Iterator[bytes]:
    if length_size is None or data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        return iter_annexb_nals(data)
    return iter_length_prefixed_nals(data, length_size)


def stamp_from_packet(
    data: bytes, codec: str, length_size: int | None = None
) -> FrameRecord | None:
    """The stamp of one demuxed video packet (e.g. read live from RTSP with PyAV).

    length_size: NAL length field size of MP4-style samples; None for Annex B (what the
    RTSP demuxer delivers). Returns None for a packet without a stamp.
    """
    stamp = find_stamp(normalize_codec(codec), _iter_nals(data, length_size))
    return None if stamp is None else FrameRecord(*stamp)


def frame_records(path: str | Path) -> list[FrameRecord]:
    """(frame number, sender time in us) of every stamped video packet, in file order.

    Packets without a stamp are skipped. A truncated tail (a recorder killed mid-fragment)
    ends the list instead of raising; a file that cannot be opened at all still raises.
    """
    records: list[FrameRecord] = []
    with av.open(str(path)) as container:
        video = next((s for s in container.streams if s.type == "video"), None)
        if video is None:
            return records
        codec = normalize_codec(video.codec_context.name)
        extradata = video.codec_context.extradata
        length_size = _length_size(codec, bytes(extradata) if extradata else None)
        packets = container.demux(video)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.FFmpegError, EOFError, OSError):
                break  # truncated or damaged tail
            if packet.size == 0 or packet.is_corrupt:
                continue
            record = stamp_from_packet(bytes(packet), codec, length_size)
            if record is not None:
                records.append(record)
    return records


def frame_numbers(path: str | Path) -> list[int]:
    """Frame numbers of the stamped video packets of one MP4/fMP4 (or other) file."""
    return [r.frame for r in frame_records(path)]


@dataclass
class ContiguityReport:
    """What a sequence of frame numbers says about lost, repeated and reordered frames.

    gaps are inclusive (first, last) runs of numbers absent between the lowest and the
    highest number seen (or the expected bounds, when given).
    """

    count: int = 0
    first: int | None = None
    last: int | None = None
    unique: int = 0
    missing: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    duplicates: int = 0  # extra occurrences beyond the first
    duplicated_numbers: list[int] = field(default_factory=list)
    out_of_order: int = 0  # places where a number is lower than its predecessor
    backsteps: list[tuple[int, int]] = field(default_factory=list)  # (previous, number)

    @property
    def ok(self) -> bool:
        """Strictly contiguous: nothing missing, repeated or reordered."""
        return not (self.missing or self.duplicates or self.out_of_order)

    def summary(self) -> str:
        return (
            f"{self.count} frames {self.first}..{self.last}: {self.missing} missing in "
            f"{len(self.gaps)} gaps, {self.duplicates} duplicates, "
            f"{self.out_of_order} out of order"
        )


def check_contiguous(
    numbers: Iterable[int], expect_first: int | None = None, expect_last: int | None = None
) -> ContiguityReport:
    """Check frame numbers (in recording order) for gaps, duplicates and reordering.

    expect_first/expect_last widen the checked range so frames lost before the first or
    after the last recorded one count as missing too.
    """
    seq = list(numbers)
    report = ContiguityReport(count=len(seq))
    if not seq and expect_first is None:
        return report
    counts = Counter(seq)
    report.unique = len(counts)
    report.duplicated_numbers = sorted(n for n, c in counts.items() if c > 1)
    report.duplicates = sum(c - 1 for c in counts.values())
    for prev, cur in itertools.pairwise(seq):
        if cur < prev:
            report.out_of_order += 1
            report.backsteps.append((prev, cur))
    lo = min(seq) if seq else expect_first
    hi = max(seq) if seq else expect_last
    if expect_first is not None:
        lo = min(lo, expect_first) if lo is not None else expect_first
    if expect_last is not None:
        hi = max(hi, expect_last) if hi is not None else expect_last
    report.first, report.last = (seq[0], seq[-1]) if seq else (None, None)
    if lo is None or hi is None:
        return report
    present = sorted(counts)
    expected_next = lo
    for n in present:
        if n < lo:
            continue
        if n > hi:
            break
        if n > expected_next:
            report.gaps.append((expected_next, n - 1))
        expected_next = max(expected_next, n + 1)
    if expected_next <= hi:
        report.gaps.append((expected_next, hi))
    report.missing = sum(b - a + 1 for a, b in report.gaps)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.framecheck", description=__doc__)
    p.add_argument("files", nargs="+", type=Path, help="recordings, in recording order")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    numbers: list[int] = []
    for path in args.files:
        found = frame_numbers(path)
        if not args.json:
            span = f"{found[0]}..{found[-1]}" if found else "-"
            print(f"{path}: {len(found)} stamped frames {span}")
        numbers.extend(found)
    report = check_contiguous(numbers)
    if args.json:
        print(json.dumps({**asdict(report), "ok": report.ok}))
    else:
        print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
