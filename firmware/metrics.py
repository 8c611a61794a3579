"""Prometheus metrics, collected on scrape from the board's status snapshot (no second books)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from firmware.failover.advert import AdvertError
from firmware.roles import Role
from firmware.status import BoardStatus, MirrorView, PairView


class BoardCollector(Collector):
    def __init__(self, snapshot: Callable[[], BoardStatus]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator:
        st = self.snapshot()
        cams = st.cameras

        def per_camera(cls, name: str, doc: str, value) -> object:
            fam = cls(name, doc, labels=["camera"])
            for st in cams:
                v = value(st)
                if v is not None:
                    fam.add_metric([st.name], v)
            return fam

        yield per_camera(
            CounterMetricFamily, "nvr_segments_written", "Segments committed", lambda s: s.segments
        )
        yield per_camera(
            CounterMetricFamily, "nvr_bytes_written", "Bytes committed", lambda s: s.bytes
        )
        yield per_camera(
            CounterMetricFamily, "nvr_frames_written", "Video frames committed", lambda s: s.frames
        )
        yield per_camera(
            CounterMetricFamily,
            "nvr_reconnects",
            "Camera sessions restarted",
            lambda s: s.reconnects,
        )
        yield per_camera(
            GaugeMetricFamily,
            "nvr_camera_recording",
            "1 while recording",
            lambda s: int(s.recording),
        )
        yield per_camera(
            GaugeMetricFamily,
            "nvr_ingest_lag_seconds",
            "Arrival time of the newest frame minus the time it stands for",
            lambda s: s.ingest_lag_seconds,
        )
        gaps = CounterMetricFamily(
            "nvr_gaps", "Run ends (gaps) by reason", labels=["camera", "reason"]
        )
        for cam in cams:
            for reason, n in cam.gaps.items():
                gaps.add_metric([cam.name, reason], n)
        yield gaps
        yield GaugeMetricFamily(
            "nvr_disk_free_bytes", "Free bytes on the data disk", value=st.disk_free_bytes
        )
        yield GaugeMetricFamily(
            "nvr_disk_total_bytes", "Size of the data disk", value=st.disk_total_bytes
        )
        deleted = CounterMetricFamily(
            "nvr_retention_deleted_segments", "Segments deleted by retention", labels=["reason"]
        )
        for why, n in st.retention_deleted.items():
            deleted.add_metric([why], n)
        yield deleted
        yield CounterMetricFamily(
            "nvr_worker_restarts", "Recorder worker processes restarted", value=st.worker_restarts
        )
        alerts = GaugeMetricFamily(
            "nvr_alert_active", "1 per active alert", labels=["id", "severity"]
        )
        for a in st.alerts:
            alerts.add_metric([a.id, a.severity], 1)
        yield alerts
        raised = CounterMetricFamily("nvr_alerts_raised", "Alerts raised", labels=["id"])
        for aid, n in st.alerts_raised.items():
            raised.add_metric([aid], n)
        yield raised
        if st.pair is not None:
            yield from self._failover(st.pair)
        if st.mirror is not None:
            yield from self._mirror(st.mirror)
        if st.archive is not None:
            yield from self._archive(st.archive)

    def _archive(self, ar: Mapping) -> Iterator:
        if ar.get("lag_seconds") is not None:
            yield GaugeMetricFamily(
                "nvr_archive_lag_seconds",
                "Seconds since the oldest segment not yet archived started",
                value=ar["lag_seconds"],
            )
        yield CounterMetricFamily(
            "nvr_archive_uploaded_bytes", "Bytes uploaded to the archive", value=ar["bytes"]
        )
        yield CounterMetricFamily(
            "nvr_archive_uploaded_segments", "Segments uploaded to the archive",
            value=ar["uploaded"],
        )  # fmt: skip
        yield CounterMetricFamily(
            "nvr_archive_failures", "Failed archive uploads", value=ar["failures"]
        )

    def _mirror(self, m: MirrorView) -> Iterator:
        if m.lag_seconds is not None:
            yield GaugeMetricFamily(
                "nvr_mirror_lag_seconds",
                "Seconds of footage the standby is behind the active board",
                value=m.lag_seconds,
            )
        yield GaugeMetricFamily(
            "nvr_mirror_behind_bytes", "Bytes of the peer's footage still to fetch",
            value=m.behind_bytes,
        )  # fmt: skip
        yield CounterMetricFamily(
            "nvr_mirror_fetched_segments", "Segments fetched from the peer",
            value=m.fetched_segments,
        )  # fmt: skip
        yield CounterMetricFamily(
            "nvr_mirror_fetched_bytes", "Bytes fetched from the peer", value=m.fetched_bytes
        )
        errors = CounterMetricFamily(
            "nvr_mirror_errors", "Mirror failures, by reason", labels=["reason"]
        )
        for reason, n in m.errors.items():
            errors.add_metric([reason], n)
        yield errors
        yield CounterMetricFamily(
            "nvr_mirror_spare_removed", "Spare copies removed after a takeover",
            value=m.spares_removed,
        )  # fmt: skip
        if m.clock_offset_seconds is not None:
            yield GaugeMetricFamily(
                "nvr_pair_clock_offset_seconds", "The peer's wall clock minus this board's",
                value=m.clock_offset_seconds,
            )  # fmt: skip
            yield GaugeMetricFamily(
                "nvr_pair_clock_uncertainty_seconds", "How far the offset may be off, either way",
                value=m.clock_uncertainty_seconds or 0.0,
            )  # fmt: skip

    def _failover(self, fo: PairView) -> Iterator:
        role = GaugeMetricFamily(
            "nvr_pair_role", "1 for this board's current role", labels=["role"]
        )
        for r in (Role.INIT, Role.STANDBY, Role.ACTIVE):
            role.add_metric([r.value], int(fo.role == r))
        yield role
        yield GaugeMetricFamily("nvr_pair_epoch", "The pair's current term", value=fo.epoch)
        yield GaugeMetricFamily(
            "nvr_pair_effective_priority",
            "Configured priority minus health weights",
            value=fo.effective_priority,
        )
        yield GaugeMetricFamily(
            "nvr_pair_vip_held",
            "1 while the floating IP is on this board",
            value=int(fo.vip_held),
        )
        changes = CounterMetricFamily(
            "nvr_pair_role_changes", "Role changes, by the role entered", labels=["role"]
        )
        # Every series from zero, so a rule's increase() sees the first change too.
        for r in (Role.INIT, Role.STANDBY, Role.ACTIVE):
            changes.add_metric([r.value], fo.role_changes.get(r.value, 0))
        yield changes
        tx = CounterMetricFamily("nvr_pair_adverts_sent", "Adverts sent", labels=["path"])
        rx = CounterMetricFamily("nvr_pair_adverts_received", "Datagrams received", labels=["path"])
        err = CounterMetricFamily("nvr_pair_advert_send_errors", "Send errors", labels=["path"])
        for p in fo.paths:
            tx.add_metric([p.name], p.sent)
            rx.add_metric([p.name], p.received)
            err.add_metric([p.name], p.send_errors)
        yield from (tx, rx, err)
        dropped = CounterMetricFamily(
            "nvr_pair_adverts_dropped", "Adverts ignored, by reason", labels=["reason"]
        )
        counts = {reason: 0 for reason in AdvertError.REASONS} | dict(fo.dropped)
        for reason, n in counts.items():
            dropped.add_metric([reason], n)
        yield dropped
        if fo.peer_heard_seconds is not None:
            yield GaugeMetricFamily(
                "nvr_pair_peer_heard_seconds",
                "Seconds since the peer's last advert",
                value=fo.peer_heard_seconds,
            )


def registry_for(snapshot: Callable[[], BoardStatus]) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(BoardCollector(snapshot))
    return reg
