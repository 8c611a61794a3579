"""The twin-board rig: real namespaces and links, torn down whatever happens."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, catalog, wait_until

from hil.camera import CameraSim, StreamSpec
from hil.rig import ADDRESSES, PairRig


@pytest.fixture
def rig():
    with PairRig() as r:
        yield r


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_links_reach_what_they_should(rig):
    assert rig.ping("a", ADDRESSES["b"]["lan"])
    assert rig.ping("a", ADDRESSES["b"]["sync"])
    assert rig.ping("cli", ADDRESSES["cam"]["lan"])
    assert rig.ping("b", ADDRESSES["cam"]["lan"])
    # The root namespace has no route into the rig.
    assert subprocess.run(["ping", "-c", "1", "-W", "1", ADDRESSES["a"]["lan"]],
                          capture_output=True).returncode != 0  # fmt: skip


def test_cable_pulls_cut_one_path_only(rig):
    rig.cable("a", "sync", False)
    assert not rig.ping("a", ADDRESSES["b"]["sync"])
    assert rig.ping("a", ADDRESSES["b"]["lan"])
    rig.cable("a", "sync", True)
    rig.cable("b", "lan", False)
    assert not rig.ping("a", ADDRESSES["b"]["lan"])
    assert wait_until(lambda: rig.ping("a", ADDRESSES["b"]["sync"]), 10, "sync after re-plug")
    assert not rig.ping("cli", ADDRESSES["b"]["lan"])


def test_teardown_removes_everything_even_after_a_failure():
    rig = PairRig()
    with pytest.raises(RuntimeError), rig:
        assert rig.ns("a") in namespaces()
        raise RuntimeError("a test failing inside the rig")
    assert rig.prefix not in namespaces()


def test_board_records_the_camera_across_the_rig(rig, tmp_path):
    cam = CameraSim([StreamSpec("cam1", cheap=True)], netns=rig.ns("cam"),
                    bind=ADDRESSES["cam"]["lan"])  # fmt: skip
    cam.start()
    try:
        data = tmp_path / "a"
        rig.start("a", [sys.executable, "-m", "firmware.cli", "record", "--data", str(data),
                        "--segment-seconds", "1", "--camera", f"cam1={cam.url('cam1')}"],
                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_until(lambda: len(catalog(data)["segments"]) >= 2, 40, "segments recorded on a")
        rig.power_cut("a")
        assert not rig.ping("cli", ADDRESSES["a"]["lan"])
    finally:
        cam.stop()
    assert len(catalog(data)["segments"]) >= 2
