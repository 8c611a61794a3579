"""`nvr drill handover` on a live pair: asks both boards and the floating IP over HTTP
(urllib, as `nvr handover` does), reads the monotonic clock and polls with deadlines; every
decision is firmware/drill.py's. Writes the result to the audit log of the board it runs on."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from firmware.audit import AUDIT_FILE, AuditLog
from firmware.config import Config, load_config
from firmware.drill import (
    BoardView,
    CameraContinuity,
    DrillResult,
    Fitness,
    GapRec,
    LegResult,
    LegStep,
    LegWatch,
    NoAnswer,
    SegmentRec,
    check_fit,
    continuity,
    drill_window,
    parse_recordings,
    ring_needed,
)
from firmware.recorder.supervisor import ring_seconds
from firmware.timefmt import iso, now_us

AUDIT_EVENT = "drill-handover"
Audit = Callable[..., None]
"""AuditLog.append's shape: (now_us, event, **fields)."""


@dataclass(frozen=True)
class Timing:
    """The drill's deadlines and polling intervals, in seconds."""

    leg: float = 60.0
    """A handover, from the request to the new active board's first segments."""
    settle: float = 90.0
    """After the first handover, for the pair to be fit for the hand-back."""
    poll: float = 0.2
    """Between two looks at the recordings (and at the pair while it settles)."""
    vip_request: float = 0.2
    """One request on the VIP is given up after this (they go back to back)."""
    request: float = 5.0


class Boards:
    """The two boards' APIs and the VIP, as this board's config names them."""

    def __init__(self, cfg: Config, token: str, timing: Timing) -> None:
        assert cfg.pair is not None
        port = cfg.api.listen_port
        self.token, self.timing = token, timing
        self.urls = {"here": f"http://127.0.0.1:{port}",
                     "peer": f"http://{_host(str(cfg.pair.peer_lan_address))}:{port}"}  # fmt: skip
        self.vip = f"http://{_host(str(cfg.pair.virtual_ip.ip))}:{port}"
        self.by_name: dict[str, str] = {}
        self.ring = ring_needed(cfg.recorder.segment_seconds, ring_seconds(cfg.recorder))
        """This board's config speaks for the pair's (pair settings keep them the same)."""
        margin = 3 * cfg.recorder.segment_seconds + 60
        self.margin_us = int(margin * 1e6)
        """How far before a request the recordings are asked: the new active board's first
        segment may start a little before it (it continues the mirrored footage)."""

    def get(self, url: str, timeout: float | None = None, auth: bool = False) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        req = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout or self.timing.request) as r:
            return json.load(r)

    def views(self) -> list[BoardView | NoAnswer]:
        """Both boards' status; remembers which URL answers for which board name."""
        out: list[BoardView | NoAnswer] = []
        for where, url in self.urls.items():
            label = "this board" if where == "here" else f"the peer at {url}"
            try:
                view = BoardView.from_status(self.get(url + "/api/v1/status"))
                cams = self.get(url + "/api/v1/cameras", auth=True)["cameras"]
                view = replace(view, ring_seconds={str(c["name"]): c.get("ring_seconds")
                                                   for c in cams})  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError) as e:
                out.append(NoAnswer(label, _reason(e)))
                continue
            self.by_name[view.name] = url
            out.append(view)
        return out

    def handover(self, board: str) -> None:
        """POST /api/v1/pair/handover on `board`; RuntimeError with the board's words."""
        req = urllib.request.Request(self.by_name[board] + "/api/v1/pair/handover",
                                     method="POST",
                                     headers={"Authorization": f"Bearer {self.token}"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=self.timing.request) as r:
                json.load(r)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{board}: {e.code} {e.read().decode(errors='replace')}") from None
        except (OSError, ValueError) as e:
            raise RuntimeError(f"{board}: {_reason(e)}") from None

    def vip_board(self) -> str | None:
        """Who answers on the VIP now (None: nobody, within one short request)."""
        try:
            return str(self.get(self.vip + "/api/v1/status", self.timing.vip_request)["board"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def recordings(self, board: str, camera: str, start_us: int,
                   end_us: int | None = None) -> tuple[list[SegmentRec], list[GapRec]]:  # fmt: skip
        query = {"start": iso(start_us)}
        if end_us is not None:
            query["end"] = iso(end_us)
        url = (f"{self.by_name[board]}/api/v1/cameras/{urllib.parse.quote(camera, safe='')}"
               f"/recordings?{urllib.parse.urlencode(query)}")  # fmt: skip
        return parse_recordings(self.get(url, auth=True), board)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _leg(boards: Boards, source: str, target: str, cameras: tuple[str, ...],
         clock: Callable[[], float]) -> LegResult:  # fmt: skip
    """One planned handover, measured (see firmware/drill.py for what exactly)."""
    t = boards.timing
    since = now_us() - boards.margin_us
    known: set[str] = set()
    error = None
    try:
        for cam in cameras:
            segs, _ = boards.recordings(target, cam, since)
            known |= {s.id for s in segs if s.origin == target}
    except (OSError, ValueError, KeyError, TypeError) as e:
        error = f"recordings of {target} not read, no request sent: {_reason(e)}"
    requested = clock()
    watch = LegWatch(source, target, cameras, frozenset(known), requested, requested + t.leg)
    if error is not None:
        watch.stop(error)
    else:
        try:
            boards.handover(source)
        except RuntimeError as e:
            watch.stop(f"handover request refused: {e}")
    next_look = clock()
    while (step := watch.step(clock())) not in (LegStep.DONE, LegStep.FAILED):
        if step is LegStep.WATCH_VIP:
            answer = boards.vip_board()
            if answer is not None:
                watch.vip_answer(answer, clock())
        if clock() >= next_look:
            for cam in watch.pending_cameras():
                try:
                    segs, _ = boards.recordings(target, cam, since)
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # the board is busy taking over: the deadline decides
                watch.recordings(cam, segs, clock())
            next_look = clock() + t.poll
        if watch.vip_at is not None:
            time.sleep(max(0.0, min(next_look - clock(), t.poll)))
        else:
            time.sleep(0.005)  # the VIP is asked back to back; a refused connect is instant
    return watch.result()


def _settle(boards: Boards, active: str, clock: Callable[[], float]) -> Fitness:
    """Wait until the pair is fit again with `active` active (the last look if never)."""
    deadline = clock() + boards.timing.settle
    while True:
        fit = check_fit(boards.views(), boards.ring)
        if (fit.ok and fit.active == active) or clock() >= deadline:
            return fit
        time.sleep(boards.timing.poll)


def _continuity(boards: Boards, cameras: tuple[str, ...],
                window: tuple[int, int]) -> tuple[CameraContinuity, ...]:  # fmt: skip
    out = []
    for cam in cameras:
        segs: list[SegmentRec] = []
        gaps: list[GapRec] = []
        for board in boards.by_name:
            s, g = boards.recordings(board, cam, window[0], window[1])
            segs += s
            gaps += g
        out.append(continuity(cam, segs, gaps, window))
    return tuple(out)


def run_drill(cfg: Config, token: str, timing: Timing = Timing(),
              clock: Callable[[], float] = time.monotonic) -> DrillResult:  # fmt: skip
    """The drill: fit, handover, fit again, hand-back, continuity."""
    if cfg.pair is None:
        return DrillResult(Fitness(("no [pair] in the config: a single board has no drill",)))
    boards = Boards(cfg, token, timing)
    fit = check_fit(boards.views(), boards.ring)
    if not fit.ok:
        return DrillResult(fit)
    assert fit.active is not None and fit.standby is not None
    start_us = now_us()
    legs = [_leg(boards, fit.active, fit.standby, fit.cameras, clock)]
    if not legs[0].completed:
        return DrillResult(fit, tuple(legs), error="stopped after the first handover; the "
                           "pair is left as it is (see `nvr status` on both boards)")  # fmt: skip
    again = _settle(boards, fit.standby, clock)
    if not again.ok or again.active != fit.standby:
        return DrillResult(fit, tuple(legs), error="no hand-back: after the handover the pair "
                           f"did not settle ({again.line()})")  # fmt: skip
    legs.append(_leg(boards, fit.standby, fit.active, fit.cameras, clock))
    window = drill_window(start_us, legs[1])
    if window is None:
        return DrillResult(fit, tuple(legs), error="no continuity: the hand-back did not complete")
    try:
        cont = _continuity(boards, fit.cameras, window)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return DrillResult(fit, tuple(legs), error=f"recordings not read: {_reason(e)}")
    return DrillResult(fit, tuple(legs), cont)


def drill_handover(config: Path, as_json: bool = False, out: TextIO | None = None,
                   timing: Timing = Timing(), audit: Audit | None = None) -> int:  # fmt: skip
    """`nvr drill handover`: run, print, audit; 0 when it passed. ConfigError and OSError (the
    token) are the caller's. `audit`: where the record goes (the console passes its own);
    else this board's audit log is opened for it."""
    from firmware.datadir import api_token

    out = out or sys.stdout
    cfg = load_config(config)
    token = api_token(cfg, board=False) if cfg.pair is not None else ""
    result = run_drill(cfg, token, timing)
    if as_json:
        print(json.dumps(result.to_json(), indent=1), file=out)
    else:
        print("\n".join(result.lines()), file=out)
    if result.refused:
        print(f"nvr: drill refused: {'; '.join(result.fitness.reasons)}", file=sys.stderr)
    if audit is None:
        try:
            audit = AuditLog(cfg.board.data_dir / AUDIT_FILE).append
        except OSError as e:
            print(f"nvr: audit log: {e}", file=sys.stderr)
    if audit is not None:
        audit(now_us(), AUDIT_EVENT, **result.audit_fields())
    return 0 if result.ok else 1
