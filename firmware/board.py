"""The board: config in, recorder + API + alerts running, status out."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

from aiohttp import web

from firmware import __version__
from firmware.alerts import Alerts
from firmware.api import make_app
from firmware.catalog import Catalog
from firmware.config import Config, ConfigError, load_config
from firmware.datadir import api_token, prepare
from firmware.failover.advert import Health
from firmware.failover.daemon import Failover
from firmware.failover.health import board_health
from firmware.recorder.supervisor import Recorder, now_us
from firmware.timefmt import iso
from hal.linux.nic import LinuxNic
from hal.nic import Nic

log = logging.getLogger(__name__)


class Board:
    def __init__(self, cfg: Config, serve_api: bool = True, nic: Nic | None = None) -> None:
        self.cfg = cfg
        self.data_dir = cfg.board.data_dir
        self.identity = prepare(self.data_dir, cfg.board.name, now_us())
        self.api_token = api_token(cfg.token_file)
        self.serve_api = serve_api
        self.alerts = Alerts()
        self.catalog = Catalog(self.data_dir)
        self.recorder = Recorder(
            self.data_dir, cfg.board.name, cfg.recorder, cfg.camera, self.alerts
        )
        self.started = time.monotonic()
        self.api_port: int | None = None
        self.failover: Failover | None = None
        if cfg.pair is not None:
            self.failover = Failover(cfg, nic or LinuxNic(), self.alerts, self._health, now_us)

    def _health(self, lan_carrier: bool) -> Health:
        enabled = {c.name for c in self.cfg.camera if c.enabled}
        recording = sum(
            1 for st in self.recorder.status.values() if st.name in enabled and st.recording
        )
        return board_health(self.alerts.active(), len(enabled), recording, lan_carrier)

    def reload(self, path: Path) -> str:
        """SIGHUP: apply a changed config; a bad one is refused and the running one kept."""
        try:
            new = load_config(path)
        except ConfigError as e:
            self.alerts.raise_(
                "config-invalid", "critical", f"{e} (still running the last good config)", now_us()
            )
            return "refused"
        self.alerts.clear("config-invalid")
        fixed = (new.board, new.api, new.network, new.pair)
        if fixed != (self.cfg.board, self.cfg.api, self.cfg.network, self.cfg.pair):
            self.alerts.raise_(
                "restart-needed",
                "warning",
                f"{path}: [board], [network], [pair] or [api] changed; restart the firmware "
                "to apply them",
                now_us(),
            )
        if (new.recorder, new.camera) == (self.cfg.recorder, self.cfg.camera):
            self.cfg = new
            return "unchanged"
        log.info("config reloaded: restarting the recorder with %d cameras", len(new.camera))
        self.recorder.stop()
        self.recorder = Recorder(
            self.data_dir, self.cfg.board.name, new.recorder, new.camera, self.alerts
        )
        self.recorder.start()
        self.cfg = self.cfg.model_copy(update={"recorder": new.recorder, "camera": new.camera})
        return "applied"

    @property
    def role(self) -> str:
        return self.failover.role if self.failover else "single"

    def camera_names(self) -> set[str]:
        return set(self.recorder.status) | set(self.catalog.cameras())

    def status(self) -> dict:
        free, total = self.recorder.disk()
        return {
            "board": self.cfg.board.name,
            "role": self.role,
            "peer": self.failover.peer_status() if self.failover else None,
            "virtual_ip": str(self.cfg.pair.virtual_ip) if self.cfg.pair else None,
            "epoch": self.failover.epoch if self.failover else 0,
            "mirror_lag_seconds": None,
            "version": __version__,
            "hostname": socket.gethostname(),
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "data_dir": str(self.data_dir),
            "disk": {"free_bytes": free, "total_bytes": total},
            "cameras": [
                {
                    "name": st.name,
                    "recording": st.recording,
                    "last_frame_at": iso(st.last_frame_wall_us),
                }
                for st in self.recorder.status.values()
            ],
            "alerts": [a.to_json() for a in self.alerts.active()],
            "failover": self.failover.status() if self.failover else None,
        }

    def cameras_detail(self) -> list[dict]:
        out = []
        for st in self.recorder.status.values():
            out.append(
                {
                    "name": st.name,
                    "url": st.url,
                    "recording": st.recording,
                    "codec": st.codec,
                    "last_frame_at": iso(st.last_frame_wall_us),
                    "ingest_lag_seconds": st.lag_seconds,
                    "error": st.error,
                    "segments_written": st.segments,
                    "bytes_written": st.bytes,
                    "reconnects": st.reconnects,
                    "gaps": st.gaps,
                }
            )
        return out

    async def serve(self, stop: asyncio.Event) -> None:
        """Record, elect and serve until stop is set. On the way out the VIP goes first (a
        planned handover), then the recorder commits its open segments."""
        self.recorder.start()
        runner = None
        failover_stop = asyncio.Event()
        failover = None
        if self.failover is not None:
            failover = asyncio.create_task(self.failover.run(failover_stop))
        try:
            if self.serve_api:
                runner = web.AppRunner(make_app(self), access_log=None)
                await runner.setup()
                site = web.TCPSite(
                    runner,
                    self.cfg.api.listen_address,
                    self.cfg.api.listen_port,
                    reuse_address=True,
                )
                await site.start()
                sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
                self.api_port = sockets[0].getsockname()[1] if sockets else None
                log.info("API listening on %s:%s", self.cfg.api.listen_address, self.api_port)
            await stop.wait()
        finally:
            if failover is not None:
                failover_stop.set()
                await failover
            log.info("stopping: committing open segments")
            await asyncio.get_running_loop().run_in_executor(None, self.recorder.stop)
            if runner is not None:
                await runner.cleanup()
            log.info("stopped")
