"""A board image under QEMU, driven over its serial console (the way QA and installers reach it).

The VM emulates a board profile (image/boards/NAME.toml; its [qemu] section): QEMU's binary,
machine, CPU and accelerator, the UEFI firmware, the watchdog; the two NICs sit at the PCI
addresses the profile's [nic] paths name, so the image's udev rules name them lan0 and sync0.
It boots the built disk through UEFI with those NICs, the watchdog and, optionally, an update
stick. By default both NICs are QEMU user-mode networks with
`restrict=on`: the guest reaches nothing but the camera forwarded to a port on the host's
loopback. A pair of VMs instead runs inside a network namespace the test made, each NIC a tap
on a bridge there (the LAN with the camera and a client, the direct sync link).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from firmware.hw.profile import BoardProfile, NicMatch, QemuProfile, load_profile

BOARDS_DIR = Path(__file__).resolve().parent.parent / "image" / "boards"
DEFAULT_BOARD = "qemu-x86_64"
PROMPT = "nvr> "
LAN_NET, LAN_HOST, BOARD_LAN = "192.0.2.0/24", "192.0.2.2", "192.0.2.11"
CAMERA_ADDR = "192.0.2.31"
SYNC_NET, SYNC_HOST = "198.51.100.0/28", "198.51.100.14"


class ConsoleTimeout(AssertionError):
    """Text never appeared on the serial console; carries the console's tail."""


def board_name() -> str:
    """The board under test: $NVR_BOARD (image/test.sh --board sets it), else qemu-x86_64."""
    return os.environ.get("NVR_BOARD") or DEFAULT_BOARD


def emulated_board(name: str | None = None) -> BoardProfile:
    """A board profile by name (image/boards/NAME.toml; default: board_name()) that the lab
    can emulate (it has a [qemu] section)."""
    profile = load_profile(BOARDS_DIR / f"{name or board_name()}.toml")
    qemu_of(profile)
    return profile


def qemu_of(board: BoardProfile) -> QemuProfile:
    if board.qemu is None:
        raise ValueError(f"board {board.board.name} has no [qemu] section: not emulated")
    return board.qemu


def pci_slot(nic: NicMatch) -> int | None:
    """The slot on PCI bus 0 that a NIC's ID_PATH names ("pci-0000:00:02.0" -> 2), None when
    the profile finds the NIC another way (a MAC range, another bus, a glob)."""
    m = re.search(r"pci-0000:00:([0-9a-f]{2})\.0$", nic.path or "")
    return int(m.group(1), 16) if m else None


_kvm: dict[str, bool] = {}


def kvm_works(board: BoardProfile | None = None) -> bool:
    """KVM for the board, when its profile asks for it and /dev/kvm is there and really runs
    the firmware: nested KVM in some cloud VMs opens fine and then fails on the first FPU
    instruction, so UEFI is started for a moment and must still run after a few seconds.
    $NVR_VM_ACCEL=kvm|tcg overrides the probe."""
    qemu = qemu_of(board or emulated_board(DEFAULT_BOARD))
    forced = os.environ.get("NVR_VM_ACCEL")
    if forced:
        return forced == "kvm"
    if qemu.accel != "kvm":
        return False
    if qemu.binary not in _kvm:
        _kvm[qemu.binary] = False
        if os.access("/dev/kvm", os.R_OK | os.W_OK):
            cmd = [qemu.binary, "-accel", "kvm", "-machine", qemu.machine, "-m", "256",
                   "-display", "none", "-monitor", "none", "-serial", "stdio", "-nodefaults",
                   "-drive", f"if=pflash,format=raw,readonly=on,file={qemu.code}",
                   "-drive", f"if=pflash,format=raw,readonly=on,file={qemu.vars}"]  # fmt: skip
            try:
                subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=8)
                # UEFI alone never exits: QEMU stopped on an error
            except subprocess.TimeoutExpired as e:
                _kvm[qemu.binary] = b"KVM internal error" not in (e.stdout or b"")
    return _kvm[qemu.binary]


def make_stick(path: Path, files: list[Path], label: str = "NVR-UPDATE") -> Path:
    """An update stick: an ext4 filesystem with the given files at its top."""
    tree = path.with_suffix(".d")
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    size = sum(f.stat().st_size for f in files)
    for f in files:
        os.link(f, tree / f.name)
    mib = size // 2**20 + 64
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-L", label, "-d", str(tree), str(path), f"{mib}M"],
        check=True,
    )
    shutil.rmtree(tree)
    return path


class Vm:
    """One board: `start()`, then `expect()` / `command()` on the console, `stop()` at the end
    (also when the test fails)."""

    def __init__(
        self,
        disk: Path,
        workdir: Path,
        camera_port: int | None = None,
        stick: Path | None = None,
        memory_mib: int = 1024,
        netns: str | None = None,
        taps: tuple[str, str] | None = None,
        mac_id: int = 0x56,
        disk_size: str | None = None,
        drives: tuple[Path, ...] = (),
        board: BoardProfile | None = None,
    ) -> None:
        self.board = board or emulated_board()
        """The board profile emulated (default: $NVR_BOARD's, else qemu-x86_64)."""
        self.qemu = qemu_of(self.board)
        self.base_disk = disk
        self.workdir = workdir
        self.camera_port = camera_port
        self.stick = stick
        self.memory_mib = memory_mib
        self.netns = netns
        self.taps = taps
        """(LAN tap, sync tap) in netns, made by the caller; None: user-mode networks."""
        self.mac_id = mac_id
        self.disk_size = disk_size
        self.drives = drives
        """Recording drives (raw files), each in a PCIe root port of its own so that it can be
        pulled (`unplug`) and a spare port for a replacement (`plug`); their serials NVR-D1..."""
        self.qmp_path = workdir / "qmp.sock"
        """The board's disk size (qemu-img: "4G"), bigger than the image: flashed onto a
        bigger disk; None: the image's own size."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = ""
        self.matched: list[tuple[float, str]] = []
        """time.monotonic() when each expect() matched, and its pattern: where a boot's console
        time went (the wizard's steps), for the boot benchmark's reports."""
        self._cursor = 0
        self._seen = threading.Condition()
        """Guards output and the cursor; notified on every chunk and at QEMU's exit."""
        self._eof = False
        self._reader: threading.Thread | None = None
        self.log_path = workdir / "console.log"
        self.timed_log_path = workdir / "console-timed.log"
        """The same output, each line after the seconds since power-on at which it began:
        where a boot or a setup spent its time, seen from outside the board."""
        self.powered_on = 0.0
        """time.monotonic() when QEMU was started (after the rig's KVM probe): the board's
        power-on, from which the boot figures count."""
        self.overlay = workdir / "disk.qcow2"
        self.vars = workdir / "UEFI_VARS.fd"
        self.accel = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """A copy-on-write overlay over the built image and fresh UEFI variables."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
             "-b", str(self.base_disk.resolve()), str(self.overlay),
             *([self.disk_size] if self.disk_size else [])],
            check=True,
        )  # fmt: skip
        shutil.copyfile(self.qemu.vars, self.vars)

    def command_line(self) -> list[str]:
        lan = f"user,id=lan,net={LAN_NET},host={LAN_HOST},dhcpstart={BOARD_LAN},restrict=on"
        if self.camera_port is not None:
            # cmd: runs socat for each connection (a chardev would carry one connection, once).
            lan += (
                f",guestfwd=tcp:{CAMERA_ADDR}:8554-cmd:socat STDIO TCP:127.0.0.1:{self.camera_port}"
            )
        sync = f"user,id=sync,net={SYNC_NET},host={SYNC_HOST},restrict=on"
        if self.taps is not None:
            lan, sync = (f"tap,id={n},ifname={t},script=no,downscript=no"
                         for n, t in zip(("lan", "sync"), self.taps, strict=True))  # fmt: skip
        mac = f"52:54:00:4e:{self.mac_id:02x}"
        q = self.qemu
        self.accel = "kvm" if kvm_works(self.board) else "tcg"
        # -cpu host needs KVM; under TCG a board asking for it gets QEMU's "max".
        cpu = q.cpu if self.accel == "kvm" or q.cpu != "host" else "max"
        # The NICs at the slots the profile names (its udev rules find them there); first on
        # the command line, before any device QEMU places itself.
        lan_at, sync_at = (pci_slot(n) for n in (self.board.nic.lan, self.board.nic.sync))
        lan_dev = f"virtio-net-pci,netdev=lan,mac={mac}:01" + (
            f",addr={lan_at:#x}" if lan_at is not None else ""
        )
        sync_dev = f"virtio-net-pci,netdev=sync,mac={mac}:02" + (
            f",addr={sync_at:#x}" if sync_at is not None else ""
        )
        cmd = [
            q.binary, "-accel", self.accel, "-machine", q.machine, "-cpu", cpu, "-smp", "2",
            "-m", str(self.memory_mib), "-display", "none", "-monitor", "none",
            "-serial", "stdio", "-no-user-config", "-nodefaults",
            "-drive", f"if=pflash,format=raw,readonly=on,file={q.code}",
            "-drive", f"if=pflash,format=raw,file={self.vars}",
            "-netdev", lan, "-device", lan_dev,
            "-netdev", sync, "-device", sync_dev,
            # The system disk boots first, whatever else is plugged in (UEFI would try the
            # NICs' network boot before a disk without a boot entry).
            "-drive", f"if=none,id=sysdisk,format=qcow2,file={self.overlay}",
            "-device", "virtio-blk-pci,drive=sysdisk,bootindex=0",
        ]  # fmt: skip
        if q.watchdog:
            cmd += ["-device", q.watchdog, "-action", "watchdog=reset"]
        if self.stick is not None:
            cmd += ["-drive", f"if=virtio,format=raw,readonly=on,file={self.stick}"]
        for i, path in enumerate(self.drives, 1):
            blockdev = f"driver=raw,node-name=d{i},file.driver=file,file.filename={path}"
            blk = f"virtio-blk-pci,drive=d{i},id=vd{i},bus=rp{i},serial=NVR-D{i}"
            port = f"pcie-root-port,id=rp{i},chassis={i},slot={i}"
            cmd += ["-device", port, "-blockdev", blockdev, "-device", blk]
        if self.drives:
            spare = len(self.drives) + 1
            cmd += ["-device", f"pcie-root-port,id=rp{spare},chassis={spare},slot={spare}",
                    "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]  # fmt: skip
        return cmd if self.netns is None else ["ip", "netns", "exec", self.netns, *cmd]

    def start(self) -> None:
        if not self.overlay.exists():
            self.prepare()
        argv = self.command_line()
        self.powered_on = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        line_open = False
        with open(self.log_path, "ab") as log, open(self.timed_log_path, "ab") as timed:
            while chunk := self.proc.stdout.read1(4096):
                log.write(chunk)
                log.flush()
                stamp = b"[%8.3f] " % (time.monotonic() - self.powered_on)
                for part in chunk.replace(b"\r", b"").splitlines(keepends=True):
                    timed.write(part if line_open else stamp + part)
                    line_open = not part.endswith(b"\n")
                timed.flush()
                with self._seen:
                    self.output += chunk.decode("utf-8", "replace").replace("\r", "")
                    self._seen.notify_all()
        with self._seen:
            self._eof = True
            self._seen.notify_all()

    def power_cut(self) -> None:
        """The board loses power: QEMU killed at once (`ip netns exec` has exec'd into it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def qmp(self, command: str, **args: object) -> object:
        """One QMP command on the running VM (its monitor socket); QMPError on a refusal."""
        from qemu.qmp.legacy import QEMUMonitorProtocol

        mon = QEMUMonitorProtocol(str(self.qmp_path))
        mon.connect()
        try:
            return mon.cmd(command, **args)
        finally:
            mon.close()

    def unplug(self, i: int) -> None:
        """Pull recording drive i (1-based) out of the running board (PCIe hot-unplug: the
        guest's pciehp releases it within seconds)."""
        self.qmp("device_del", id=f"vd{i}")

    def plug(self, path: Path, serial: str) -> None:
        """A new drive into the spare PCIe port of the running board."""
        spare = len(self.drives) + 1
        self.qmp("blockdev-add", driver="raw", **{"node-name": "spare"},
                 file={"driver": "file", "filename": str(path)})  # fmt: skip
        self.qmp("device_add", driver="virtio-blk-pci", drive="spare", id="vdspare",
                 bus=f"rp{spare}", serial=serial)  # fmt: skip

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        self.proc = None

    # -- console -----------------------------------------------------------------------------
    def tail(self, chars: int = 3000) -> str:
        with self._seen:
            return self.output[-chars:]

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for the regex in console output after the last match; move past it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._seen:
            while not (m := rx.search(self.output, self._cursor)):
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "QEMU exited" if self._eof else f"nothing within {timeout} s"
                    tail = self.output[-3000:]
                    raise ConsoleTimeout(f"{why} while waiting for {pattern!r}:\n{tail}")
                self._seen.wait(left)
            self._cursor = m.end()
            self.matched.append((time.monotonic(), pattern))
            return m

    def send(self, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def command(self, line: str, timeout: float = 60.0) -> str:
        """Type a console command and return what it printed before the next prompt."""
        self.send(line + "\r")
        echo_at = self._cursor
        m = self.expect(re.escape(PROMPT), timeout)
        with self._seen:
            text = self.output[echo_at : m.start()]
        first, _, rest = text.partition("\n")
        return rest if line.strip() in first else text

    def answer(self, question: str, text: str | None, timeout: float = 120.0) -> None:
        """Answer a wizard question once it is asked: `text` replaces what the line holds
        (^U first), None keeps the offered default."""
        self.expect(re.escape(question) + r":", timeout)
        self.send("\r" if text is None else f"\x15{text}\r")

    def wait_prompt(self, timeout: float) -> None:
        """Wait for the console's banner and then its prompt (after a boot)."""
        self.expect(r"nvr-pair console", timeout)
        self.expect(re.escape(PROMPT), 60)
