"""Watching the pair while a drill runs: the floating IP as a client sees it and each board's
own status, polled from threads so a slow or dead board never stalls the others."""

from __future__ import annotations

import bisect
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException

from hil.drills.measure import BoardSample
from hil.drills.model import VipSample
from hil.lab.protocols import BoardProtocol, ClientProtocol


def parse_status(board: str, at: float, body: bytes) -> BoardSample:
    st = json.loads(body)
    return BoardSample(
        at=at,
        board=board,
        answered=True,
        role=st.get("role"),
        recording=frozenset(c["name"] for c in st.get("cameras", []) if c.get("recording")),
        mirror_lag_seconds=st.get("mirror_lag_seconds"),
        version=st.get("version"),
    )


class Observer:
    def __init__(
        self,
        boards: dict[str, BoardProtocol],
        client: ClientProtocol,
        vip_every: float = 0.025,
        board_every: float = 0.1,
        vip_timeout: float = 1.0,
    ) -> None:
        """The VIP is asked every vip_every by a request of its own, whatever the ones before
        it are doing: an answer may take vip_timeout (a slow answer is still an answer to a
        client), and a dead VIP is still probed every vip_every, so the moment it answers
        again is seen to within vip_every."""
        self.boards = boards
        self.client = client
        self.vip_every, self.board_every, self.vip_timeout = vip_every, board_every, vip_timeout
        self.samples: list[BoardSample] = []
        self.vip: list[VipSample] = []
        self.errors: list[str] = []
        """Why a polling thread stopped other than by stop(): the drill is then void."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        workers = int(vip_timeout / vip_every) + 8  # every probe of a dead VIP in flight
        self._probes = ThreadPoolExecutor(workers, thread_name_prefix="drill-vip")

    def start(self) -> Observer:
        self._threads = [threading.Thread(target=self._guard, args=(self._poll_vip,), daemon=True)]
        for name in self.boards:
            self._threads.append(
                threading.Thread(target=self._guard, args=(self._poll_board, name), daemon=True)
            )
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        self._probes.shutdown(wait=True)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as e:
            with self._lock:
                self.errors.append(f"{fn.__name__}{args}: {type(e).__name__}: {e}")

    def _poll_vip(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._probes.submit(self._guard, self._probe_vip)
            next_at += self.vip_every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _probe_vip(self) -> None:
        at = time.time()
        try:
            body = self.client.vip("/api/v1/status", timeout=self.vip_timeout)
            board = json.loads(body)["board"]
        except (OSError, ValueError, KeyError, HTTPException):
            board = None
        with self._lock:
            bisect.insort(self.vip, VipSample(at, board), key=lambda v: v.at)

    def _poll_board(self, name: str) -> None:
        board = self.boards[name]
        while not self._stop.is_set():
            at = time.time()
            try:
                sample = parse_status(name, at, board.api("/api/v1/status", timeout=1.0))
            except (OSError, ValueError, KeyError, HTTPException):
                sample = BoardSample(at, name, answered=False)
            with self._lock:
                self.samples.append(sample)
            self._stop.wait(self.board_every)

    def latest(self, board: str) -> BoardSample | None:
        with self._lock:
            mine = [s for s in self.samples if s.board == board]
        return mine[-1] if mine else None

    def vip_since(self, since: float) -> list[VipSample]:
        with self._lock:
            return [s for s in self.vip if s.at >= since]
