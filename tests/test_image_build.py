"""The image build's signing, release and board pieces, without building a root (seconds, not
minutes).

The whole image is built and booted by tests/test_image.py; these check what must hold for
every bundle: it verifies against the CA that signed it and against no other, a damaged bundle
is refused, a release build refuses development keys, and each board's build (its profile in
image/boards) names that board in RAUC's compatible and boots its own architecture's GRUB on
its own serial console.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
MISSING = [t for t in ("rauc", "mksquashfs", "openssl") if shutil.which(t) is None]
needs_tools = pytest.mark.skipif(
    bool(MISSING), reason=f"missing {', '.join(MISSING)} (bash image/build.sh tools installs them)"
)

spec = importlib.util.spec_from_file_location("image_build", TOP / "image" / "build.py")
assert spec is not None and spec.loader is not None
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


BOARDS = ("qemu-x86_64", "qemu-arm64")


def test_release_file_says_version_revision_and_build_date():
    text = build.release_text("1.2.3", "0123456789ab-dirty", 1_790_000_000, "nvr-pair-b")
    fields = dict(w.split("=", 1) for line in text.splitlines() for w in shlex.split(line))
    assert fields["NAME"] == "nvr-pair"
    assert fields["VERSION"] == "1.2.3"
    assert fields["GIT_REVISION"] == "0123456789ab-dirty"
    assert fields["BUILD_DATE"] == "2026-09-21T14:13:20Z"
    assert fields["COMPATIBLE"] == "nvr-pair-b"
    # A value with spaces or quotes stays one value.
    odd = build.release_text("1.0 beta 'x'", "r", 0, "c")
    assert "VERSION=1.0 beta 'x'" in [w for ln in odd.splitlines() for w in shlex.split(ln)]


def test_boot_config_names_both_slots_by_partition_uuid():
    cfg = build.grub_cfg(build.load_board("qemu-x86_64"))
    assert "@" not in cfg
    assert f"root=PARTUUID={build.PART_UUIDS['rootfs-a']} " in cfg and "rauc.slot=A" in cfg
    assert f"root=PARTUUID={build.PART_UUIDS['rootfs-b']} " in cfg and "rauc.slot=B" in cfg
    assert "save_env" in cfg and "load_env" in cfg
    gen = build.genimage_config(Path("."))
    for name, uuid in build.PART_UUIDS.items():
        assert f"partition {name} {{" in gen and uuid in gen
    conf = build.system_conf("nvr-pair-x")
    assert "bootloader=grub" in conf and "bundle-formats=-plain" in conf
    assert "\ncompatible=nvr-pair-x\n" in conf and "@" not in conf


@pytest.mark.parametrize("name", BOARDS)
def test_each_board_profile_gives_its_image_arch_kernel_console_and_compatible(name):
    """The build takes a board as the firmware reads its profile (`boardfiles --check`)."""
    from firmware.hw.profile import load_profile

    board = build.load_board(name)
    profile = load_profile(TOP / "image" / "boards" / f"{name}.toml")
    assert board.name == profile.board.name == name
    assert board.compatible == profile.compatible == f"nvr-pair-{name}"
    assert (board.arch, board.kernel, board.console) == (
        profile.image.arch, profile.image.kernel, profile.image.console)  # fmt: skip
    assert board.kernel in build.root_packages(board)
    assert board.target.grub_package in build.root_packages(board)
    assert build.load_board(str(board.profile)) == board  # by name or by path
    assert list(board.packages) == profile.packages


def test_a_profile_the_firmware_refuses_is_no_board_for_the_build(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((TOP / "image" / "boards" / "qemu-arm64.toml").read_text().replace(
        'arch = "arm64"', 'arch = "riscv64"'))  # fmt: skip
    with pytest.raises(build.BuildError, match=r"exit 2: .*image\.arch"):
        build.load_board(str(bad))
    with pytest.raises(build.BuildError, match=r"no board profile .*\(boards: qemu-arm64, "):
        build.load_board("no-such-board")


def test_each_architecture_boots_its_own_grub_on_its_own_serial_console():
    """x86_64: GRUB drives the 16550 UART itself; arm64: UEFI's console is the PL011 already
    (GRUB's serial terminal would be a second writer). The kernel's console is the board's."""
    x86, arm = build.load_board("qemu-x86_64"), build.load_board("qemu-arm64")
    assert (x86.target.grub_target, x86.target.efi_binary) == ("x86_64-efi", "BOOTX64.EFI")
    assert (arm.target.grub_target, arm.target.efi_binary) == ("arm64-efi", "BOOTAA64.EFI")
    assert (x86.target.grub_package, arm.target.grub_package) == (
        "grub-efi-amd64-bin", "grub-efi-arm64-bin")  # fmt: skip
    x86_cfg, arm_cfg = build.grub_cfg(x86), build.grub_cfg(arm)
    assert "serial --unit=0 --speed=115200" in x86_cfg and "serial" in build.grub_modules(x86)
    assert "terminal_output serial console" in x86_cfg
    assert "serial" not in arm_cfg.split("CMDLINE")[0] and "serial" not in build.grub_modules(arm)
    assert "terminal_output console" in arm_cfg
    assert 'set CMDLINE="console=ttyS0,115200 ' in x86_cfg
    assert 'set CMDLINE="console=ttyAMA0,115200 ' in arm_cfg


def test_wheels_are_fetched_for_the_board_s_machine():
    assert "manylinux2014_aarch64" in build.wheel_platforms("aarch64")
    assert "manylinux_2_36_aarch64" in build.wheel_platforms("aarch64")  # bookworm's glibc
    assert "manylinux_2_37_aarch64" not in build.wheel_platforms("aarch64")
    assert all(p.endswith("_x86_64") for p in build.wheel_platforms("x86_64"))
    assert build.ARCHES["arm64"].wheel_machine == "aarch64"


def test_the_customize_hook_puts_the_console_and_the_profile_on_the_board_s_tty(tmp_path):
    """The overlay's console unit and its root-only udev rule name ttyS0; the hook writes the
    board's tty into both (and checks that it did), masks that tty's getty, and lays the
    firmware's profile-derived files on the root."""
    arm = build.load_board("qemu-arm64")
    text = build.customize_script(tmp_path, "R", tmp_path / "f.toml", tmp_path, False, arm)
    text = text.read_text()
    assert 'sed -i "s/ttyS0/"ttyAMA0"/g" "$root/usr/lib/systemd/system/nvr-console.service"' in text
    assert """grep -q '^KERNEL=="'ttyAMA0'", GROUP="root", MODE="0600"$'""" in text
    assert "systemctl mask serial-getty@ttyAMA0.service" in text
    assert re.search(rf'-m firmware\.hw\.boardfiles \\?\s+{re.escape(str(arm.profile))} "\$root"',
                     text), text  # fmt: skip
    assert "\ncompatible=nvr-pair-qemu-arm64\n" in (tmp_path / "system.conf").read_text()
    # The overlay's own files name ttyS0, which the hook rewrites.
    unit = (TOP / "rootfs/usr/lib/systemd/system/nvr-console.service").read_text()
    assert "TTYPath=/dev/ttyS0\n" in unit


def test_board_and_out_are_taken_before_or_after_the_command(tmp_path, monkeypatch):
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(build, "cmd_bundle", lambda a: seen.append((a.board.name, a.out)) or 0)
    assert build.main(["bundle", "--board", "qemu-arm64", "--version", "1"]) == 0
    assert build.main(["--board", "qemu-arm64", "--out", str(tmp_path), "bundle",
                       "--version", "1"]) == 0  # fmt: skip
    assert build.main(["bundle", "--version", "1"]) == 0
    assert seen == [
        ("qemu-arm64", str(TOP / "image" / "out" / "qemu-arm64")),
        ("qemu-arm64", str(tmp_path)),
        ("qemu-x86_64", str(TOP / "image" / "out" / "qemu-x86_64")),
    ]
    assert build.main(["bundle", "--board", "no-such-board", "--version", "1"]) == 1


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> dict[str, Path]:
    if MISSING:
        pytest.skip(f"missing {', '.join(MISSING)} (bash image/build.sh tools installs them)")
    d = tmp_path_factory.mktemp("signing")
    build.make_keys(d / "dev", f"nvr-pair {build.DEV_MARK}")
    build.make_keys(d / "vendor", "ACME NVR release")
    tree = d / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "nvr-release").write_text(build.release_text("9.9.9", "r", 0, "nvr-pair-a"))
    (tree / "payload").write_bytes(os.urandom(65536))  # RAUC wants more than 4 KiB
    squashfs = d / "rootfs.squashfs"
    build.squash(tree, squashfs, 0, "gzip")
    out = d / "out"
    out.mkdir()
    bundle = build.build_bundle(d / "work", out, squashfs, "9.9.9", d / "dev", "b", "nvr-pair-a")
    other = build.build_bundle(d / "work", out, squashfs, "9.9.9", d / "dev", "o", "nvr-pair-o")
    return {"dir": d, "bundle": bundle, "other": other}


def rauc_info(bundle: Path, keyring: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rauc", "info", "--keyring", str(keyring), str(bundle)], capture_output=True, text=True
    )


@needs_tools
def test_bundle_verifies_against_its_own_ca_only(signed):
    d, bundle = signed["dir"], signed["bundle"]
    ok = rauc_info(bundle, d / "dev" / "ca.cert.pem")
    assert ok.returncode == 0, ok.stderr
    assert "'nvr-pair-a'" in ok.stdout and "9.9.9" in ok.stdout
    other = rauc_info(bundle, d / "vendor" / "ca.cert.pem")
    assert other.returncode != 0
    assert "signature" in (other.stderr + other.stdout).lower()


@needs_tools
def test_a_bundle_names_the_board_it_was_made_for(signed):
    """The manifest's compatible is the board's: the same root made for another board carries
    that board's name, which RAUC on this one refuses (booted: tests/test_image.py)."""
    d = signed["dir"]
    ok = rauc_info(signed["other"], d / "dev" / "ca.cert.pem")
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"^Compatible:\s+'nvr-pair-o'$", ok.stdout, re.M), ok.stdout


@needs_tools
def test_damaged_bundle_is_refused(signed, tmp_path):
    d, bundle = signed["dir"], signed["bundle"]
    damaged = tmp_path / "damaged.raucb"
    data = bytearray(bundle.read_bytes())
    data[-200] ^= 0xFF  # inside the signature block at the end
    damaged.write_bytes(bytes(data))
    bad = rauc_info(damaged, d / "dev" / "ca.cert.pem")
    assert bad.returncode != 0
    truncated = tmp_path / "truncated.raucb"
    truncated.write_bytes(bundle.read_bytes()[: len(data) // 2])
    assert rauc_info(truncated, d / "dev" / "ca.cert.pem").returncode != 0


@needs_tools
def test_release_build_refuses_development_keys(signed):
    d = signed["dir"]
    with pytest.raises(build.BuildError, match="development key"):
        build.check_release_keys(d / "dev")
    build.check_release_keys(d / "vendor")  # a vendor's own keys pass


def test_the_image_keeps_time_with_chrony_and_only_chrony():
    """chrony is installed and enabled, timesyncd stays masked (two time services fight), and
    chrony waits for /data, where its sources and drift file are."""
    assert "chrony" in build.PACKAGES
    text = inspect.getsource(build.customize_script)
    enable = text.split("systemctl enable", 1)[1].split("\nchroot", 1)[0]
    mask = text.split("systemctl mask", 1)[1].split("\n:", 1)[0]
    assert "chrony.service" in enable and "systemd-timesyncd.service" in mask
    dropin = (TOP / "rootfs/usr/lib/systemd/system/chrony.service.d/nvr.conf").read_text()
    assert "RequiresMountsFor=/data" in dropin and "After=nvr-data-layout.service" in dropin


def test_the_root_s_byte_code_is_not_checked_against_its_sources(tmp_path):
    """A checked-hash .pyc (as pip and py3compile write it under SOURCE_DATE_EPOCH) becomes
    unchecked: Python then loads it without reading its source, which a changed source shows."""
    import py_compile

    pkg = tmp_path / "root" / "opt" / "nvr" / "site" / "mod_unchecked.py"
    pkg.parent.mkdir(parents=True)
    pkg.write_text("WHAT = 'built'\n")
    pyc = Path(
        py_compile.compile(str(pkg), invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    )
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == build.PYC_CHECKED_HASH
    other = tmp_path / "root" / "usr" / "lib" / "x.pyc"  # not in a __pycache__: left alone
    other.parent.mkdir(parents=True)
    other.write_bytes(pyc.read_bytes())
    assert build.unchecked_bytecode(tmp_path / "root") == 1
    assert build.unchecked_bytecode(tmp_path / "root") == 0  # once
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == build.PYC_UNCHECKED_HASH
    assert other.read_bytes()[4:8] == (build.PYC_CHECKED_HASH).to_bytes(4, "little")
    pkg.write_text("WHAT = 'edited'\n")  # a checked .pyc would be compiled anew from this
    code = "import mod_unchecked; print(mod_unchecked.WHAT)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=pkg.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.stdout.strip() == "built", done.stderr
