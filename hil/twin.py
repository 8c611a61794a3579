"""Two boards running `nvr run --config` in the rig, with one simulated camera.

The tests, the benchmark and the README's main command share this: generated configs and a
pair key, start, stop, power cut, status over the API from inside the namespaces, and who
holds the floating IP.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hal.linux.nic import LinuxNic
from hil.camera import CameraSim, StreamSpec, free_port
from hil.proctree import recorder_workers
from hil.rig import ADDRESSES, LAN_PREFIX, VIRTUAL_IP, PairRig
from hil.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
API_PORT = 8080
ADVERT_PORT = 5405
MIRROR_PORT = 5406
BOARDS = ("a", "b")
VIP_CIDR = f"{VIRTUAL_IP}/{LAN_PREFIX}"


def _peer(host: str) -> str:
    return "b" if host == "a" else "a"


class TwinBoards:
    """`with TwinBoards() as tb:` brings the rig and the camera up and always tears all down."""

    def __init__(
        self,
        workdir: Path | None = None,
        camera: bool = True,
        segment_seconds: float = 2.0,
        advert_interval_ms: int = 100,
        cameras: int = 1,
        stream: dict[str, Any] | None = None,
        second_camera: Sequence[str] = (),
        camera_auth: str | None = None,
    ) -> None:
        """stream: StreamSpec fields for every camera (e.g. bitrate, pattern, width).
        second_camera: cameras the boards record from a second simulator on a port of its
        own, so a firewall rule on that port cuts off these cameras alone. It numbers frames
        on the first simulator's clock (same epoch), so `camera.clock(name)` still answers
        for every camera."""
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="twin-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.rig = PairRig()
        self.with_camera = camera
        self.camera: CameraSim | None = None
        self.camera2: CameraSim | None = None
        self.second_camera = tuple(second_camera)
        self.camera_auth = camera_auth
        """user:password the simulated cameras ask for (the boards' URLs carry it)."""
        unknown = set(self.second_camera) - {f"cam{i + 1}" for i in range(cameras)}
        if unknown:
            raise ValueError(f"second_camera names cameras that do not exist: {sorted(unknown)}")
        self.cameras = [f"cam{i + 1}" for i in range(cameras)] if camera else []
        self.stream = {"cheap": True, "fps": 25, "gop": 25, **(stream or {})}
        self.segment_seconds = segment_seconds
        self.advert_interval_ms = advert_interval_ms
        self.key_file = self.workdir / "pair.key"
        self.logs: dict[str, Path] = {}

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> TwinBoards:
        try:
            self.rig.up()
            self.workdir.mkdir(parents=True, exist_ok=True)
            if not self.key_file.exists():
                subprocess.run([sys.executable, "-m", "firmware.cli", "pair-key",
                                str(self.key_file)], cwd=ROOT, check=True,
                               capture_output=True)  # fmt: skip
            if self.with_camera:
                self.camera = CameraSim(
                    [StreamSpec(name, **self.stream) for name in self.cameras],
                    netns=self.rig.ns("cam"),
                    bind=ADDRESSES["cam"]["lan"],
                    auth=self.camera_auth,
                )
                self.camera.start()
                if self.second_camera:
                    self.camera2 = self._second_camera(self.camera)
        except BaseException:
            self.close()
            raise
        return self

    def _second_camera(self, first: CameraSim) -> CameraSim:
        """The second simulator: same namespace and address, another port, same epoch."""
        port = free_port()
        while port == first.port:  # both ports live in the camera's namespace, not here
            port = free_port()
        sim = CameraSim(
            [StreamSpec(name, **self.stream) for name in self.second_camera],
            port=port,
            netns=self.rig.ns("cam"),
            bind=ADDRESSES["cam"]["lan"],
            epoch=first.epoch,
        )
        return sim.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.rig.down()
        for sim in (self.camera, self.camera2):
            if sim is not None:
                sim.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    # --- boards --------------------------------------------------------------------------------

    def data_dir(self, host: str) -> Path:
        return self.workdir / host / "data"

    def config(
        self,
        host: str,
        priority: int = 100,
        sections: dict[str, dict[str, Any]] | None = None,
        **pair: Any,
    ) -> Path:
        """Write host's config; `pair` overrides [pair] keys (e.g. preempt=True), `sections`
        adds whole sections (e.g. {"ups": {"backend": "serial", ...}})."""
        peer = _peer(host)
        keys: dict[str, Any] = {
            "peer_lan_address": ADDRESSES[peer]["lan"],
            "peer_sync_address": ADDRESSES[peer]["sync"],
            "virtual_ip": VIP_CIDR,
            "priority": priority,
            "advert_interval_ms": self.advert_interval_ms,
            "key_file": str(self.key_file),
            "advert_port": ADVERT_PORT,
            "mirror_port": MIRROR_PORT,
            **pair,
        }
        lines = [
            "[board]",
            f'name = "{host}"',
            f'data_dir = "{self.data_dir(host)}"',
            "",
            "[pair]",
            *(f"{k} = {json.dumps(v)}" for k, v in keys.items()),
            "",
            "[recorder]",
            f"segment_seconds = {self.segment_seconds}",
            "min_free_mb = 16",
            "",
            "[api]",
            f"listen_port = {API_PORT}",
        ]
        for section, keys in (sections or {}).items():
            lines += ["", f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in keys.items())]
        for name in self.cameras:
            url = self.source(name).url(name, host=ADDRESSES["cam"]["lan"])
            lines += ["", "[[camera]]", f'name = "{name}"', f'url = "{url}"']
        path = self.workdir / host / "nvr.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def source(self, name: str) -> CameraSim:
        """The simulator the boards record camera `name` from."""
        if name in self.second_camera and self.camera2 is not None:
            return self.camera2
        assert self.camera is not None
        return self.camera

    def start(
        self,
        host: str,
        priority: int = 100,
        sections: dict[str, dict[str, Any]] | None = None,
        **pair: Any,
    ) -> None:
        cfg = self.config(host, priority, sections, **pair)
        log = self.workdir / host / "nvr.log"
        self.logs[host] = log
        with open(log, "ab") as out:
            self.rig.start(
                host,
                [sys.executable, "-m", "firmware.cli", "run", "--config", str(cfg)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self, host: str, timeout: float = 60) -> None:
        """A clean stop (SIGTERM): the board hands over before it exits."""
        self.rig.kill(host, signal.SIGTERM, group=False, timeout=timeout)

    def power_cut(self, host: str) -> None:
        self.rig.power_cut(host)

    def pid(self, host: str) -> int | None:
        """The board's main process (`nvr run`)."""
        procs = [p for p in self.rig.procs.get(host, []) if p.poll() is None]
        return procs[-1].pid if procs else None

    def power_back(self, host: str) -> None:
        self.rig.power_on(host)

    def recorder_pids(self, host: str) -> list[int]:
        """The board's recorder worker processes (hil/proctree.py)."""
        main = self.pid(host)
        return [] if main is None else recorder_workers(main)

    def log(self, host: str) -> str:
        path = self.logs.get(host)
        return path.read_text(errors="replace") if path and path.exists() else ""

    # --- observation ---------------------------------------------------------------------------

    def status(self, host: str, timeout: float = 1.0) -> dict:
        """The board's own status, asked over loopback inside its namespace (so it answers
        with its cables pulled)."""
        return self.rig.http_json(host, "127.0.0.1", API_PORT, "/api/v1/status", timeout)

    def role(self, host: str) -> str | None:
        try:
            return self.status(host)["role"]
        except (OSError, ValueError):
            return None

    def via_vip(self, timeout: float = 0.5) -> dict:
        """What a client on the LAN gets from the floating IP."""
        return self.rig.http_json("cli", VIRTUAL_IP, API_PORT, "/api/v1/status", timeout)

    def wait_vip(self, board: str, timeout: float, per_request: float = 0.02) -> float:
        """Ask the VIP from the client back to back, each request given up after per_request,
        until `board` answers; returns the monotonic time of that answer."""
        wait_until(lambda: self.via_vip(per_request)["board"] == board, timeout,
                   f"board {board} answering on the VIP", every=0)  # fmt: skip
        return time.monotonic()

    def vip_holders(self) -> list[str]:
        """Boards whose LAN port is up and carries the VIP (a board whose power was cut keeps
        the address in its namespace, but nothing can reach it there)."""
        holders = []
        for h in BOARDS:
            nic = LinuxNic(self.rig.ns(h))
            if nic.link("eth0").up and VIP_CIDR in nic.addresses("eth0"):
                holders.append(h)
        return holders

    def active(self) -> str | None:
        """The single board that holds the VIP and says it is active, else None."""
        holders = self.vip_holders()
        if len(holders) == 1 and self.role(holders[0]) == "active":
            return holders[0]
        return None
