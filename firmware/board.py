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
from firmware.recorder.supervisor import Recorder, now_us
from firmware.timefmt import iso

log = logging.getLogger(__name__)


class Board:
    def __init__(self, cfg: Config, serve_api: bool = True) -> None:
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
        if cfg.pair is not None:
            self.alerts.raise_(
                "failover-unavailable",
                "warning",
                "[pair] is configured but this firmware version records as a single board",
                now_us(),
            )

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
        return "single"

    def camera_names(self) -> set[str]:
        return set(self.recorder.status) | set(self.catalog.cameras())

    def status(self) -> dict:
        free, total = self.recorder.disk()
        return {
            "board": self.cfg.board.name,
            "role": self.role,
            "peer": None,
            "virtual_ip": self.cfg.pair.virtual_ip if self.cfg.pair else None,
            "epoch": 0,
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
        """Record and serve until stop is set; always stops the recorder cleanly."""
        self.recorder.start()
        runner = None
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
            log.info("stopping: committing open segments")
            await asyncio.get_running_loop().run_in_executor(None, self.recorder.stop)
            if runner is not None:
                await runner.cleanup()
            log.info("stopped")
