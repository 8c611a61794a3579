"""The image build's signing and release pieces, without building a root (seconds, not minutes).

The whole image is built and booted by tests/test_image.py; these check what must hold for
every bundle: it verifies against the CA that signed it and against no other, a damaged bundle
is refused, and a release build refuses development keys.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shlex
import shutil
import subprocess
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


def test_release_file_says_version_revision_and_build_date():
    text = build.release_text("1.2.3", "0123456789ab-dirty", 1_790_000_000)
    fields = dict(w.split("=", 1) for line in text.splitlines() for w in shlex.split(line))
    assert fields["NAME"] == "nvr-pair"
    assert fields["VERSION"] == "1.2.3"
    assert fields["GIT_REVISION"] == "0123456789ab-dirty"
    assert fields["BUILD_DATE"] == "2026-09-21T14:13:20Z"
    assert fields["COMPATIBLE"] == build.COMPATIBLE
    # A value with spaces or quotes stays one value.
    odd = build.release_text("1.0 beta 'x'", "r", 0)
    assert "VERSION=1.0 beta 'x'" in [w for ln in odd.splitlines() for w in shlex.split(ln)]


def test_boot_config_names_both_slots_by_partition_uuid():
    cfg = build.GRUB_CFG.replace("@A@", build.PART_UUIDS["rootfs-a"]).replace(
        "@B@", build.PART_UUIDS["rootfs-b"]
    )
    assert f"root=PARTUUID={build.PART_UUIDS['rootfs-a']} " in cfg and "rauc.slot=A" in cfg
    assert f"root=PARTUUID={build.PART_UUIDS['rootfs-b']} " in cfg and "rauc.slot=B" in cfg
    assert "save_env" in cfg and "load_env" in cfg
    gen = build.genimage_config(Path("."))
    for name, uuid in build.PART_UUIDS.items():
        assert f"partition {name} {{" in gen and uuid in gen
    assert "bootloader=grub" in build.SYSTEM_CONF and "bundle-formats=-plain" in build.SYSTEM_CONF


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> dict[str, Path]:
    if MISSING:
        pytest.skip(f"missing {', '.join(MISSING)} (bash image/build.sh tools installs them)")
    d = tmp_path_factory.mktemp("signing")
    build.make_keys(d / "dev", f"nvr-pair {build.DEV_MARK}")
    build.make_keys(d / "vendor", "ACME NVR release")
    tree = d / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "nvr-release").write_text(build.release_text("9.9.9", "r", 0))
    (tree / "payload").write_bytes(os.urandom(65536))  # RAUC wants more than 4 KiB
    squashfs = d / "rootfs.squashfs"
    build.squash(tree, squashfs, 0, "gzip")
    out = d / "out"
    out.mkdir()
    bundle = build.build_bundle(d / "work", out, squashfs, "9.9.9", d / "dev", "b")
    return {"dir": d, "bundle": bundle}


def rauc_info(bundle: Path, keyring: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rauc", "info", "--keyring", str(keyring), str(bundle)], capture_output=True, text=True
    )


@needs_tools
def test_bundle_verifies_against_its_own_ca_only(signed):
    d, bundle = signed["dir"], signed["bundle"]
    ok = rauc_info(bundle, d / "dev" / "ca.cert.pem")
    assert ok.returncode == 0, ok.stderr
    assert build.COMPATIBLE in ok.stdout and "9.9.9" in ok.stdout
    other = rauc_info(bundle, d / "vendor" / "ca.cert.pem")
    assert other.returncode != 0
    assert "signature" in (other.stderr + other.stdout).lower()


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
