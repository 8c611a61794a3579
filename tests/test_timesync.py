"""The board's time settings as chrony reads them (firmware/timesync.py), and the image's
chrony config reading them from where the firmware writes them."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from firmware import timesync
from firmware.timesync import CONF, SOURCES, TimeSettings

TOP = Path(__file__).resolve().parent.parent


def test_servers_and_the_peer_become_chrony_sources_and_the_peer_may_ask(tmp_path):
    s = TimeSettings(("ntp1.example.net", "192.0.2.123", "2001:db8::7"), "198.51.100.2")
    assert timesync.write(s, tmp_path)
    assert (tmp_path / SOURCES).read_text() == (
        "server ntp1.example.net iburst\nserver 192.0.2.123 iburst\n"
        "server 2001:db8::7 iburst\nserver 198.51.100.2 iburst\n"
    )
    assert (tmp_path / CONF).read_text() == "allow 198.51.100.2\n"
    assert (tmp_path / SOURCES).stat().st_mode & 0o777 == 0o644, "chrony's own user reads it"
    assert not timesync.write(s, tmp_path), "nothing changed: chrony is left alone"


def test_no_servers_and_no_peer_leave_the_images_default_pool(tmp_path):
    timesync.write(TimeSettings(("ntp.example",), "198.51.100.2"), tmp_path)
    assert timesync.write(TimeSettings((), None), tmp_path)
    assert not (tmp_path / SOURCES).exists() and not (tmp_path / CONF).exists()


@pytest.mark.parametrize(
    "bad",
    ["ntp.example iburst\nallow all", "ntp example", "", "-x", "a" * 254, "ntp.example;x",
     "../etc", "ntp\x00.example"],
)  # fmt: skip
def test_a_server_that_could_add_a_directive_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="NTP server"):
        TimeSettings((bad,), None)
    assert not (tmp_path / "sources.d").exists()


def test_a_bad_peer_address_or_too_many_servers_are_refused():
    with pytest.raises(ValueError):
        TimeSettings((), "peer.example")
    with pytest.raises(ValueError, match="at most"):
        TimeSettings(tuple(f"ntp{i}.example" for i in range(9)), None)


def test_apply_has_chrony_take_the_files_in_only_when_something_changed(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(timesync.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    s = TimeSettings(("ntp.example",), None)
    timesync.apply(s, tmp_path)
    timesync.apply(s, tmp_path)
    assert calls == [["systemctl", "try-reload-or-restart", "chrony.service"]]


def test_the_images_chrony_reads_where_the_firmware_writes():
    conf = (TOP / "rootfs/etc/chrony/chrony.conf").read_text()
    directives = {ln.split()[0]: ln.split()[1:] for ln in conf.splitlines()
                  if ln.strip() and not ln.startswith("#")}  # fmt: skip
    assert directives["sourcedir"] == [str(timesync.CHRONY_DIR / SOURCES.parent)]
    assert directives["confdir"] == [str(timesync.CHRONY_DIR / CONF.parent)]
    assert directives["driftfile"][0].startswith("/data/"), "the root is read-only"
    assert directives["local"] == ["stratum", "10", "orphan"]
    made = layout_made()
    for d in (SOURCES.parent, CONF.parent):
        assert str(timesync.CHRONY_DIR / d) in made
    assert str(Path(directives["driftfile"][0]).parent) in made
    layout = (TOP / "rootfs/usr/lib/nvr/data-layout").read_text()
    assert re.search(r'chown _chrony:_chrony "\$data/chrony"', layout)
    # Debian's chrony.service has ProtectSystem=strict: the drift file's directory must be
    # given back to it, or chronyd cannot save the drift it learnt.
    dropin = (TOP / "rootfs/usr/lib/systemd/system/chrony.service.d/nvr.conf").read_text()
    writable = [p for ln in dropin.splitlines() if ln.startswith("ReadWritePaths=")
                for p in ln.split("=", 1)[1].split()]  # fmt: skip
    assert str(Path(directives["driftfile"][0]).parent) in writable


def layout_made() -> set[str]:
    """The directories rootfs/usr/lib/nvr/data-layout makes on /data (its one mkdir -p)."""
    unit = (TOP / "rootfs/usr/lib/systemd/system/nvr-data-layout.service").read_text()
    assert "\nExecStart=/usr/lib/nvr/data-layout\n" in unit
    script = (TOP / "rootfs/usr/lib/nvr/data-layout").read_text().replace("\\\n", " ")
    [mkdir] = [ln.split()[2:] for ln in script.splitlines() if ln.startswith("mkdir -p ")]
    return {shlex.split(d.replace("$data", "/data"))[0] for d in mkdir}


def test_chronys_reload_takes_in_the_servers_and_the_peer_without_a_restart(tmp_path):
    """The drop-in's ExecReload (what `systemctl try-reload-or-restart` runs on a running
    chronyd) asks chronyd for the new sources and allows the peer; chronyc itself is faked
    here (the image test has the real one)."""
    dropin = (TOP / "rootfs/usr/lib/systemd/system/chrony.service.d/nvr.conf").read_text()
    assert "\nExecReload=/usr/lib/nvr/chrony-reload\n" in dropin
    timesync.write(TimeSettings(("ntp.example",), "198.51.100.2"), tmp_path / "chrony")
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "chronyc"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\necho "200 OK"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}",
           "NVR_CHRONY_DIR": str(tmp_path / "chrony")}  # fmt: skip
    script = TOP / "rootfs/usr/lib/nvr/chrony-reload"
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == ["reload sources", "allow 198.51.100.2"]
    calls.unlink()
    timesync.write(TimeSettings(("ntp.example",), None), tmp_path / "chrony")  # unpaired
    subprocess.run([str(script)], env=env, check=True, timeout=30)
    assert calls.read_text().splitlines() == ["reload sources"]
    fake.write_text("#!/bin/sh\necho '506 Cannot talk to daemon'\nexit 1\n")
    failed = subprocess.run([str(script)], env=env, capture_output=True, timeout=30)
    assert failed.returncode != 0, "a reload chronyd did not take is a failed reload"
