"""The firmware runs as its own user (nvr) with CAP_NET_ADMIN and CAP_NET_RAW alone; the console
stays root. Static checks of the image's unit, sysusers and udev files, and the proof that the
firmware records without root: `nvr run` as `nobody`, with no capability at all.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from conftest import NVR, ROOT, catalog, wait_until

from firmware.config import load_config
from firmware.netchange import NetChange
from firmware.setupfiles import Layout
from hil.camera import StreamSpec, free_port

UNITS = ROOT / "rootfs" / "usr" / "lib" / "systemd" / "system"
SYSUSERS = ROOT / "rootfs" / "usr" / "lib" / "sysusers.d" / "nvr.conf"
UDEV = ROOT / "rootfs" / "etc" / "udev" / "rules.d" / "70-nvr.rules"
FACTORY = ROOT / "rootfs" / "etc" / "nvr" / "nvr.toml"
DATA_OWNER = ROOT / "rootfs" / "usr" / "lib" / "nvr" / "data-owner"
BUILD = ROOT / "image" / "build.py"
NET_CAPS = {"CAP_NET_ADMIN", "CAP_NET_RAW"}
"""Netlink address add/remove of the VIP; gratuitous ARP / unsolicited NA and the gateway ping."""
DEBIAN_BASE_GROUPS = {"dialout", "disk", "tty", "video", "audio"}


def unit(path: Path, section: str = "Service") -> dict[str, list[str]]:
    """Key -> every value it is given in one section (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        if current == section:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def words(u: dict[str, list[str]], key: str) -> set[str]:
    return {w for v in u.get(key, []) for w in v.split()}


def sysusers() -> list[list[str]]:
    lines = SYSUSERS.read_text().splitlines()
    return [shlex.split(ln) for ln in lines if ln.strip() and not ln.startswith("#")]


def image_links() -> dict[PurePosixPath, PurePosixPath]:
    """The root's symlinks into /data, as the build makes them (`ln -s TARGET "$root/PATH"`)."""
    found = re.findall(r'ln -s (/\S+) "\$root(/\S+)"', BUILD.read_text())
    assert found, "image/build.py makes no links into /data"
    return {PurePosixPath(link): PurePosixPath(target) for target, link in found}


def on_board(path: Path) -> PurePosixPath:
    """Where a configured path really is on the board, through the root's links."""
    p = PurePosixPath(path)
    for link, target in image_links().items():
        if p == link or link in p.parents:
            return target / p.relative_to(link)
    return p


def under(path: PurePosixPath, dirs: set[str]) -> bool:
    return any(path == PurePosixPath(d) or PurePosixPath(d) in path.parents for d in dirs)


# --- the unit, the account, the devices --------------------------------------------------------


def test_firmware_runs_as_nvr_with_only_the_network_capabilities():
    svc = unit(UNITS / "nvr.service")
    assert svc["User"] == ["nvr"] and svc["Group"] == ["nvr"]
    assert words(svc, "AmbientCapabilities") == NET_CAPS
    assert words(svc, "CapabilityBoundingSet") == NET_CAPS
    assert svc["NoNewPrivileges"] == ["yes"]
    assert svc["ProtectSystem"] == ["strict"]
    assert svc["ProtectHome"] == ["yes"] and svc["PrivateTmp"] == ["yes"]
    assert words(svc, "RestrictAddressFamilies") == {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET",
    }  # fmt: skip
    assert words(svc, "SupplementaryGroups") == {"dialout", "i2c"}


def test_the_console_stays_root():
    con = unit(UNITS / "nvr-console.service")
    assert con.get("User", ["root"]) == ["root"]
    assert "CapabilityBoundingSet" not in con and "NoNewPrivileges" not in con


def test_the_user_and_every_group_it_is_given_exist_in_the_image():
    entries = sysusers()
    assert ["u", "nvr", "-", "NVR pair firmware", "/var/lib/nvr", "/usr/sbin/nologin"] in entries
    made = {e[1] for e in entries if e[0] in ("g", "u")}
    for group in words(unit(UNITS / "nvr.service"), "SupplementaryGroups"):
        assert group in made or group in DEBIAN_BASE_GROUPS, f"no group {group} in the image"
    # /etc is read-only on the board: the build makes the account, and enables the power-off.
    text = BUILD.read_text()
    assert 'chroot "$root" systemd-sysusers' in text
    assert "nvr-poweroff.path" in text


def test_udev_gives_the_firmware_its_devices_and_keeps_the_console_port_root_s():
    rules = [ln for ln in UDEV.read_text().splitlines() if ln and not ln.startswith("#")]
    groups = set(words(unit(UNITS / "nvr.service"), "SupplementaryGroups")) | {"nvr"}

    def rule(match: str) -> str:
        [found] = [r for r in rules if match in r]
        return found

    ups = [r for r in rules if 'SYMLINK+="ups"' in r]
    assert ups and all('GROUP="dialout"' in r and 'MODE="0660"' in r for r in ups)
    assert 'GROUP="i2c"' in rule('SUBSYSTEM=="i2c-dev"') and 'MODE="0660"' in rule("i2c-dev")
    assert 'GROUP="nvr"' in rule('KERNEL=="watchdog*"')
    for r in rules:
        for g in re.findall(r'GROUP="([^"]+)"', r):
            assert g in groups or g == "root", r
    # dialout reaches every ttyS*, the console's port included: not that one.
    assert 'GROUP="root"' in rule('KERNEL=="ttyS0"') and 'MODE="0600"' in rule("ttyS0")


def test_read_write_paths_cover_every_path_the_firmware_writes():
    svc = unit(UNITS / "nvr.service")
    rw = words(svc, "ReadWritePaths")
    cfg = load_config(FACTORY)
    assert cfg.pair is not None
    writes = {
        "data directory": cfg.board.data_dir,
        "API token": cfg.token_file,
        "pair key": cfg.pair.key_file,
        "replicated config": Path("/etc/nvr/nvr.toml"),
        "network change record": NetChange(Layout()).record,
        "network files (rollback)": Layout().network_dir / "10-lan.network",
    }
    for what, path in writes.items():
        assert under(on_board(path), rw), f"{what} {path} ({on_board(path)}) is read-only"
    # The firmware owns them: nvr-data-layout (boot) and nvr.service (each start) chown them.
    owner = DATA_OWNER.read_text()
    chowns = [ln for ln in owner.splitlines() if ln.strip().startswith('chown -R "$user:" ')]
    for d in rw:
        assert any(f'"$data/{PurePosixPath(d).relative_to("/data")}"' in ln for ln in chowns), d
    assert "data=${NVR_DATA:-/data}" in owner and "user=${NVR_USER:-nvr}" in owner
    assert unit(UNITS / "nvr-data-layout.service")["ExecStart"] == ["/usr/lib/nvr/data-layout"]
    assert "\n. /usr/lib/nvr/data-owner\n" in (DATA_OWNER.parent / "data-layout").read_text()
    assert "+/usr/lib/nvr/data-owner" in svc["ExecStartPre"]
    # Power-off on low battery: a file in the firmware's runtime directory, watched by a unit.
    [cmd] = [cfg.ups.shutdown_command]
    target = shlex.split(cmd)[-1]
    assert shlex.split(cmd)[0] == "touch"
    assert under(PurePosixPath(target), {f"/run/{d}" for d in words(svc, "RuntimeDirectory")})
    assert unit(UNITS / "nvr-poweroff.path", "Path")["PathExists"] == [target]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify_and_the_firmware_s_exposure_is_low(tmp_path):
    names = [
        "nvr.service", "nvr-data-layout.service", "nvr-firstboot.service",
        "nvr-console.service", "nvr-poweroff.path", "nvr-poweroff.service",
    ]  # fmt: skip
    for n in names:
        shutil.copy(UNITS / n, tmp_path / n)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    # Only the image's programs are missing here.
    problems = [ln for ln in done.stderr.splitlines() if "is not executable" not in ln]
    assert not problems, done.stderr
    sec = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", "nvr.service"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for nvr.service: ([0-9.]+)", sec.stdout)
    if m is None:
        pytest.skip(f"systemd-analyze security --offline unsupported: {sec.stderr.strip()}")
    assert float(m.group(1)) <= 3.0, sec.stdout  # 9.2 (UNSAFE) as root; docs/IMAGE.md


# --- without root ------------------------------------------------------------------------------

NOBODY = pwd.getpwnam("nobody")


def _closed_to_nobody(path: Path) -> Path | None:
    """The first directory above the checkout that `nobody` cannot enter (a 0700 home or
    temp directory): the firmware's code must be readable for these tests to run it."""
    for d in [path, *path.parents]:
        st = d.stat()
        if not (st.st_mode & 0o001 or (st.st_gid == NOBODY.pw_gid and st.st_mode & 0o010)):
            return d
    return None


_CLOSED = _closed_to_nobody(Path(__file__).resolve().parent.parent)
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or _CLOSED is not None,
    reason="needs root and setpriv"
    if _CLOSED is None
    else f"the checkout is not readable by nobody: {_CLOSED} is closed to others",
)


def as_nobody(argv: list[str]) -> list[str]:
    """No root, no capability, no supplementary group."""
    return [
        "setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--", *argv,
    ]  # fmt: skip


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory nobody owns (pytest's tmp_path is root's, 0700)."""
    top = Path(tempfile.mkdtemp(prefix="nvr-nobody-"))
    top.chmod(0o755)
    os.chown(top, NOBODY.pw_uid, NOBODY.pw_gid)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@needs_root
def test_the_firmware_records_without_root(camera, nobody_dir):
    cam = camera(StreamSpec("cam1", gop=10))
    port = free_port()
    data, cfg = nobody_dir / "data", nobody_dir / "nvr.toml"
    cfg.write_text(
        f'[board]\nname = "a"\ndata_dir = "{data}"\n[recorder]\nsegment_seconds = 1\n'
        f'[api]\nlisten_port = {port}\nlisten_address = "127.0.0.1"\n'
        f'[[camera]]\nname = "cam1"\nurl = "{cam.url("cam1")}"\n'
    )
    log = nobody_dir / "nvr.log"
    env = {**os.environ, "HOME": str(nobody_dir), "PYTHONDONTWRITEBYTECODE": "1"}
    with open(log, "wb") as logf:
        argv = as_nobody([*NVR, "run", "--config", str(cfg)])
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    def recording() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"nvr run exited {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=2) as r:
                return bool(json.load(r)["cameras"][0]["recording"])
        except OSError:
            return False

    try:
        wait_until(recording, 30, "cam1 recording as nobody")
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
        caps = re.search(r"^CapEff:\s+(\S+)$", status, re.M)
        assert uids and set(uids.group(1).split()) == {str(NOBODY.pw_uid)}
        assert caps and int(caps.group(1), 16) == 0
        wait_until(lambda: len(catalog(data)["segments"]) >= 2, 30, "segments on disk")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()
    segs = catalog(data)["segments"]
    assert {s["camera"] for s in segs} == {"cam1"}
    written = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".mp4" for p in written)
    assert all(p.stat().st_uid == NOBODY.pw_uid for p in written)
    assert (data / "api.token").stat().st_mode & 0o077 == 0
    assert "task-failed" not in log.read_text()


@needs_root
def test_smart_without_root_says_why_instead_of_no_smart(nobody_dir):
    disk = nobody_dir / "disk"
    disk.write_bytes(b"")
    disk.chmod(0o600)  # root's, as /dev/sda is root:disk 0660
    code = (
        "from hal.linux.disks import LinuxDisks\n"
        "from hal.errors import Unavailable\n"
        f"try:\n    print(LinuxDisks().smart({str(disk)!r}))\n"
        "except Unavailable as e:\n    print('unavailable:', e)\n"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    argv = as_nobody([sys.executable, "-c", code])
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("unavailable: SMART of"), done.stdout
    assert "cannot open the disk" in done.stdout and "needs root" in done.stdout


@needs_root
def test_the_reachability_probe_without_cap_net_raw_falls_back_or_says_why():
    """The tie-breaker's ping needs CAP_NET_RAW (given to nvr.service); without it, ICMP datagram
    sockets if net.ipv4.ping_group_range allows them, else one clear error, not silence."""
    code = (
        "import asyncio, logging, time\n"
        "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')\n"
        "from firmware.failover.reach import Reachability\n"
        "r = Reachability(['127.0.0.1'], timeout=1.0)\n"
        "print('alive', asyncio.run(r._probe('127.0.0.1')), asyncio.run(r._probe('127.0.0.1')))\n"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    argv = as_nobody([sys.executable, "-c", code])
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "no CAP_NET_RAW for raw ICMP" in done.stderr
    low, high = map(int, Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    if low <= NOBODY.pw_gid <= high:
        assert "alive True True" in done.stdout, done.stdout + done.stderr
    else:
        assert "alive False False" in done.stdout
        assert done.stderr.count("reachability probes cannot be sent") == 1, done.stderr
        assert "ping_group_range" in done.stderr


@needs_root
def test_data_owner_gives_config_and_footage_to_the_firmware_s_user(nobody_dir):
    data = nobody_dir / "data"
    key = data / "etc" / "nvr" / "pair.key"
    seg = data / "nvr" / "segments" / "cam1" / "2026-11-30" / "x.mp4"
    for f in (key, seg, data / "nvr" / "api.token"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
        f.chmod(0o600)
    (data / "etc" / "nvr").chmod(0o755)
    env = {**os.environ, "NVR_USER": "nobody", "NVR_DATA": str(data)}
    subprocess.run(["sh", str(DATA_OWNER)], env=env, check=True, timeout=30)
    mine = [data / "etc" / "nvr", data / "nvr", *(data / "etc" / "nvr").rglob("*")]
    for p in [*mine, *(data / "nvr").rglob("*")]:
        assert p.stat().st_uid == NOBODY.pw_uid, p
    assert (data / "etc" / "nvr").stat().st_mode & 0o777 == 0o700
    assert key.stat().st_mode & 0o777 == 0o600
    assert (data / "etc" / "nvr" / ".network.lock").stat().st_uid == NOBODY.pw_uid
    # Later, root writes again (console, first boot): the next start gives it back.
    (data / "nvr" / "api.token").unlink()
    (data / "nvr" / "api.token").write_text("y")
    (data / "etc" / "nvr" / "nvr.toml").write_text("z")
    subprocess.run(["sh", str(DATA_OWNER)], env=env, check=True, timeout=30)
    assert (data / "nvr" / "api.token").stat().st_uid == NOBODY.pw_uid
    assert (data / "etc" / "nvr" / "nvr.toml").stat().st_uid == NOBODY.pw_uid


@needs_root
def test_a_file_root_writes_into_the_firmware_s_directory_is_the_firmware_s(nobody_dir):
    """The console writes the config, pair key and network change record as root while the
    firmware (nvr) runs: a 0600 root file there would be unreadable to it."""
    from firmware.provision import write_file_atomic

    write_file_atomic(nobody_dir / "nvr.toml", b"x")
    st = (nobody_dir / "nvr.toml").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY.pw_uid, NOBODY.pw_gid, 0o600)
    root_dir = nobody_dir / "root-owned"
    root_dir.mkdir()
    os.chown(root_dir, 0, 0)
    write_file_atomic(root_dir / "f", b"y", 0o644)
    assert (root_dir / "f").stat().st_uid == 0
