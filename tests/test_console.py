"""`nvr console`: the installer console on the serial line, fed line by line as a terminal
program on the other end would, with systemctl, rauc and mount faked and /proc, /dev and /run
laid out under tmp_path."""

from __future__ import annotations

import io
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import NVR, ROOT

from firmware.console import COMMANDS, PROMPT, Console, root_mode, watchdog_holders
from firmware.consolemenu import menu_lines
from firmware.provision import NOT_FOUND, Result

RELEASE = 'NAME="nvr-pair Debian 12"\nVERSION="0.1.0"\nGIT_REVISION=\'3f2c1ab\'\nBUILD_DATE="2024-05-01"\n'  # noqa: E501


class FakeRunner:
    """Answers by program (and first argument); records every call."""

    def __init__(self, answers: dict | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[list[str]] = []

    def __call__(self, argv, on_line=None) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        answer = self.answers.get(tuple(argv[:2]), self.answers.get(argv[0]))
        if answer is None:
            return Result(NOT_FOUND, f"{argv[0]}: not installed")
        if callable(answer):
            answer = answer(argv)
        if on_line is not None:
            for line in answer.output.splitlines():
                on_line(line)
        return answer

    def programs(self) -> list[str]:
        return [" ".join(c[:2]) for c in self.calls]


def write_config(path: Path, data_dir: Path, port: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[board]\nname = "north"\ndata_dir = "{data_dir}"\n\n[api]\nlisten_port = {port}\n'
    )
    return path


@pytest.fixture
def board(tmp_path) -> dict[str, Path]:
    paths = {
        "config": write_config(tmp_path / "etc" / "nvr.toml", tmp_path / "data" / "nvr"),
        "release": tmp_path / "etc" / "nvr-release",
        "proc": tmp_path / "proc",
        "dev": tmp_path / "dev",
        "run": tmp_path / "run",
        "data": tmp_path / "data",
        "sys_watchdog": tmp_path / "sys" / "class" / "watchdog",
    }
    paths["release"].write_text(RELEASE)
    for d in ("proc", "dev", "run", "sys_watchdog"):
        paths[d].mkdir(parents=True)
    return paths


def console(board: dict[str, Path], lines: str, runner: FakeRunner | None = None):
    """Run a console session over `lines`; (exit status, output, runner)."""
    runner = runner or FakeRunner()
    out = io.StringIO()
    con = Console(
        board["config"], board["release"], io.StringIO(lines), out, runner=runner,
        proc=board["proc"], dev=board["dev"], run=board["run"], data_root=board["data"],
        sys_class_watchdog=board["sys_watchdog"],
    )  # fmt: skip
    code = con.loop()
    return code, out.getvalue(), runner


def answers(output: str) -> list[str]:
    """What each command printed: the text between one prompt and the next."""
    return output.split(PROMPT)[1:]


# --- the console as a process on a serial line -----------------------------------------------


def set_up(tmp_path: Path) -> list[str]:
    """A data root the first-boot wizard has completed (tests/test_wizard.py runs it)."""
    from firmware import adminpw
    from firmware.paths import done_path

    root = tmp_path / "data-set-up"
    adminpw.save(root, "Install3r")
    done_path(root).write_bytes(b"")
    return ["--data-root", str(root)]


def test_console_process_banner_prompt_unknown_command_and_eof(board, tmp_path):
    done = subprocess.run(
        [*NVR, "console", "--config", str(board["config"]), "--release", str(board["release"]),
         *set_up(tmp_path)],
        input="Install3r\nfrobnicate now\n\nhelp\n",
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    banner, *rest = done.stdout.split(PROMPT)
    assert banner.splitlines() == [
        "admin password: ",  # the wizard's password first (tests/test_wizard.py)
        "nvr-pair console",
        "name: nvr-pair Debian 12",
        "version: 0.1.0",
        "revision: 3f2c1ab",
        "board: north",
        *menu_lines(),
    ]
    assert rest[0] == "unknown command: frobnicate (a menu number, or type help)\n"
    assert rest[1].splitlines() == banner.splitlines()[1:]  # an empty line: the menu again
    assert all(f"  {name}" in rest[2] for name in COMMANDS)
    assert " 1  status [--json]" in rest[2] and "14  shell" in rest[2]  # numbers and words
    assert rest[3] == "\n"  # EOF: a newline after the last prompt, then exit 0
    assert "Traceback" not in done.stderr


def test_console_process_without_release_or_config_says_unknown(tmp_path):
    done = subprocess.run(
        [*NVR, "console", "--config", str(tmp_path / "no.toml"), "--release",
         str(tmp_path / "no-release"), *set_up(tmp_path)],
        input="Install3r\nrelease\nexit\nhelp\n", cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    banner, release, after_exit = done.stdout.split(PROMPT)
    assert "version: unknown" in banner and "revision: unknown" in banner
    assert "board: unknown (" in banner and "no.toml" in banner
    assert release.startswith(f"release: {tmp_path / 'no-release'}:")
    assert after_exit == ""  # `exit` ended the console before `help`


def test_console_process_on_an_image_shows_the_board_profile_s_banner(board, tmp_path):
    """The image's profile brands the console's first lines; a broken one is said and the
    console still works (the build checked it, so it is a damaged root)."""
    profile = ROOT / "image" / "boards" / "qemu-arm64.toml"
    argv = [*NVR, "console", "--config", str(board["config"]), "--release",
            str(board["release"]), *set_up(tmp_path)]  # fmt: skip
    done = subprocess.run([*argv, "--board", str(profile)], input="Install3r\n", cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split(PROMPT)[0].splitlines()
    assert lines[1:3] == ["nvr-pair network video recorder (reference board, arm64)",
                          "nvr-pair console"]  # fmt: skip
    assert "hardware: qemu-arm64 (arm64)" in lines
    broken = tmp_path / "board.toml"
    broken.write_text(profile.read_text().replace('arch = "arm64"', 'arch = "mips"'))
    done = subprocess.run([*argv, "--board", str(broken)], input="Install3r\n", cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "image.arch:" in done.stderr
    assert done.stdout.split(PROMPT)[0].splitlines()[1] == "nvr-pair console"


# --- commands ---------------------------------------------------------------------------------


def test_release_prints_the_file_verbatim(board):
    code, out, _ = console(board, "release\n")
    assert code == 0
    assert answers(out)[0] == RELEASE


STATUS = {
    "board": "north",
    "role": "single",
    "version": "0.1.0",
    "virtual_ip": None,
    "epoch": 0,
    "cameras": [{"name": "cam1", "recording": True, "last_frame_at": "2024-05-01T00:00:00.000Z"}],
    "alerts": [],
}


class StatusAPI(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(STATUS).encode()
        self.send_response(200 if self.path == "/api/v1/status" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_status_is_nvr_status_in_both_forms(board, api):
    write_config(board["config"], board["data"] / "nvr", port=api)
    code, out, _ = console(board, "status\nstatus --json\nstatus --yaml\n")
    assert code == 0
    human, as_json, wrong, _eof = answers(out)
    assert human.splitlines() == [
        "board north single  version 0.1.0",
        "  camera cam1: recording, last frame 2024-05-01T00:00:00.000Z",
    ]
    assert json.loads(as_json) == STATUS
    assert wrong == "usage: status [--json]\n"


def test_status_when_the_firmware_is_down_is_an_answer_not_a_crash(board):
    code, out, _ = console(board, "status\nhelp\n")
    assert code == 0
    down, helped, _ = answers(out)
    assert down.startswith("nvr: the firmware does not answer at http://127.0.0.1:1")
    assert "factory-reset" in helped


def test_extra_arguments_print_the_usage(board):
    _, out, runner = console(board, "reboot now\nupdate a b\n")
    assert answers(out)[:2] == ["usage: reboot\n", "usage: update [FILE]\n"]
    assert runner.calls == []


# --- system -----------------------------------------------------------------------------------


MOUNTINFO_RO = (
    "21 1 8:2 / / ro,relatime shared:1 - squashfs /dev/sda2 ro\n"
    "25 21 8:4 / /data rw,noatime shared:5 - ext4 /dev/sda4 rw\n"
)
RAUC_STATUS = {
    "compatible": "nvr-pair",
    "booted": "A",
    "boot_primary": "rootfs.1",
    "slots": [
        {"rootfs.0": {"bootname": "A", "state": "booted", "boot_status": "good",
                      "slot_status": {"bundle": {"version": "0.1.0"}}}},
        {"rootfs.1": {"bootname": "B", "state": "inactive", "boot_status": "good",
                      "bundle.version": "0.2.0"}},
        {"efi.0": {"state": "inactive"}},
    ],
}  # fmt: skip


def fake_proc(proc: Path, dev: Path, holders: dict[int, tuple[str, list[str]]]) -> None:
    """/proc/<pid>/comm and fd symlinks: pid -> (name, device names it holds open)."""
    (proc / "self").mkdir(parents=True, exist_ok=True)
    (proc / "self" / "mountinfo").write_text(MOUNTINFO_RO)
    (proc / "sys").mkdir(exist_ok=True)  # not a pid
    for pid, (name, opened) in holders.items():
        (proc / str(pid) / "fd").mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(name + "\n")
        (proc / str(pid) / "fd" / "0").symlink_to("/dev/null")
        (proc / str(pid) / "fd" / "1").symlink_to("socket:[1234]")
        for fd, device in enumerate(opened, start=3):
            (proc / str(pid) / "fd" / str(fd)).symlink_to(dev / device)


def test_system_reports_root_service_watchdog_and_slots(board):
    proc, dev = board["proc"], board["dev"]
    for name in ("watchdog", "watchdog0", "watchdog1"):
        (dev / name).write_text("")
    (board["sys_watchdog"] / "watchdog0").mkdir()
    (board["sys_watchdog"] / "watchdog0" / "identity").write_text("i6300ESB timer\n")
    fake_proc(proc, dev, {1: ("systemd", ["watchdog0"]), 812: ("nvr", ["watchdog1"]),
                          900: ("sshd", [])})  # fmt: skip
    runner = FakeRunner({
        ("systemctl", "is-active"): Result(0, "active\n"),
        ("rauc", "status"): Result(0, json.dumps(RAUC_STATUS) + "\n"),
    })  # fmt: skip
    code, out, runner = console(board, "system\n", runner)
    assert code == 0
    assert answers(out)[0].splitlines() == [
        "root: read-only",
        "service: active",
        f"watchdog: {dev}/watchdog (watchdog0, i6300ESB timer) not held",
        f"watchdog: {dev}/watchdog0 (i6300ESB timer) held by systemd (pid 1)",
        f"watchdog: {dev}/watchdog1 held by nvr (pid 812)",
        "slot: A",
        "slot rootfs.0: bootname=A state=booted boot_status=good version=0.1.0",
        "slot rootfs.1: bootname=B state=inactive boot_status=good version=0.2.0 primary",
        "slot efi.0: bootname=- state=inactive boot_status=- version=-",
    ]
    assert runner.calls == [
        ["systemctl", "is-active", "nvr.service"],
        ["rauc", "status", "--detailed", "--output-format=json"],
    ]


def test_system_without_watchdog_nor_rauc(board):
    (board["proc"] / "self").mkdir()
    (board["proc"] / "self" / "mountinfo").write_text(
        "1 0 8:1 / / ro shared:1 - ext4 /dev/sda1 ro\n"
        "2 1 0:5 / / rw,relatime - overlay overlay rw\n"  # mounted over the first: on top
    )
    runner = FakeRunner({("systemctl", "is-active"): Result(3, "inactive\n")})
    _, out, _ = console(board, "system\n", runner)
    assert answers(out)[0].splitlines() == [
        "root: read-write",
        "service: inactive",
        "watchdog: none",
        "slots: rauc not installed",
    ]


def test_root_mode_reads_the_super_block_options_too(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(
        "1 0 8:1 / / rw - ext4 /dev/sda1 ro,errors=remount-ro\n"
    )
    assert root_mode(tmp_path) == "read-only"
    assert root_mode(tmp_path / "missing") == "unknown"


def test_watchdog_holders_ignores_unreadable_processes(tmp_path):
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    dev.mkdir()
    (dev / "watchdog0").write_text("")
    fake_proc(proc, dev, {7: ("wdkeeper", ["watchdog0", "watchdog0"])})
    (proc / "8").mkdir()  # a process that exited while we looked: no fd directory
    assert watchdog_holders(proc, dev) == {f"{dev}/watchdog0": [(7, "wdkeeper")]}


def test_a_failing_command_prints_its_error_and_the_console_goes_on(board):
    def boom(argv):
        raise RuntimeError("D-Bus went away")

    (board["proc"] / "self").mkdir()
    (board["proc"] / "self" / "mountinfo").write_text(MOUNTINFO_RO)
    runner = FakeRunner({"systemctl": boom})
    code, out, _ = console(board, "system\nrelease\n", runner)
    assert code == 0
    system, release, _ = answers(out)
    assert system == "root: read-only\nsystem: error: D-Bus went away\n"
    assert release == RELEASE


# --- update -----------------------------------------------------------------------------------


class Stick:
    """The NVR-UPDATE stick: `mount` puts its files at the mount point, `umount` takes them."""

    def __init__(self, dev: Path, names: list[str]) -> None:
        (dev / "disk" / "by-label").mkdir(parents=True)
        self.device = dev / "disk" / "by-label" / "NVR-UPDATE"
        self.device.write_text("")
        self.names = names
        self.mounted: Path | None = None

    def mount(self, argv):
        assert argv[:3] == ["mount", "-o", "ro"] and argv[3] == str(self.device)
        self.mounted = Path(argv[4])
        for name in self.names:
            (self.mounted / name).write_bytes(b"bundle")
        (self.mounted / "README.txt").write_text("not a bundle")
        return Result(0, "")

    def umount(self, argv):
        assert self.mounted is not None and argv == ["umount", str(self.mounted)]
        for p in self.mounted.iterdir():
            p.unlink()
        self.mounted = None
        return Result(0, "")


RAUC_OK = "installing\n  0% Installing\n 20% Checking bundle\n100% Installing done.\nInstalling `x` succeeded\n"  # noqa: E501
RAUC_FAIL = (
    "installing\n  0% Installing\n 20% Checking bundle\n 40% Checking bundle failed.\n"
    "100% Installing failed.\nLastError: Failed to check bundle signature: signature invalid\n"
    "Installing `x` failed\n"
)


def update_session(board, lines: str, names: list[str], rauc: Result):
    """Each line run as a command: (statuses, output with a prompt before each, runner)."""
    stick = Stick(board["dev"], names)
    runner = FakeRunner({"mount": stick.mount, "umount": stick.umount, ("rauc", "install"): rauc})
    out = io.StringIO()
    con = Console(
        board["config"], board["release"], io.StringIO(), out, runner=runner,
        proc=board["proc"], dev=board["dev"], run=board["run"], data_root=board["data"],
        sys_class_watchdog=board["sys_watchdog"],
    )  # fmt: skip
    statuses = []
    for line in lines.splitlines():
        out.write(PROMPT)
        statuses.append(con.execute(line))
    out.write(PROMPT)
    assert stick.mounted is None, "the stick was left mounted"
    return statuses, out.getvalue(), runner


def test_update_installs_the_only_bundle_and_streams_rauc(board):
    statuses, out, runner = update_session(board, "update", ["nvr-0.2.0.raucb"], Result(0, RAUC_OK))
    assert statuses == [0]
    mnt = board["run"] / "nvr" / "update"
    assert answers(out)[0].splitlines() == [
        "bundle: nvr-0.2.0.raucb",
        f"update: installing {mnt}/nvr-0.2.0.raucb",
        *RAUC_OK.splitlines(),
        "update: installed nvr-0.2.0.raucb, type reboot to start it",
    ]
    assert runner.programs() == ["mount -o", "rauc install", "umount " + str(mnt)]
    assert runner.calls[1] == ["rauc", "install", f"{mnt}/nvr-0.2.0.raucb"]


def test_update_failure_shows_raucs_last_error_and_still_unmounts(board):
    statuses, out, runner = update_session(
        board, "update", ["nvr-0.2.0.raucb"], Result(1, RAUC_FAIL)
    )
    assert statuses == [1]
    last = answers(out)[0].splitlines()[-1]
    assert last == "update failed: LastError: Failed to check bundle signature: signature invalid"
    assert runner.calls[-1][0] == "umount"


def test_update_with_several_bundles_wants_a_name(board):
    names = ["nvr-0.2.0.raucb", "nvr-0.3.0.raucb"]
    statuses, out, runner = update_session(
        board, "update\nupdate nvr-0.3.0.raucb", names, Result(0, "")
    )
    assert statuses == [1, 0]
    several, named, _ = answers(out)
    assert (
        several.splitlines()[-1] == "update failed: 2 bundles on NVR-UPDATE; name one: update FILE"
    )
    assert named.splitlines()[-1] == "update: installed nvr-0.3.0.raucb, type reboot to start it"
    installs = [c for c in runner.calls if c[0] == "rauc"]
    assert installs == [["rauc", "install", str(board["run"] / "nvr/update/nvr-0.3.0.raucb")]]
    assert [c[0] for c in runner.calls] == ["mount", "umount", "mount", "rauc", "umount"]


def test_update_with_no_bundle_or_a_missing_one(board):
    statuses, out, runner = update_session(board, "update\nupdate missing.raucb", [], Result(0, ""))
    assert statuses == [1, 1]
    empty, missing, _ = answers(out)
    assert empty.splitlines()[-1] == "update failed: no *.raucb bundle on NVR-UPDATE"
    assert missing.splitlines()[-1].startswith("update failed: ")
    assert "missing.raucb: no such file" in missing
    assert [c[0] for c in runner.calls] == ["mount", "umount", "mount", "umount"]


def test_update_without_a_stick_mounts_nothing(board):
    code, out, runner = console(board, "update\n")
    assert code == 0
    assert answers(out)[0].startswith("update failed: no USB stick labelled NVR-UPDATE")
    assert runner.calls == []


def test_update_from_an_absolute_path_needs_no_stick(board, tmp_path):
    bundle = tmp_path / "nvr-0.2.0.raucb"
    bundle.write_bytes(b"bundle")
    runner = FakeRunner({("rauc", "install"): Result(0, "installing\n")})
    _, out, runner = console(board, f"update {bundle}\n", runner)
    assert answers(out)[0].splitlines()[-1] == (
        "update: installed nvr-0.2.0.raucb, type reboot to start it"
    )
    assert runner.calls == [["rauc", "install", str(bundle)]]


# --- reboot, poweroff, factory-reset ----------------------------------------------------------


def test_reboot_and_poweroff_go_through_systemctl(board):
    runner = FakeRunner({("systemctl", "reboot"): Result(0, ""),
                         ("systemctl", "poweroff"): Result(1, "Access denied\n")})  # fmt: skip
    _, out, runner = console(board, "reboot\npoweroff\n", runner)
    reboot, poweroff, _ = answers(out)
    assert reboot == "rebooting\n"
    assert poweroff == "powering off\npoweroff failed: Access denied\n"
    assert runner.calls == [["systemctl", "reboot"], ["systemctl", "poweroff"]]


def reset_board(board) -> None:
    nvr = board["data"] / "nvr"
    (nvr / "segments").mkdir(parents=True)
    (nvr / "segments" / "1.mp4").write_bytes(b"v")
    (nvr / "api.token").write_text("t\n")
    (board["data"] / "etc" / "nvr").mkdir(parents=True)
    (board["data"] / "etc" / "nvr" / "pair.key").write_text("k\n")
    (board["run"] / "systemd" / "system").mkdir(parents=True)


def test_factory_reset_asks_twice_and_then_resets(board):
    reset_board(board)
    runner = FakeRunner({"systemctl": Result(0, "")})
    code, out, runner = console(board, "factory-reset\nyes\nRESET\n", runner)
    assert code == 0
    assert "keep footage? [yes/no] type RESET to confirm: " in out
    assert "factory-reset: rebooting" in out
    assert not (board["data"] / "etc" / "nvr").exists()
    assert not (board["data"] / "nvr" / "api.token").exists()
    assert (board["data"] / "nvr" / "segments" / "1.mp4").exists()
    assert '"event": "factory-reset"' in (board["data"] / "nvr" / "audit.log").read_text()
    assert runner.calls == [["systemctl", "stop", "nvr.service"], ["systemctl", "reboot"]]


@pytest.mark.parametrize("replies", ["maybe\n", "no\nreset\n", "no\n"])
def test_factory_reset_without_both_answers_does_nothing(board, replies):
    reset_board(board)
    code, out, runner = console(board, "factory-reset\n" + replies + "help\n")
    assert code == 0
    assert "factory-reset: cancelled" in out
    assert (board["data"] / "etc" / "nvr" / "pair.key").exists()
    assert (board["data"] / "nvr" / "api.token").exists()
    assert runner.calls == []
