"""Where a board's boot goes, read inside the booted VM through the console's root shell: the
time before the kernel (UEFI, GRUB, loading the kernel and initramfs), the kernel, the
initramfs and systemd's userspace (`systemd-analyze`), the firmware's own start (nvr.service
started to READY=1, from systemd), and the texts of `systemd-analyze`, its critical chain to
the firmware and `blame`. The image test records these figures (no timed assertions)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from hil.vm import PROMPT, Vm
from hil.wizardrun import ADMIN_PW

REPORT = (
    "export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat COLUMNS=160; "
    "echo ==manager; systemctl show -p KernelTimestampMonotonic -p InitRDTimestampMonotonic"
    " -p UserspaceTimestampMonotonic -p FinishTimestampMonotonic; "
    "echo ==init; journalctl -b -k -o short-monotonic --no-pager | grep -m1 'Run /init as init'; "
    "for u in nvr.service nvr-console.service nvr-firstboot.service; do echo ==unit $u"
    " $(systemctl show -P ExecMainStartTimestampMonotonic $u)"
    " $(systemctl show -P ActiveEnterTimestampMonotonic $u); done; "
    "for t in local-fs.target basic.target network-online.target; do echo ==target $t"
    " $(systemctl show -P ActiveEnterTimestampMonotonic $t); done; "
    "echo ==journal; journalctl -b -o short-monotonic --no-pager -u nvr.service"
    " | grep -E '(Starting|Started|Stopping|Stopped) nvr|: recording,|restarting the firmware in'; "
    "echo ==analyze; systemd-analyze; "
    "echo ==chain; systemd-analyze critical-chain nvr.service; "
    "echo ==console-chain; systemd-analyze critical-chain nvr-console.service; "
    "echo ==blame; systemd-analyze blame | head -30"
)
"""What the root shell runs; each part after a `==name` line."""


@dataclass
class BootReport:
    """The boot of one board as measured; `figures` go into test-figures.json."""

    figures: dict[str, float] = field(default_factory=dict)
    text: str = ""
    """The shell's output: systemd-analyze, the critical chains, blame, the journal lines."""


def _seconds(us: str) -> float | None:
    """A systemd monotonic timestamp (µs) in seconds; None for 0 (never happened)."""
    return int(us) / 1e6 if us.strip().isdigit() and int(us) else None


def _section(text: str, name: str) -> str:
    m = re.search(rf"^==({re.escape(name)})\b(.*?)(?=^==|\Z)", text, re.M | re.S)
    return m.group(0) if m else ""


def parse_report(text: str, loader_s: float | None) -> dict[str, float]:
    """The figures in the shell's output (see REPORT); loader_s from guest_uptime_offset.

    kernel_s ends where the kernel runs the initramfs' /init, initrd_s there to systemd (the
    initramfs of initramfs-tools does not run systemd, so systemd-analyze counts both as
    "kernel"), userspace_s is systemd's until the boot's jobs are done. firmware_start_s is
    the running nvr.service's start to READY=1 (the start the console's wizard makes, on the
    path to recording); firmware_boot_start_s the boot's own first start, from the journal;
    firmware_stop_s how long the first stop took (a restart by systemd: also on that path);
    firmware_restart_to_recording_s the setup's restart in the firmware's process to the camera
    recording."""
    figures: dict[str, float] = {}
    if loader_s is not None:
        figures["loader_s"] = loader_s
    manager = dict(re.findall(r"^(\w+)=(\d+)\s*$", _section(text, "manager"), re.M))
    userspace = _seconds(manager.get("UserspaceTimestampMonotonic", "0"))
    finish = _seconds(manager.get("FinishTimestampMonotonic", "0"))
    initrd = _seconds(manager.get("InitRDTimestampMonotonic", "0"))
    init = re.search(r"^\[\s*([\d.]+)\].*Run /init as init", _section(text, "init"), re.M)
    kernel_end = initrd or (float(init.group(1)) if init else None)
    if kernel_end is not None:
        figures["kernel_s"] = kernel_end
        if userspace is not None:
            figures["initrd_s"] = userspace - kernel_end
    elif userspace is not None:
        figures["kernel_s"] = userspace
    if userspace is not None and finish is not None:
        figures["userspace_s"] = finish - userspace
        figures["boot_finished_at_s"] = finish
    for unit, began, ready in re.findall(r"^==unit (\S+) (\d+) (\d+)\s*$", text, re.M):
        name = unit.removesuffix(".service").replace("-", "_")
        b, r = _seconds(began), _seconds(ready)
        if b is not None:
            figures[f"{name}_started_at_s"] = b
        if b is not None and r is not None and name == "nvr":
            figures["firmware_start_s"] = r - b
    for target, reached in re.findall(r"^==target (\S+)\.target (\d+)\s*$", text, re.M):
        at = _seconds(reached)
        if at is not None:  # the gates of the firmware's start: when each was reached
            figures[f"{target.replace('-', '_')}_target_at_s"] = at
    journal = _section(text, "journal")
    starting = re.search(r"^\[\s*([\d.]+)\] .*Starting nvr\.service", journal, re.M)
    started = re.search(r"^\[\s*([\d.]+)\] .*Started nvr\.service", journal, re.M)
    if starting and started:
        figures["firmware_boot_start_s"] = float(started.group(1)) - float(starting.group(1))
        figures["firmware_boot_ready_at_s"] = float(started.group(1))
    stopping = re.search(r"^\[\s*([\d.]+)\] .*Stopping nvr\.service", journal, re.M)
    stopped = re.search(r"^\[\s*([\d.]+)\] .*Stopped nvr\.service", journal, re.M)
    if stopping and stopped:  # the restart that makes the wizard's answers live
        figures["firmware_stop_s"] = float(stopped.group(1)) - float(stopping.group(1))
    recording = re.findall(r"^\[\s*([\d.]+)\] .*: recording,", journal, re.M)
    if recording:
        figures["firmware_recording_at_s"] = float(recording[-1])
    restart = re.search(r"^\[\s*([\d.]+)\] .*restarting the firmware in its process", journal,
                        re.M)  # fmt: skip
    if restart and recording and float(recording[-1]) > float(restart.group(1)):
        figures["firmware_restart_to_recording_s"] = float(recording[-1]) - float(restart.group(1))

    return {k: round(v, 2) for k, v in figures.items()}


def boot_report(vm: Vm, powered_on: float, timeout: float = 120) -> BootReport:
    """The boot's figures and texts, read in the console's root shell (the console set up, at
    its prompt). `powered_on` is time.monotonic() when QEMU was started: the guest's uptime
    read against it gives the time before the kernel."""
    vm.send("shell\r")
    vm.answer("admin password", ADMIN_PW)
    vm.expect(r"root shell: exit.*\n", 30)
    best: tuple[float, float] | None = None
    for _ in range(3):  # the quickest answer bounds the error best
        sent = time.monotonic()
        vm.send("cut -d' ' -f1 /proc/uptime | sed 's/^/==up /'\r")
        m = vm.expect(r"==up ([\d.]+)\s*\n", 30)  # after a terminal escape, maybe
        got = time.monotonic()
        if best is None or got - sent < best[1]:
            best = ((sent + got) / 2 - powered_on - float(m.group(1)), got - sent)
    vm.send(f"{REPORT}; echo ==END$((6 * 7))==\r")  # the echoed line does not match
    begin = vm.expect(r"==manager\s*\n", 30).start()
    end = vm.expect(r"==END42==", timeout)
    text = end.string[begin : end.start()]
    vm.send("exit\r")
    vm.expect(r"root shell ended", 30)
    vm.expect(re.escape(PROMPT), 30)
    loader = None if best is None else round(best[0], 2)
    return BootReport(parse_report(text, loader), text)
