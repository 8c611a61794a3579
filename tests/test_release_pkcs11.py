"""A release signed by a key that never leaves its token: the build signs bundles through PKCS#11
(docs/VENDOR.md). SoftHSM stands in for the vendor's token or HSM; RAUC reaches it through
OpenSSL's pkcs11 engine, as it would a real one."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
ENGINES = list(Path("/usr/lib").glob("*/engines-3/pkcs11.so"))
MISSING = [t for t in ("rauc", "mksquashfs", "openssl", "softhsm2-util") if not shutil.which(t)]
MISSING += [] if MODULE.exists() else [f"{MODULE} (softhsm2)"]
MISSING += [] if ENGINES else ["OpenSSL's pkcs11 engine (libengine-pkcs11-openssl)"]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"missing {', '.join(MISSING)} (bash image/build.sh tools installs them)"
)
PIN = "4711"
KEY_URI = "pkcs11:token=acme-release;object=signing"

spec = importlib.util.spec_from_file_location("image_build_pkcs11", TOP / "image" / "build.py")
assert spec is not None and spec.loader is not None
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A token holding the signing key, and a keys directory with only the certificates."""
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    keys = tmp_path / "keys"
    build.make_keys(keys, "ACME NVR release")
    util = ["softhsm2-util", "--pin", PIN]
    subprocess.run([*util[:1], "--init-token", "--free", "--label", "acme-release", "--pin", PIN,
                    "--so-pin", "123456"], check=True, capture_output=True)  # fmt: skip
    p8 = tmp_path / "signing.p8"
    subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(keys / "signing.key.pem"),
                    "-out", str(p8)], check=True)  # fmt: skip
    subprocess.run([*util, "--import", str(p8), "--token", "acme-release", "--label", "signing",
                    "--id", "01"], check=True, capture_output=True)  # fmt: skip
    for secret in (p8, keys / "signing.key.pem", keys / "ca.key.pem"):
        secret.unlink()  # the CA's key is offline, the signing key only in the token
    monkeypatch.setenv("RAUC_PKCS11_MODULE", str(MODULE))
    return keys


def _root(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "payload").write_bytes(os.urandom(300_000))  # verity: more than 4 KiB, compressed
    squashfs = tmp_path / "rootfs.squashfs"
    subprocess.run(["mksquashfs", str(tree), str(squashfs), "-quiet", "-no-progress"], check=True)
    return squashfs


def test_a_bundle_signed_in_the_token_verifies_against_the_release_ca(tmp_path, token, monkeypatch):
    monkeypatch.setenv("RAUC_PKCS11_PIN", PIN)
    out = tmp_path / "out"
    out.mkdir()
    build.check_release_keys(token)  # release certificates, not development ones
    bundle = build.build_bundle(tmp_path, out, _root(tmp_path), "1.2.0", token, "release",
                                "acme-vision-acme-nvr4", signing_key=KEY_URI)  # fmt: skip
    info = subprocess.run(["rauc", "info", "--keyring", str(token / "ca.cert.pem"), str(bundle)],
                          capture_output=True, text=True)  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert "ACME NVR release" in info.stderr + info.stdout
    assert "'acme-vision-acme-nvr4'" in info.stdout
    assert not list(token.glob("*.key.pem"))  # no private key on the build machine's disk


def test_a_wrong_pin_fails_the_build_and_leaves_no_bundle(tmp_path, token, monkeypatch):
    monkeypatch.setenv("RAUC_PKCS11_PIN", "0000")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(build.BuildError, match="PIN incorrect"):
        build.build_bundle(tmp_path, out, _root(tmp_path), "1.2.0", token, "release",
                           "acme-vision-acme-nvr4", signing_key=KEY_URI)  # fmt: skip
    assert not list(out.glob("*.raucb"))


def test_without_a_key_file_or_a_token_the_build_says_which_it_needs(tmp_path, token):
    with pytest.raises(build.BuildError, match=r"signing\.key\.pem.*--signing-key"):
        build.signing_key_of(token, None)
    assert build.signing_key_of(token, KEY_URI) == KEY_URI
