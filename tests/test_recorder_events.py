"""Worker events: every kind crosses the worker's pipe intact, and the supervisor turns each
into status, counters and alerts as the recorder always has."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import pickle
import typing

import pytest

from firmware.alert_ids import AlertId, Severity
from firmware.alerts import Alerts
from firmware.config import CameraConfig, RecorderConfig
from firmware.core.actions import ClearAlert, RaiseAlert
from firmware.recorder.events import (
    CameraEvent,
    CameraProgress,
    Progress,
    Reconnecting,
    RetentionDeleted,
    RunEnded,
    SegmentCommitted,
    SessionChanged,
    WorkerEvent,
    WorkerExited,
)
from firmware.recorder.retention import AGE, FREE_SPACE
from firmware.recorder.supervisor import Recorder

EXAMPLES: list[WorkerEvent] = [
    CameraProgress("cam1", 1_700_000_000_000_000, 1_700_000_000_040_000, True, False, 0.0),
    CameraProgress("cam1", None, None, False, True, 13.9),
    Progress(
        (
            CameraProgress("cam1", 5, 6, True, False, 0.0),
            CameraProgress("gone", 1, 2, False, False, 0.0),
        )
    ),
    SessionChanged("cam1", recording=True, error=None, codec="hevc"),
    SessionChanged("cam1", recording=False, error="rtsp://***@cam/x: connection refused"),
    SegmentCommitted("cam1", "cam1.1700000000000.a", 1_234_567, 50),
    RunEnded("cam1", "stall"),
    Reconnecting("cam1", "camera-unreachable"),
    RetentionDeleted(FREE_SPACE, 3, 9_000_000),
    RaiseAlert(AlertId.DISK_FULL, Severity.CRITICAL, "data disk full while writing x"),
    RaiseAlert("camera-cam1", Severity.WARNING, "camera cam1 is not recording"),
    ClearAlert(AlertId.DISK_FULL),
    ClearAlert("camera-cam1"),
    WorkerExited(("cam1", "cam2")),
]


def test_every_event_kind_has_an_example():
    """A kind added to WorkerEvent without an example here would go untested."""
    assert {type(e) for e in EXAMPLES} == set(typing.get_args(WorkerEvent))


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_event_round_trips_through_pickle_and_the_pipe(event):
    """What the supervisor receives equals what the worker sent, enums still enums."""
    assert pickle.loads(pickle.dumps(event)) == event
    receiver, sender = mp.get_context("spawn").Pipe(duplex=False)
    with receiver, sender:
        sender.send(event)
        got = receiver.recv()
    assert got == event and type(got) is type(event)
    if isinstance(event, RaiseAlert) and isinstance(event.id, AlertId):
        assert type(got.id) is AlertId and type(got.severity) is Severity


def test_events_are_frozen():
    """An event is a fact once sent."""
    with pytest.raises(AttributeError):
        EXAMPLES[0].camera = "other"  # type: ignore[misc]


@pytest.fixture
def recorder(tmp_path):
    changes: list[None] = []
    rec = Recorder(
        tmp_path,
        "a",
        RecorderConfig(),
        [CameraConfig(name="cam1", url="rtsp://u:p@cam/x")],
        Alerts(),
        on_change=lambda: changes.append(None),
    )
    rec.changes = changes  # type: ignore[attr-defined]
    yield rec
    rec.catalog.close()


def test_camera_events_update_its_status(recorder):
    """Session, progress, segments, run ends and reconnects land in the camera's status."""
    st = recorder.status["cam1"]
    recorder._apply(SessionChanged("cam1", recording=True, error=None, codec="h264"))
    recorder._apply(CameraProgress("cam1", 10, 25, True, False, 0.0))
    assert (st.recording, st.codec, st.error, st.lag_seconds) == (True, "h264", None, 15e-6)
    recorder._apply(SegmentCommitted("cam1", "s1", 1000, 25))
    recorder._apply(SegmentCommitted("cam1", "s2", 500, 20))
    recorder._apply(RunEnded("cam1", "stall"))
    recorder._apply(Reconnecting("cam1", "stall"))
    recorder._apply(SessionChanged("cam1", recording=False, error="stalled"))
    assert (st.segments, st.bytes, st.frames, st.reconnects) == (2, 1500, 45, 1)
    assert st.gaps == {"stall": 1} and len(recorder.changes) == 3
    assert (st.recording, st.codec, st.error) == (False, "h264", "stalled"), "codec kept"
    recorder._apply(CameraProgress("cam1", 30, 40, False, True, 12.5))
    assert (st.holding, st.ring_seconds, st.recording) == (True, 12.5, False)
    # A worker's progress comes as one message for all its cameras; a camera no longer
    # recorded (its config changed meanwhile) is dropped, the others land.
    recorder._apply(Progress((CameraProgress("gone", 1, 2, True, False, 0.0),
                              CameraProgress("cam1", 50, 70, True, False, 0.0))))  # fmt: skip
    assert (st.last_frame_wall_us, st.recording, st.holding) == (50, True, False)


def test_a_session_up_or_ended_shows_at_once_also_on_a_standby(recorder):
    """A standby's camera is connected from the session's start to its end, without waiting
    for the next progress report: the board core compares both boards' cameras by it."""
    st = recorder.status["cam1"]
    recorder._apply(SessionChanged("cam1", recording=False, error=None, up=True))
    assert st.connected and not st.recording
    recorder._apply(SessionChanged("cam1", recording=False, error="no data for 5 s"))
    assert not st.connected


def test_events_of_an_unknown_camera_are_dropped(recorder):
    """A worker may still speak of a camera the config no longer has."""
    before = repr(recorder.status)
    for event in EXAMPLES:
        if isinstance(event, typing.get_args(CameraEvent)):
            recorder._apply(dataclasses.replace(event, camera="gone"))
    assert repr(recorder.status) == before and recorder.changes == []


def test_session_up_clears_the_cameras_alert(recorder):
    """camera-<name> alerts are cleared by the camera's own session coming up."""
    recorder.alerts.raise_("camera-cam1", Severity.WARNING, "not recording", 0)
    recorder._apply(SessionChanged("cam1", recording=False, error="refused"))
    assert recorder.alerts.is_active("camera-cam1")
    recorder._apply(SessionChanged("cam1", recording=True, error=None, codec="h264"))
    assert not recorder.alerts.is_active("camera-cam1")


def test_alert_events_raise_and_clear(recorder):
    """A worker raises and clears board alerts by AlertId and Severity."""
    recorder._apply(RaiseAlert(AlertId.DISK_FULL, Severity.CRITICAL, "full while writing x"))
    [alert] = recorder.alerts.active()
    assert (alert.id, alert.severity) == ("disk-full", "critical")
    assert alert.text == "full while writing x"
    recorder._apply(ClearAlert(AlertId.DISK_FULL))
    assert recorder.alerts.active() == []


def test_retention_counts_by_reason_and_free_space_raises_disk_full(recorder):
    recorder._apply(RetentionDeleted(AGE, 2, 100))
    assert not recorder.alerts.is_active(AlertId.DISK_FULL)
    recorder._apply(RetentionDeleted(FREE_SPACE, 3, 300))
    recorder._on_delete(FREE_SPACE, 1, 50)  # the supervisor's own retention, same path
    assert recorder.retention_deleted == {AGE: 2, FREE_SPACE: 4}
    assert recorder.retention_bytes == {AGE: 100, FREE_SPACE: 350}
    [alert] = recorder.alerts.active()
    assert (alert.id, alert.severity) == (AlertId.DISK_FULL, Severity.WARNING)
    assert "(4 segments so far)" in alert.text


def test_worker_exit_changes_nothing(recorder):
    """The maintenance thread, not this event, notices a worker is gone."""
    before = repr(recorder.status)
    recorder._apply(WorkerExited(("cam1",)))
    assert repr(recorder.status) == before and recorder.alerts.active() == []
