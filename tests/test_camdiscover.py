"""ONVIF WS-Discovery of cameras (firmware.camdiscover): the decoder against what the LAN may
send, the collecting core, and the firmware finding a third-party responder (the `wsdiscovery`
package's publisher) and the simulator's inside namespaces of a rig."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware.camdiscover import (
    MAX_CAMERAS,
    MAX_DATAGRAM,
    MAX_MATCHES_PER_DATAGRAM,
    RESEND_S,
    Camera,
    Search,
    decode,
    probe_message,
)
from hil.camera.wsd import probe_match
from hil.rig import ADDRESSES, PairRig

ROOT = Path(__file__).resolve().parent.parent
MID = "urn:uuid:11111111-2222-3333-4444-555555555555"
SRC = "192.0.2.31"


def answer(
    name: str = "Door Cam", relates_to: str = MID, endpoint: str = "urn:uuid:cam-1"
) -> bytes:
    return probe_match(relates_to, endpoint, SRC, name, "CamSim-1")


def test_a_camera_answer_is_decoded() -> None:
    [cam] = decode(answer(), SRC, MID)
    assert cam == Camera("urn:uuid:cam-1", SRC, "Door Cam", "CamSim-1",
                         (f"http://{SRC}/onvif/device_service",))  # fmt: skip
    assert cam.rtsp_guess == "rtsp://192.0.2.31:554/"
    assert cam.name_guess() == "Door-Cam"
    assert cam.line() == "Door Cam  CamSim-1  192.0.2.31"


def test_our_probe_reads_as_an_nvt_probe_to_a_third_party() -> None:
    from wsdiscovery.message import parseSOAPMessage

    env = parseSOAPMessage(probe_message(MID), "192.0.2.11")
    assert env.getAction().endswith("/discovery/Probe") and env.getMessageId() == MID
    [t] = env.getTypes()
    assert (t.getNamespace(), t.getLocalname()) == (
        "http://www.onvif.org/ver10/network/wsdl",
        "NetworkVideoTransmitter",
    )


BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(
        b'<!ENTITY %c "&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;">' % ((c, c - 1) + (c - 1,) * 9)
        for c in range(ord("b"), ord("k"))
    )
    + b"]><l>&j;</l>"
)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\xff" * 100,
        b"<not xml",
        BOMB,
        answer().replace(b"<wsd:Types>", b"<!DOCTYPE x><wsd:Types>"),
        answer().decode().encode("utf-16"),  # a DTD could hide in another encoding
        answer() + b" " * MAX_DATAGRAM,  # oversized
        answer().replace(
            b"http://www.w3.org/2003/05/soap-envelope", b"http://schemas.xmlsoap.org/soap/envelope/"
        ),
        answer().replace(b"ws/2005/04/discovery", b"ws/2009/01/discovery"),  # other version
        answer().replace(b"ProbeMatches</wsa:Action>", b"Hello</wsa:Action>"),
        answer(relates_to="urn:uuid:somebody-elses-probe"),
        answer().replace(b"dn:NetworkVideoTransmitter tds:Device", b"wprt:PrinterServiceType"),
        answer(endpoint=""),
        answer()
        .replace(b"<wsa:RelatesTo>", b"<wsa:Nope>")
        .replace(b"</wsa:RelatesTo>", b"</wsa:Nope>"),
    ],
    ids=[
        "empty",
        "binary",
        "broken",
        "bomb",
        "doctype",
        "utf16",
        "huge",
        "soap11",
        "wsd2009",
        "hello",
        "other-probe",
        "printer",
        "no-endpoint",
        "no-relates-to",
    ],
)
def test_hostile_or_foreign_datagrams_are_dropped(data: bytes) -> None:
    started = time.monotonic()
    assert decode(data, SRC, MID) == []
    assert time.monotonic() - started < 1.0  # no expansion, no quadratic blow-up


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert decode(data, SRC, MID) == []


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(answer()) - 1), st.binary(min_size=1, max_size=8))
@example(31, b"-")  # encoding="U-F-8": ElementTree's LookupError, once let through
def test_a_mangled_answer_never_raises(at: int, junk: bytes) -> None:
    data = answer()
    for cam in decode(data[:at] + junk + data[at + len(junk) :], SRC, MID):
        assert cam.address == SRC and cam.name.isascii() and cam.name.isprintable()


def test_words_from_the_lan_cannot_steer_the_console() -> None:
    evil = "\x1b[2J\x1b]0;pwn\x07Cam%0d%0a%1b[31mRed" + "x" * 500
    [cam] = decode(answer(name=evil), SRC, MID)
    assert all(" " <= c <= "~" for c in cam.name) and len(cam.name) <= 40
    assert len(f"64. {Camera('e', '192.0.2.200', cam.name, cam.name).line()}") < 80
    assert "\x1b" not in cam.line() and "Cam" in cam.name
    assert decode(answer(), "not-an-ip", MID) == []
    [cam] = decode(answer(name="Caméra Süd 東"), SRC, MID)
    assert (cam.name, cam.name_guess()) == ("Camera Sud ?", "Camera-Sud")


def test_one_datagram_gives_a_bounded_number_of_cameras() -> None:
    one = answer()
    start, end = one.index(b"<wsd:ProbeMatch>"), one.index(b"</wsd:ProbeMatches>")
    many = one[:start] + one[start:end] * 50 + one[end:]
    assert len(many) < MAX_DATAGRAM
    assert len(decode(many, SRC, MID)) == MAX_MATCHES_PER_DATAGRAM


def test_search_sends_repeats_counts_each_device_once_and_ends() -> None:
    s = Search(MID, now=100.0, window_s=3.0)
    assert s.due(100.0) == [probe_message(MID)] and s.due(100.0) == []
    assert s.deadline() == pytest.approx(100.0 + RESEND_S[1])
    assert s.due(100.0 + RESEND_S[1]) == [probe_message(MID)]
    assert len(s.feed(answer(), SRC)) == 1
    assert s.feed(answer(), SRC) == []  # the same device again (repeats of SOAP-over-UDP)
    assert s.feed(b"junk", SRC) == [] and s.dropped == 1
    assert not s.done(102.9) and s.done(103.0)
    assert [c.name for c in s.cameras()] == ["Door Cam"]


def test_search_stops_at_its_limit_of_devices() -> None:
    s = Search(MID, now=0.0)
    for i in range(MAX_CAMERAS + 5):
        s.feed(answer(endpoint=f"urn:uuid:cam-{i}"), f"192.0.2.{i % 250 + 1}")
    assert len(s.cameras()) == MAX_CAMERAS and s.done(0.0)
    assert [c.address for c in s.cameras()][:3] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]


# --- inside namespaces ---------------------------------------------------------------------

PUBLISHER = """
import sys
from wsdiscovery import QName, Scope
from wsdiscovery.publishing import ThreadedWSPublishing
p = ThreadedWSPublishing()
p.start()
p.publishService(
    [QName("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter", "dn")],
    [Scope("onvif://www.onvif.org/name/Garage%20Cam"),
     Scope("onvif://www.onvif.org/hardware/ThirdParty-9")],
    ["http://192.0.2.50:8080/onvif/device_service"])
print("ready", flush=True)
sys.stdin.read()  # until the test closes it
p.stop()
"""

HOSTILE = """
import socket, struct, sys
from hil.camera.wsd import probe_id, probe_match
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 3702))
for index, _ in socket.if_nameindex():
    try:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     struct.pack("4s4si", socket.inet_aton("239.255.255.250"), bytes(4), index))
    except OSError:
        pass
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    mid = probe_id(data)
    if mid is None:
        continue
    good = probe_match(mid, "urn:uuid:hostile", "192.0.2.12", "Evil\\x1b[2J", "X")
    for junk in (b"\\xff" * 60000, b"<x>" * 9000, good.replace(b"<wsd:Types>", b"<!DOCTYPE a>"),
                 probe_match("urn:uuid:other", "urn:uuid:h2", "192.0.2.12", "Other", "X"),
                 good, good, good):
        s.sendto(junk, peer)
"""


@pytest.fixture
def rig() -> Iterator[PairRig]:
    with PairRig() as r:
        yield r


def _started(rig: PairRig, host: str, script: str) -> subprocess.Popen:
    proc = rig.start(host, [sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)  # a deadline, not a sleep
    assert ready and proc.stdout.readline().strip() == "ready", f"{host}: did not start"
    return proc


def test_a_third_party_responder_and_a_hostile_one_on_the_lan(rig: PairRig) -> None:
    """The `wsdiscovery` package's publisher is found, once; a hostile responder's junk,
    oversized and duplicate answers cost nothing but its own (cleaned) entry."""
    _started(rig, "cli", PUBLISHER)
    _started(rig, "b", HOSTILE)
    cmd = [sys.executable, "-m", "firmware.camdiscover", "--window", "2", "--interface", "eth0"]
    out = rig.run("a", cmd, cwd=ROOT, timeout=20)
    assert out.returncode == 0, out.stderr
    found = [json.loads(line) for line in out.stdout.splitlines()]
    by_addr = {f["address"]: f for f in found}
    assert sorted(by_addr) == [ADDRESSES["b"]["lan"], ADDRESSES["cli"]["lan"]]
    assert len(found) == 2  # the publisher's repeats and the hostile's copies: once each
    third = by_addr[ADDRESSES["cli"]["lan"]]
    assert (third["name"], third["hardware"]) == ("Garage Cam", "ThirdParty-9")
    assert third["xaddrs"] == ["http://192.0.2.50:8080/onvif/device_service"]
    assert third["rtsp_guess"] == "rtsp://192.0.2.50:554/"
    assert by_addr[ADDRESSES["b"]["lan"]]["name"] == "Evil [2J"


def test_the_simulator_answers_only_when_asked_to(rig: PairRig) -> None:
    from hil.camera import CameraSim, StreamSpec

    cam_ns, spec = rig.ns("cam"), [StreamSpec("cam1", cheap=True)]
    cmd = [sys.executable, "-m", "firmware.camdiscover", "--window", "1"]
    with CameraSim(spec, bind=ADDRESSES["cam"]["lan"], netns=cam_ns):
        quiet = rig.run("a", cmd, cwd=ROOT, timeout=20)
    assert quiet.returncode == 0 and quiet.stdout == ""  # off by default
    with CameraSim(spec, bind=ADDRESSES["cam"]["lan"], netns=cam_ns, wsd=("Hall", "HW-2")):
        out = rig.run("a", cmd, cwd=ROOT, timeout=20)
    [cam] = [json.loads(line) for line in out.stdout.splitlines()]
    assert (cam["address"], cam["name"], cam["hardware"]) == ("192.0.2.31", "Hall", "HW-2")
    assert cam["xaddrs"] == ["http://192.0.2.31/onvif/device_service"]


def test_no_interface_to_probe_on_is_a_clear_error(rig: PairRig) -> None:
    rig.cable("a", "lan", False)
    rig.cable("a", "sync", False)
    out = rig.run("a", [sys.executable, "-m", "firmware.camdiscover", "--window", "1"], cwd=ROOT)
    assert out.returncode == 1 and "no network interface could send the probe" in out.stderr
