"""`nvr firstboot` and `nvr factory-reset` on a data partition laid out as in the image:
/etc/nvr and the data directory are symlinks into <data-root>, the factory config is apart."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NVR, ROOT

from firmware.pairkey import write_pair_key
from firmware.provision import Result, factory_reset, firstboot, remove_paths, reset_plan

EXAMPLE = ROOT / "rootfs" / "etc" / "nvr" / "nvr.toml"


class FakeRunner:
    def __init__(self, returncode: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.returncode = returncode

    def __call__(self, argv, on_line=None) -> Result:
        self.calls.append(list(argv))
        return Result(self.returncode, "" if self.returncode == 0 else "Job failed\n")


class Board:
    """The image's layout under tmp_path: root/ is the board's /, data/ its data partition."""

    def __init__(self, tmp: Path, pair: bool = True) -> None:
        self.data = tmp / "data"
        self.root = tmp / "root"
        self.etc = self.root / "etc" / "nvr"
        self.config = self.etc / "nvr.toml"
        self.data_dir = self.root / "var" / "lib" / "nvr"
        self.factory = self.root / "usr" / "share" / "nvr" / "nvr.toml"
        self.systemd = self.root / "run" / "systemd" / "system"
        for link, target in ((self.etc, "etc/nvr"), (self.data_dir, "nvr")):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.data / target)
        text = EXAMPLE.read_text()
        text = text.replace('"/var/lib/nvr"', f'"{self.data_dir}"')
        text = text.replace('key_file = "/etc/nvr/pair.key"', f'key_file = "{self.etc}/pair.key"')
        if not pair:
            text = text.split("[pair]")[0] + "[recorder]" + text.split("[recorder]", 1)[1]
        self.factory.parent.mkdir(parents=True)
        self.factory.write_text(text)

    def firstboot(self) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = firstboot(self.factory, self.config, out, err)
        return code, out.getvalue(), err.getvalue()

    def pair(self) -> str:
        """The key `nvr pair` leaves (through the /etc/nvr symlink, as the firmware writes)."""
        key = "ab" * 32
        write_pair_key(self.etc / "pair.key", key.encode())
        return key + "\n"

    def populate(self) -> None:
        """A board that has run: token, segments, catalog, audit log, journal."""
        assert self.firstboot()[0] == 0
        self.pair()
        nvr = self.data / "nvr"
        (nvr / "api.token").write_text("secret\n")
        (nvr / "segments" / "cam1" / "2024-05-01").mkdir(parents=True)
        (nvr / "segments" / "cam1" / "2024-05-01" / "1.mp4").write_bytes(b"x" * 10)
        (nvr / "catalog.sqlite").write_bytes(b"db")
        (nvr / "audit.log").write_text('{"event": "start"}\n')
        (nvr / "nvr-data.json").write_text("{}")
        (self.data / "log" / "journal" / "abc").mkdir(parents=True)
        (self.data / "log" / "journal" / "abc" / "system.journal").write_bytes(b"j")

    def reset(self, wipe: bool, runner=None, reboot: bool = True) -> tuple[int, str]:
        out = io.StringIO()
        code = factory_reset(self.config, self.data, wipe, reboot, out, runner or FakeRunner(),
                             systemd_runtime=self.systemd)  # fmt: skip
        return code, out.getvalue()


def tree(top: Path) -> dict[str, tuple]:
    """Every entry below `top` with its kind, content and mtime: what a run may change."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(top))
            if p.is_symlink():
                found[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                found[rel] = ("dir", st.st_mode)
            else:
                found[rel] = ("file", p.read_bytes(), st.st_mode, st.st_mtime_ns)
    return found


def files(top: Path) -> set[str]:
    return {k for k, v in tree(top).items() if v[0] != "dir"}


# --- firstboot -------------------------------------------------------------------------------


def test_firstboot_sets_up_a_fresh_board_through_the_symlinks(tmp_path):
    b = Board(tmp_path)
    code, out, err = b.firstboot()
    assert code == 0, err
    assert (b.data / "etc" / "nvr" / "nvr.toml").read_bytes() == b.factory.read_bytes()
    assert (b.config.stat().st_mode & 0o777) == 0o600
    assert not (b.data / "etc" / "nvr" / "pair.key").exists()  # paired later: `nvr pair`
    assert (b.data / "nvr").is_dir()
    assert "created from the factory config" in out
    assert "unpaired" in out and "nvr pair code" in out and "nvr pair join" in out
    assert not list((b.data / "etc" / "nvr").glob(".*tmp"))


def test_firstboot_twice_changes_nothing_and_keeps_the_pair_key(tmp_path):
    b = Board(tmp_path)
    assert b.firstboot()[0] == 0
    key = b.pair()
    before = tree(tmp_path)
    code, out, _ = b.firstboot()
    assert code == 0
    assert tree(tmp_path) == before
    assert (b.data / "etc" / "nvr" / "pair.key").read_text() == key
    assert "created" not in out and "pair key" not in out
    assert "ready" in out


def test_firstboot_never_overwrites_an_existing_config(tmp_path):
    b = Board(tmp_path, pair=False)
    own = b.factory.read_text().replace('name = "a"', 'name = "north"')
    (b.data / "etc" / "nvr").mkdir(parents=True)
    b.config.write_text(own)
    code, out, _ = b.firstboot()
    assert code == 0
    assert b.config.read_text() == own
    assert "board 'north' ready" in out
    assert not (b.data / "etc" / "nvr" / "pair.key").exists()  # no [pair]: no key


def test_firstboot_refuses_a_bad_config_and_leaves_it_alone(tmp_path):
    b = Board(tmp_path)
    (b.data / "etc" / "nvr").mkdir(parents=True)
    bad = b.factory.read_text().replace("segment_seconds = 4", "segmnt_seconds = 4")
    b.config.write_text(bad)
    code, out, err = b.firstboot()
    assert code == 2 and "ready" not in out
    assert "recorder.segmnt_seconds" in err and str(b.config) in err
    assert b.config.read_text() == bad
    assert not (b.data / "etc" / "nvr" / "pair.key").exists()
    assert not (b.data / "nvr").exists()


def test_firstboot_from_the_command_line(tmp_path):
    b = Board(tmp_path)
    args = ["firstboot", "--factory", str(b.factory), "--config", str(b.config)]
    done = subprocess.run([*NVR, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert b.config.read_bytes() == b.factory.read_bytes()
    again = subprocess.run([*NVR, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "pair key" not in again.stdout


NEEDED = ROOT / "rootfs" / "usr" / "lib" / "nvr" / "firstboot-needed"
BOARD_PROFILE = ROOT / "image" / "boards" / "qemu-x86_64.toml"


def firstboot_needed(b: Board, release: Path) -> bool:
    """nvr-firstboot.service's ExecCondition on this layout: True when it runs `nvr firstboot`."""
    env = {**os.environ, "NVR_CONFIG": str(b.config), "NVR_RELEASE": str(release)}
    done = subprocess.run(["sh", str(NEEDED)], env=env, capture_output=True, timeout=10)
    assert done.returncode in (0, 1), done
    return done.returncode == 0


def test_the_first_boot_is_done_once_per_release_and_then_skipped(tmp_path):
    b = Board(tmp_path)
    release = b.root / "etc" / "nvr-release"
    release.write_text("NAME=nvr-pair\nVERSION=1.0.0\n")
    assert firstboot_needed(b, release)  # a fresh data partition
    out, err = io.StringIO(), io.StringIO()
    assert firstboot(b.factory, b.config, out, err, release=release) == 0, err.getvalue()
    assert not firstboot_needed(b, release)
    before = tree(tmp_path)
    assert firstboot(b.factory, b.config, io.StringIO(), io.StringIO(), release=release) == 0
    assert tree(tmp_path) == before  # the mark is not written again
    release.write_text("NAME=nvr-pair\nVERSION=1.1.0\n")  # an update: its first boot runs
    assert firstboot_needed(b, release)
    b.config.unlink()  # as a factory reset leaves it
    release.write_text("NAME=nvr-pair\nVERSION=1.0.0\n")
    assert firstboot_needed(b, release)


def test_the_build_seeds_the_first_boot_s_config_as_firstboot_makes_it(tmp_path):
    """`python -m firmware.provision` (the image's build) against `nvr firstboot` on the board:
    the same config, byte for byte, and the first boot then starts no Python."""
    release = tmp_path / "nvr-release"
    release.write_text("NAME=nvr-pair\nVERSION=1.0.0\n")
    on_board = Board(tmp_path / "board")
    out, err = io.StringIO(), io.StringIO()
    code = firstboot(on_board.factory, on_board.config, out, err, BOARD_PROFILE, release)
    assert code == 0, err.getvalue()
    assert "board profile qemu-x86_64" in out.getvalue()
    built = Board(tmp_path / "built")
    args = [str(built.factory), str(built.config), str(BOARD_PROFILE), str(release)]
    done = subprocess.run([sys.executable, "-m", "firmware.provision", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    here = on_board.config.read_text().replace(str(tmp_path / "board"), str(tmp_path / "built"))
    assert built.config.read_text() == here  # the two layouts' paths aside
    assert not firstboot_needed(built, release)
    missing = subprocess.run([sys.executable, "-m", "firmware.provision", *args[:2],
                              str(tmp_path / "no-board.toml"), str(release)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 1 and "no-board.toml" in missing.stderr


def test_the_firstboot_unit_runs_only_when_the_condition_says_so():
    unit = (ROOT / "rootfs/usr/lib/systemd/system/nvr-firstboot.service").read_text()
    assert "\nExecCondition=/usr/lib/nvr/firstboot-needed\n" in unit
    assert os.access(NEEDED, os.X_OK)


# --- the removal plan ------------------------------------------------------------------------


R = Path("/data")
ENTRIES = {
    R / "etc": ["nvr", "ssh"],
    R / "nvr": ["segments", "catalog.sqlite", "audit.log", "api.token"],
    R / "log": ["journal"],
}


def test_plan_keeping_footage_deletes_config_keys_and_token_only():
    plan = reset_plan(R, R / "nvr", R / "nvr" / "api.token", False, ENTRIES)
    assert plan == [R / "etc" / "nvr", R / "etc" / "ssh", R / "nvr" / "api.token"]


def test_plan_wiping_footage_empties_etc_data_dir_and_journal():
    plan = reset_plan(R, R / "nvr", R / "nvr" / "api.token", True, ENTRIES)
    assert plan == [
        R / "etc" / "nvr",
        R / "etc" / "ssh",
        R / "nvr" / "api.token",
        R / "nvr" / "audit.log",
        R / "nvr" / "catalog.sqlite",
        R / "nvr" / "segments",
        R / "log" / "journal",
    ]


def test_plan_never_lists_data_root_nor_a_path_twice_or_inside_another():
    entries = {R / "etc": ["nvr"], R: ["etc", "log", "nvr"], R / "log": ["journal"]}
    plan = reset_plan(R, R, R / "etc" / "nvr" / "api.token", True, entries)
    assert plan == [R / "etc", R / "log", R / "nvr"]
    assert reset_plan(R, R, R / "api.token", False, {R / "etc": []}) == [R / "api.token"]


# --- factory reset on real files --------------------------------------------------------------


JOURNAL = "log/journal/abc/system.journal"
FOOTAGE = {
    "nvr/segments/cam1/2024-05-01/1.mp4",
    "nvr/catalog.sqlite",
    "nvr/audit.log",
    "nvr/nvr-data.json",
}


def test_keep_footage_removes_config_keys_and_token_and_audits_it(tmp_path):
    b = Board(tmp_path)
    b.populate()
    b.systemd.mkdir(parents=True)
    runner = FakeRunner()
    code, out = b.reset(wipe=False, runner=runner)
    assert code == 0, out
    assert files(b.data) == FOOTAGE | {JOURNAL}
    assert (b.data / "etc").is_dir() and (b.data / "nvr").is_dir()
    assert runner.calls == [["systemctl", "stop", "nvr.service"], ["systemctl", "reboot"]]
    last = json.loads((b.data / "nvr" / "audit.log").read_text().splitlines()[-1])
    assert last["event"] == "factory-reset" and last["footage"] == "kept"


def test_wipe_footage_leaves_empty_directories(tmp_path):
    b = Board(tmp_path)
    b.populate()
    runner = FakeRunner()
    code, out = b.reset(wipe=True, runner=runner, reboot=False)
    assert code == 0, out
    assert files(b.data) == set()
    assert sorted(p.name for p in b.data.iterdir()) == ["etc", "log", "nvr"]
    assert runner.calls == []  # not under systemd (no run/systemd/system), no reboot asked


def test_firstboot_after_a_reset_leaves_the_board_unpaired(tmp_path):
    b = Board(tmp_path)
    b.populate()
    assert b.reset(wipe=False, reboot=False)[0] == 0
    (b.data / "etc").rmdir()  # the /etc/nvr symlink dangles
    code, out, err = b.firstboot()
    assert code == 0, err
    assert "created from the factory config" in out and "unpaired" in out
    assert b.config.read_bytes() == b.factory.read_bytes()
    assert not (b.data / "etc" / "nvr" / "pair.key").exists()
    assert (b.data / "nvr" / "segments" / "cam1" / "2024-05-01" / "1.mp4").exists()


def test_symlinks_out_of_the_data_root_are_not_followed(tmp_path):
    b = Board(tmp_path)
    b.populate()
    outside = tmp_path / "outside"
    (outside / "cam9").mkdir(parents=True)
    (outside / "cam9" / "keep.mp4").write_bytes(b"k")
    (outside / "precious.txt").write_text("p")
    (outside / "secret.key").write_text("s")
    nvr = b.data / "nvr"
    (nvr / "segments" / "cam9").symlink_to(outside / "cam9")  # inside a tree that goes
    (nvr / "evil").symlink_to(outside / "precious.txt")  # planned itself
    (b.data / "etc" / "nvr" / "pair.key").unlink()
    (b.data / "etc" / "nvr" / "pair.key").symlink_to(outside / "secret.key")
    (nvr / "inner").symlink_to(nvr / "catalog.sqlite")  # stays inside: the link goes
    before = tree(outside)
    runner = FakeRunner()
    code, out = b.reset(wipe=True, runner=runner)
    assert code == 1
    assert tree(outside) == before
    assert files(b.data) == {"nvr/evil"}  # the pair.key link went with etc/nvr, unfollowed
    assert "refused" in out and "not rebooting" in out
    assert ["systemctl", "reboot"] not in runner.calls


def test_remove_paths_refuses_a_path_through_a_symlinked_directory(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "elsewhere" / "etc").mkdir(parents=True)
    (tmp_path / "elsewhere" / "etc" / "nvr.toml").write_text("x")
    (root / "etc").symlink_to(tmp_path / "elsewhere" / "etc")
    said: list[str] = []
    bad = remove_paths([root / "etc" / "nvr.toml"], root, said.append)
    assert bad == [root / "etc" / "nvr.toml"]
    assert (tmp_path / "elsewhere" / "etc" / "nvr.toml").read_text() == "x"
    assert said and "outside" in said[0]


def test_a_service_that_does_not_stop_means_nothing_is_deleted(tmp_path):
    b = Board(tmp_path)
    b.populate()
    b.systemd.mkdir(parents=True)
    before = tree(b.data)
    runner = FakeRunner(returncode=1)
    code, out = b.reset(wipe=True, runner=runner)
    assert code == 1 and "nothing deleted" in out
    assert tree(b.data) == before
    assert runner.calls == [["systemctl", "stop", "nvr.service"]]


def test_an_unreadable_config_resets_with_the_default_data_directory(tmp_path):
    b = Board(tmp_path)
    b.populate()
    b.config.write_text("not toml [")
    # the default data directory (/var/lib/nvr) is outside this data root: nothing of it goes
    _, out = b.reset(wipe=True, reboot=False)
    assert "config unusable" in out
    assert not (b.data / "etc" / "nvr" / "nvr.toml").exists()
    assert files(b.data) == {"nvr/api.token", *FOOTAGE}  # the journal in <data-root>/log went


@pytest.mark.parametrize("mode", ["--keep-footage", "--wipe-footage"])
def test_the_command_refuses_without_yes(tmp_path, mode):
    b = Board(tmp_path)
    b.populate()
    before = tree(b.data)
    args = ["factory-reset", mode, "--config", str(b.config), "--data-root", str(b.data),
            "--no-reboot"]  # fmt: skip
    done = subprocess.run([*NVR, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--yes" in done.stderr
    assert tree(b.data) == before
