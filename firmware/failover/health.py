"""Board faults to advert health flags: pure, so the mapping is tested without a board."""

from __future__ import annotations

from collections.abc import Iterable

from firmware.alerts import Alert
from firmware.config import HealthWeights
from firmware.failover.advert import Health

ALERT_FLAGS: dict[str, Health] = {
    "disk-failed": Health.DISK_FAILED,
    "ups-on-battery": Health.UPS_ON_BATTERY,
    "ups-low": Health.UPS_LOW,
    "disk-missing": Health.DISK_FAILED,
    "disk-read-only": Health.DISK_FAILED,
}
"""Alerts that other parts (hal monitors) raise and that make this board the worse choice."""


def board_health(
    alerts: Iterable[Alert],
    cameras_enabled: int,
    cameras_live: int,
    lan_carrier: bool,
    mirror_behind: bool = False,
) -> Health:
    """A camera that is down for both boards costs both the same, so only relative health
    decides; the routine `disk-full` warning (retention at its watermark) is not a fault, a
    write that failed for lack of space (critical) is. A camera is live when it is recorded
    or, on a standby, held in its ring. mirror_behind is sampled straight from the mirror,
    not from its once-a-second alert, so a returning board is flagged before its preempt
    delay can run out."""
    flags = Health.NONE
    for alert in alerts:
        flags |= ALERT_FLAGS.get(alert.id, Health.NONE)
        if alert.id == "disk-full" and alert.severity == "critical":
            flags |= Health.DISK_FULL
    if cameras_live < cameras_enabled:
        flags |= Health.RECORDER_UNHEALTHY
    if not lan_carrier:
        flags |= Health.LAN_DOWN
    if mirror_behind:
        flags |= Health.MIRROR_BEHIND
    return flags


def health_weights(cfg: HealthWeights) -> dict[Health, int]:
    """Config keys are the flag names in lower case."""
    return {flag: getattr(cfg, flag.name.lower()) for flag in Health if flag}


def health_names(flags: Health) -> list[str]:
    return [flag.name.lower().replace("_", "-") for flag in Health if flag and flag & flags]


FAULTS_THAT_BAR_TAKEOVER = (
    Health.DISK_FAILED
    | Health.DISK_FULL
    | Health.UPS_ON_BATTERY
    | Health.UPS_LOW
    | Health.RECORDER_UNHEALTHY
    | Health.LAN_DOWN
)
"""A peer with any of these is no better a place for the pair than a board with a fault;
mirror-behind is not among them: the peer holds the cameras live, only old footage is missing."""


def can_take_over(state: str, priority: int, health: Health) -> bool:
    """A peer a faulty active board may hand over to: listening, willing, healthy."""
    return state == "standby" and priority > 0 and not health & FAULTS_THAT_BAR_TAKEOVER
