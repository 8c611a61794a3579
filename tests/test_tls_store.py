"""The firmware's TLS trust on the image: nvr.service points OpenSSL at the system's CAs by
their hashed directory and at no bundle file (the bundle, parsed whole when the HTTP library
makes its TLS contexts at import, cost more than a second of every start under emulation).
A peer signed by a CA in that directory is still verified, and one signed by no CA there is
still refused."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
SERVICE = TOP / "rootfs" / "usr" / "lib" / "systemd" / "system" / "nvr.service"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")

CLIENT = """
import socket, ssl, sys
ctx = ssl.create_default_context()
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        print("verified", t.version())
"""


def service_environment() -> dict[str, str]:
    env = {}
    for line in SERVICE.read_text().splitlines():
        if line.startswith("Environment="):
            env |= dict(word.split("=", 1) for word in line.removeprefix("Environment=").split())
    return env


def openssl(*args: str | Path) -> str:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    return done.stdout


EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def make_ca_and_server(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 that it signed."""
    ca, ca_key, csr = d / "ca.pem", d / "ca.key", d / "server.csr"
    cert, key = d / "server.pem", d / "server.key"
    openssl("req", "-x509", *EC, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=CA")
    openssl("req", *EC, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", d / "ext")  # fmt: skip
    return ca, cert, key


def hashed_dir(d: Path, *cas: Path) -> Path:
    """A directory as update-ca-certificates leaves /etc/ssl/certs: <subject hash>.0 links."""
    d.mkdir()
    for ca in cas:
        (d / f"{openssl('x509', '-hash', '-noout', '-in', ca).strip()}.0").symlink_to(ca)
    return d


def serve_tls(cert: Path, key: Path, handshakes: int) -> tuple[int, threading.Thread]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        with listener:
            for _ in range(handshakes):
                conn, _ = listener.accept()
                try:
                    with ctx.wrap_socket(conn, server_side=True):
                        pass
                except (ssl.SSLError, OSError):
                    conn.close()  # the client refused us: its side says why

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return listener.getsockname()[1], t


def test_the_firmware_verifies_tls_peers_by_the_ca_directory_without_the_bundle(tmp_path):
    env = service_environment()
    assert env["SSL_CERT_DIR"] == "/etc/ssl/certs"  # where Debian's ca-certificates links them
    assert env["SSL_CERT_FILE"] == "/dev/null"
    ca, cert, key = make_ca_and_server(tmp_path)
    good, empty = hashed_dir(tmp_path / "certs", ca), hashed_dir(tmp_path / "none")
    port, server = serve_tls(cert, key, handshakes=2)
    runs = {}
    for name, certs in (("trusted", good), ("untrusted", empty)):
        runs[name] = subprocess.run(
            [sys.executable, "-c", CLIENT, str(port)], capture_output=True, text=True, timeout=60,
            env={"SSL_CERT_FILE": env["SSL_CERT_FILE"], "SSL_CERT_DIR": str(certs)},
        )  # fmt: skip
    server.join(30)
    assert runs["trusted"].returncode == 0 and "verified TLS" in runs["trusted"].stdout, runs
    assert runs["untrusted"].returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in runs["untrusted"].stderr, runs["untrusted"].stderr
    # and no bundle is read: the store starts empty, filled from the directory on demand
    code = "import ssl; print(ssl.create_default_context().cert_store_stats())"
    bare = {"SSL_CERT_FILE": env["SSL_CERT_FILE"]}
    stats = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, env=bare).stdout  # fmt: skip
    assert "'x509': 0" in stats, stats
