"""A board image under QEMU, driven over its serial console (the way QA and installers reach it).

The VM boots the built disk through UEFI (OVMF) with two NICs, the i6300esb watchdog and,
optionally, an update stick. By default both NICs are QEMU user-mode networks with
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

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
PROMPT = "nvr> "
LAN_NET, LAN_HOST, BOARD_LAN = "192.0.2.0/24", "192.0.2.2", "192.0.2.11"
CAMERA_ADDR = "192.0.2.31"
SYNC_NET, SYNC_HOST = "198.51.100.0/28", "198.51.100.14"


class ConsoleTimeout(AssertionError):
    """Text never appeared on the serial console; carries the console's tail."""


_kvm: bool | None = None


def kvm_works() -> bool:
    """KVM, when /dev/kvm is there and really runs the firmware: nested KVM in some cloud VMs
    opens fine and then fails on the first FPU instruction, so UEFI is started for a moment
    and must still run after a few seconds. $NVR_VM_ACCEL=kvm|tcg overrides the probe."""
    global _kvm
    forced = os.environ.get("NVR_VM_ACCEL")
    if forced:
        return forced == "kvm"
    if _kvm is None:
        _kvm = False
        if os.access("/dev/kvm", os.R_OK | os.W_OK):
            cmd = ["qemu-system-x86_64", "-accel", "kvm", "-machine", "q35", "-m", "256",
                   "-display", "none", "-monitor", "none", "-serial", "stdio", "-nodefaults",
                   "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                   "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_VARS}"]  # fmt: skip
            try:
                subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=8)
                _kvm = False  # UEFI alone never exits: QEMU stopped on an error
            except subprocess.TimeoutExpired as e:
                _kvm = b"KVM internal error" not in (e.stdout or b"")
    return _kvm


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
    ) -> None:
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
        self._cursor = 0
        self._seen = threading.Condition()
        """Guards output and the cursor; notified on every chunk and at QEMU's exit."""
        self._eof = False
        self._reader: threading.Thread | None = None
        self.log_path = workdir / "console.log"
        self.overlay = workdir / "disk.qcow2"
        self.vars = workdir / "OVMF_VARS.fd"
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
        shutil.copyfile(OVMF_VARS, self.vars)

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
        self.accel = "kvm" if kvm_works() else "tcg"
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else ["-accel", "tcg"]
        cmd = [
            "qemu-system-x86_64", *accel, "-machine", "q35", "-smp", "2",
            "-m", str(self.memory_mib), "-display", "none", "-monitor", "none",
            "-serial", "stdio", "-no-user-config", "-nodefaults",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={self.vars}",
            "-drive", f"if=virtio,format=qcow2,file={self.overlay}",
            "-netdev", lan, "-device", f"virtio-net-pci,netdev=lan,mac={mac}:01",
            "-netdev", sync, "-device", f"virtio-net-pci,netdev=sync,mac={mac}:02",
            "-device", "i6300esb", "-action", "watchdog=reset",
        ]  # fmt: skip
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
        self.proc = subprocess.Popen(
            self.command_line(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "ab") as log:
            while chunk := self.proc.stdout.read1(4096):
                log.write(chunk)
                log.flush()
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
