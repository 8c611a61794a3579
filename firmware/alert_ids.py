"""Every alert id the board raises, in one place: the status contract, the metrics' `id` label,
the audit log and the shipped Prometheus rules all name alerts by these values."""

from __future__ import annotations

from enum import StrEnum


class AlertId(StrEnum):
    # config and firmware
    CONFIG_INVALID = "config-invalid"
    RESTART_NEEDED = "restart-needed"
    RECOVERY = "recovery"
    WATCHDOG_NOT_ARMED = "watchdog-not-armed"
    PANEL_UNAVAILABLE = "panel-unavailable"
    BOARD_PROFILE_DAMAGED = "board-profile-damaged"
    """The image's board profile does not read: the root is damaged (the build checked it)."""
    LED_UNAVAILABLE = "led-unavailable"
    """An LED the board profile names is missing or cannot be written."""
    RECORDER_STALLED = "recorder-stalled"
    TASK_FAILED = "task-failed"
    FD_EXHAUSTED = "fd-exhausted"
    """The firmware ran out of file descriptors (EMFILE/ENFILE): not a disk fault."""
    # data disk
    DISK_FULL = "disk-full"
    DISK_FULL_NOT_FOOTAGE = "disk-full-not-footage"
    """The disk is full of data that is not footage: retention cannot make room."""
    CATALOG_REBUILT = "catalog-rebuilt"
    DISK_WRITE_FAILED = "disk-write-failed"
    """A write to the data disk failed for another reason than space (an I/O error)."""
    DISK_MISSING = "disk-missing"
    DISK_READ_ONLY = "disk-read-only"
    RAID_DEGRADED = "raid-degraded"
    RETENTION_SHORT = "retention-short"
    """The storage holds fewer days of footage than retention_days at the measured rates."""
    SMART_FAILING = "smart-failing"
    # power
    UPS_ON_BATTERY = "ups-on-battery"
    UPS_LOW = "ups-low"
    UPS_REPLACE_BATTERY = "ups-replace-battery"
    UPS_UNREACHABLE = "ups-unreachable"
    # network and pair
    NIC_DOWN_LAN = "nic-down-lan"
    NIC_DOWN_SYNC = "nic-down-sync"
    ADVERT_PATH_LAN = "advert-path-lan"
    ADVERT_PATH_SYNC = "advert-path-sync"
    ADVERT_PATH_SERIAL = "advert-path-serial"
    PEER_KEY_MISMATCH = "peer-key-mismatch"
    NETWORK_CHANGE_PENDING = "network-change-pending"
    """A network change is applied and rolls back by itself unless confirmed (netconfirm)."""
    NETWORK_ROLLED_BACK = "network-rolled-back"
    PEER_VERSION_MISMATCH = "peer-version-mismatch"
    DUAL_ACTIVE = "dual-active"
    HEARTBEAT_SILENT_LAN = "heartbeat-silent-lan"
    HEARTBEAT_SILENT_SYNC = "heartbeat-silent-sync"
    NO_STANDBY = "no-standby"
    FAULT_HANDOVER = "fault-handover"
    UNPAIRED = "unpaired"
    """[pair] is configured but the board holds no pair key: it records alone until paired."""
    # mirror
    MIRROR_LAG = "mirror-lag"
    MIRROR_CATCHING_UP = "mirror-catching-up"
    MIRROR_PEER_REFUSED = "mirror-peer-refused"
    """The peer sent rows, files or answers this board refused (unsigned, malformed, too long)."""
    PAIR_CLOCK_SKEW = "pair-clock-skew"
    """The two boards' wall clocks disagree beyond [pair] clock_skew_alert_seconds."""
    # pair-wide settings (firmware/pairsettings.py)
    PAIR_SETTINGS_CONFLICT = "pair-settings-conflict"
    """Both boards changed the pair-wide settings at once: one change was discarded."""
    PAIR_SETTINGS_REFUSED = "pair-settings-refused"
    """The peer's pair-wide settings were refused (invalid here, malformed, older, oversized)."""
    # evidence (firmware/evidence/)
    EVIDENCE_LOG_DAMAGED = "evidence-log-damaged"
    """This board's evidence log contradicts itself or its audit.log was cut."""
    EVIDENCE_LOG_BEHIND = "evidence-log-behind"
    """The log cannot be written (a full disk): it takes in the backlog when it can."""
    EVIDENCE_PEER_LOG_CHANGED = "evidence-peer-log-changed"
    """The peer's log no longer contains what this board cosigned: its history was changed."""
    EVIDENCE_LOG_REFUSED = "evidence-log-refused"
    """The peer refuses to cosign this board's log: it holds a history this log contradicts."""
    # archive tier (firmware/archive/)
    ARCHIVE_BEHIND = "archive-behind"
    """The oldest segment not yet archived started more than [archive] lag_alert_minutes ago."""
    ARCHIVE_UNREACHABLE = "archive-unreachable"
    """Uploads to the archive store failed several times in a row (the error's class only)."""
    ARCHIVE_CREDENTIALS = "archive-credentials"
    """The archive's credentials file is missing, unsafe (mode, owner) or malformed."""
    ARCHIVE_DELETED_UNARCHIVED = "archive-deleted-unarchived"
    """The disk ran out with the archive behind: footage went before the archive had it."""
    ARCHIVE_CORRUPT = "archive-corrupt"
    """An archived object no longer matches its SHA-256 (read back or `nvr verify --archive`)."""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
