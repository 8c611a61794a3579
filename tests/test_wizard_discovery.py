"""The wizard's camera step finding the camera by ONVIF WS-Discovery, typed through a pty and
read off the rendered 80x24 screen, with the console on board a of a rig and the camera
simulator (its WS-Discovery responder on) on the rig's camera host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config import load_config
from hil.camera import CameraSim, StreamSpec
from hil.rig import ADDRESSES, PairRig
from tests.test_wizard import Term, through_network


@pytest.fixture
def rig() -> Iterator[PairRig]:
    with PairRig() as r:
        yield r


def test_camera_found_by_discovery_picked_probed_and_saved(rig: PairRig, tmp_path: Path) -> None:
    cam_addr = ADDRESSES["cam"]["lan"]
    cam = CameraSim([StreamSpec("cam1", width=640, height=360, fps=25, cheap=True)], port=554,
                    bind=cam_addr, netns=rig.ns("cam"), wsd=("Door Cam", "CamSim-1"))  # fmt: skip
    term = Term(tmp_path, netns=rig.ns("a"))
    try:
        cam.start()
        through_network(term)
        term.answer("code, join with one, or skip", "")
        term.answer("add a camera (y/n):", "")
        term.answer("(url/discover):", "\x15discover")
        screen = term.wait("camera number (1-1, empty: by URL):", 20)
        assert f"1. Door Cam  CamSim-1  {cam_addr}" in screen
        term.child.send("1\r")
        screen = term.wait("camera name: Door-Cam")  # prefilled, still editable
        assert "the URL is a guess (port 554)" in screen
        term.child.send("\r")
        term.wait(f"RTSP URL (no credentials): rtsp://{cam_addr}:554/")
        term.child.send("cam1\r")  # the installer completes the path
        term.answer("username (empty: none):", "")
        screen = term.wait("save camera Door-Cam (y/n):", 40)
        assert "camera Door-Cam: h264 640x360 25 fps" in screen and "kbit/s" in screen
        term.child.send("\r")
        term.answer("add a camera (y/n):", "")
        term.answer("apply (y/n):", "")
        term.wait("setup applied")
    finally:
        term.close()
        cam.close()
    cfg = load_config(tmp_path / "data/etc/nvr/nvr.toml")
    assert [(c.name, c.url) for c in cfg.camera] == [("Door-Cam", f"rtsp://{cam_addr}:554/cam1")]


def test_discovery_finding_nothing_falls_back_to_the_url(rig: PairRig, tmp_path: Path) -> None:
    term = Term(tmp_path, netns=rig.ns("a"))
    try:
        through_network(term)
        term.answer("code, join with one, or skip", "")
        term.answer("add a camera (y/n):", "")
        term.answer("(url/discover):", "\x15discover")
        screen = term.wait("camera name:", 20)
        assert "no camera answered: give its RTSP URL" in screen
        term.child.send("door\r")
        screen = term.wait("RTSP URL (no credentials):")
        [line] = [x for x in screen.splitlines() if "RTSP URL (no" in x]
        assert line.rstrip().endswith("RTSP URL (no credentials):")  # nothing prefilled
    finally:
        term.close()
