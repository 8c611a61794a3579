"""At first boot the firmware's start waits for the console's wizard (rootfs/usr/lib/nvr/
console-first, nvr.service's first ExecStartPre), bounded; at every later boot it does not."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import ROOT, wait_until

SCRIPT = ROOT / "rootfs" / "usr" / "lib" / "nvr" / "console-first"


def _start(tmp_path: Path, wait_s: int) -> subprocess.Popen:
    env = {**os.environ, "NVR_DATA": str(tmp_path / "data"),
           "NVR_SHOWN": str(tmp_path / "shown"), "NVR_WAIT_S": str(wait_s)}  # fmt: skip
    return subprocess.Popen(["sh", str(SCRIPT)], env=env)


def test_a_set_up_board_starts_its_firmware_at_once(tmp_path):
    (tmp_path / "data" / "etc" / "nvr").mkdir(parents=True)
    (tmp_path / "data" / "etc" / "nvr" / "setup-done").touch()
    proc = _start(tmp_path, 60)
    wait_until(lambda: proc.poll() is not None, 10, "the script's end")
    assert proc.returncode == 0


def test_at_first_boot_the_firmware_waits_for_the_console_and_no_longer(tmp_path):
    proc = _start(tmp_path, 60)
    try:
        (tmp_path / "shown").touch()  # the console asks its first question
        wait_until(lambda: proc.poll() is not None, 10, "the end once the console is shown")
        assert proc.returncode == 0
    finally:
        proc.kill()
        proc.wait()
    (tmp_path / "shown").unlink()
    started = time.monotonic()
    proc = _start(tmp_path, 1)  # no console ever: the bound
    assert proc.wait(30) == 0
    assert time.monotonic() - started >= 1.0


def test_the_firmware_unit_waits_first_and_the_script_is_executable():
    unit = (ROOT / "rootfs/usr/lib/systemd/system/nvr.service").read_text()
    pre = [ln for ln in unit.splitlines() if ln.startswith("ExecStartPre=")]
    assert pre[0] == "ExecStartPre=/usr/lib/nvr/console-first"  # as nvr, before data-owner
    assert os.access(SCRIPT, os.X_OK)
