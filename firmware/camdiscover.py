"""Finding ONVIF cameras on the LAN for the installer: a WS-Discovery Probe (2005/04, SOAP 1.2
over UDP, as ONVIF uses it) for `dn:NetworkVideoTransmitter`, sent to 239.255.255.250:3702 on
every interface, and the ProbeMatch answers collected for a bounded time.

Every answer comes from whoever is on the LAN, so it is decoded at the edge into `Camera`
(plain, short, printable ASCII) or dropped: too long, not XML, a DOCTYPE (entity tricks), the
wrong namespaces or action, an answer to somebody else's probe, no video transmitter type, the
same device twice. Nothing here asks a camera for credentials or stream details: the RTSP URL
is a guess (`rtsp://ADDRESS:554/`, the usual port) that the installer completes or corrects,
and the probe of firmware.camprobe then shows what it delivers.

`Search` is the sans-IO core (datagrams and `now` in; probes to send, the next deadline and
the cameras out); `discover()` is its socket adapter."""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import struct
import sys
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree as ET

GROUP = ("239.255.255.250", 3702)
WINDOW_S = 3.0
"""How long answers are collected (ONVIF devices answer within about a second)."""
RESEND_S = (0.0, 0.7, 1.5)
"""When the probe is sent, seconds after the start: UDP may lose one (same MessageID each)."""
MAX_DATAGRAM = 32 * 1024
"""Longer answers are dropped unread; real ProbeMatches are a few kB."""
MAX_CAMERAS = 64
MAX_MATCHES_PER_DATAGRAM = 8
MAX_TEXT = 40
"""Longest name or hardware shown (one line of an 80-column console per camera)."""
RTSP_PORT = 554

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDR = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_DISC = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"
ACTION_PROBE = f"{NS_DISC}/Probe"
ACTION_MATCHES = f"{NS_DISC}/ProbeMatches"
NVT = "NetworkVideoTransmitter"
ONVIF_SCOPE = "onvif://www.onvif.org/"

_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class DiscoveryError(Exception):
    """No probe could be sent (no interface up with an address)."""


@dataclass(frozen=True)
class Camera:
    """One device that answered: every text field is printable ASCII, at most MAX_TEXT long
    (the endpoint and XAddrs up to 200)."""

    endpoint: str
    """Its WS-Addressing endpoint (urn:uuid:...): the same device answering twice is one."""
    address: str
    """The IPv4 address the answer came from (what the installer sees and the URL uses)."""
    name: str
    hardware: str
    xaddrs: tuple[str, ...] = ()
    """Its ONVIF device service URLs, as it claims them (kept, not used for the URL)."""

    @property
    def rtsp_guess(self) -> str:
        return f"rtsp://{self.address}:{RTSP_PORT}/"

    def line(self) -> str:
        """Name, hardware, address: within 73 columns (a numbered list fits 80)."""
        name, hardware = (self.name or "(no name)")[:30], (self.hardware or "(hardware?)")[:24]
        return f"{name}  {hardware}  {self.address}"

    def name_guess(self) -> str:
        """A camera name the config accepts (letters, digits, '-', '_'), or '' for none."""
        return re.sub(r"[^A-Za-z0-9_-]+", "-", self.name).strip("-_")[:63]


def probe_message(message_id: str) -> bytes:
    """The Probe for ONVIF video transmitters; `message_id` is a urn:uuid."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP12}" xmlns:a="{NS_ADDR}" xmlns:d="{NS_DISC}"'
        f' xmlns:dn="{NS_DN}"><s:Header>'
        f'<a:Action s:mustUnderstand="1">{ACTION_PROBE}</a:Action>'
        f"<a:MessageID>{message_id}</a:MessageID>"
        f"<a:ReplyTo><a:Address>{NS_ADDR}/role/anonymous</a:Address></a:ReplyTo>"
        '<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>'
        f"</s:Header><s:Body><d:Probe><d:Types>dn:{NVT}</d:Types></d:Probe></s:Body>"
        "</s:Envelope>"
    ).encode()


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """Percent-decoded, printable ASCII only, spaces collapsed, at most `limit` characters:
    a camera's words never move the console's cursor or hide in escape sequences."""
    text = unicodedata.normalize("NFKD", unquote(text, errors="replace"))
    return " ".join("".join(map(_ascii, text)).split())[:limit]


def _ascii(c: str) -> str:
    """'Caméra' reads 'Camera' (accents dropped), other letters '?', control characters ' '."""
    if " " <= c <= "~":
        return c
    if unicodedata.combining(c):
        return ""
    return "?" if c.isprintable() else " "


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def decode(data: bytes, source: str, message_id: str) -> list[Camera]:
    """The cameras in one datagram that answers our probe `message_id`; [] for anything else
    (never raises on what arrives)."""
    if len(data) > MAX_DATAGRAM or not _IPV4.match(source):
        return []
    try:
        if _DTD.search(data.decode("utf-8")):
            return []  # entity definitions (expansion bombs) have no place in an answer
        root = ET.fromstring(data)
    except (UnicodeError, LookupError, ET.ParseError, ValueError):  # LookupError: a bad encoding=
        return []  # not UTF-8 (so no DTD hides in another encoding), not XML
    if root.tag != f"{{{NS_SOAP12}}}Envelope":
        return []
    header = root.find(f"{{{NS_SOAP12}}}Header")
    body = root.find(f"{{{NS_SOAP12}}}Body")
    if header is None or body is None:
        return []
    if _text(header.find(f"{{{NS_ADDR}}}Action")) != ACTION_MATCHES:
        return []
    if _text(header.find(f"{{{NS_ADDR}}}RelatesTo")) != message_id:
        return []  # an answer to another probe (or a replay)
    matches = body.find(f"{{{NS_DISC}}}ProbeMatches")
    if matches is None:
        return []
    found = []
    for m in matches.findall(f"{{{NS_DISC}}}ProbeMatch")[:MAX_MATCHES_PER_DATAGRAM]:
        cam = _camera(m, source)
        if cam is not None:
            found.append(cam)
    return found


def _camera(m: ET.Element, source: str) -> Camera | None:
    endpoint = clean(_text(m.find(f"{{{NS_ADDR}}}EndpointReference/{{{NS_ADDR}}}Address")), 200)
    types = _text(m.find(f"{{{NS_DISC}}}Types")).split()
    if not endpoint or not any(t.rpartition(":")[2] == NVT for t in types):
        return None
    name = hardware = ""
    for scope in _text(m.find(f"{{{NS_DISC}}}Scopes")).split():
        if not scope.lower().startswith(ONVIF_SCOPE):
            continue
        kind, _, value = scope[len(ONVIF_SCOPE) :].partition("/")
        if kind.lower() == "name" and not name:
            name = clean(value)
        elif kind.lower() == "hardware" and not hardware:
            hardware = clean(value)
    xaddrs = []
    for x in _text(m.find(f"{{{NS_DISC}}}XAddrs")).split()[:4]:
        try:
            parts = urlsplit(x)
        except ValueError:
            continue
        if parts.scheme in ("http", "https") and parts.hostname:
            xaddrs.append(clean(x, 200))
    return Camera(endpoint, source, name, hardware, tuple(xaddrs))


@dataclass
class Search:
    """One discovery round: probes at RESEND_S, answers until `now + window_s`, at most
    MAX_CAMERAS devices, each once (the first answer of an endpoint counts)."""

    message_id: str
    now: float
    window_s: float = WINDOW_S
    found: dict[str, Camera] = field(default_factory=dict)
    dropped: int = 0
    """Datagrams that were not an answer to this probe (dropped unread or refused)."""

    def __post_init__(self) -> None:
        self.ends = self.now + self.window_s
        self._sends = [self.now + d for d in RESEND_S if d < self.window_s]

    def due(self, now: float) -> list[bytes]:
        """The probes to send now (the repeats carry the same MessageID)."""
        n = sum(1 for t in self._sends if t <= now)
        self._sends = self._sends[n:]
        return [probe_message(self.message_id)] * min(n, 1)

    def feed(self, data: bytes, source: str) -> list[Camera]:
        """The cameras new in this datagram."""
        cams = decode(data, source, self.message_id)
        if not cams:
            self.dropped += 1
        new = []
        for cam in cams:
            if cam.endpoint not in self.found and len(self.found) < MAX_CAMERAS:
                self.found[cam.endpoint] = cam
                new.append(cam)
        return new

    def done(self, now: float) -> bool:
        return now >= self.ends or len(self.found) >= MAX_CAMERAS

    def deadline(self) -> float:
        return min([self.ends, *self._sends[:1]])

    def cameras(self) -> list[Camera]:
        """By address (numerically), then name."""
        key = lambda c: (tuple(int(p) for p in c.address.split(".")), c.name)  # noqa: E731
        return sorted(self.found.values(), key=key)


def _interfaces(names: Sequence[str] | None) -> list[int]:
    have = socket.if_nameindex()
    if names is None:
        return [i for i, name in have if name != "lo"]
    return [i for i, name in have if name in names]


def discover(
    window_s: float = WINDOW_S,
    interfaces: Sequence[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Camera]:
    """Probe on `interfaces` (None: every one but loopback; the board's sync link leads only
    to the peer, where nothing answers) and collect the answers for `window_s`.
    DiscoveryError when the probe could go out on none."""
    search = Search(uuid.uuid4().urn, clock(), window_s)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.bind(("0.0.0.0", 0))
        sent_once = False
        while not search.done(now := clock()):
            for payload in search.due(now):
                sent = 0
                for index in _interfaces(interfaces):
                    mreqn = struct.pack("4s4si", bytes(4), bytes(4), index)
                    try:
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                        sock.sendto(payload, GROUP)
                        sent += 1
                    except OSError:
                        continue  # down, no address, no multicast: the others may do
                if not sent and not sent_once:
                    raise DiscoveryError("no network interface could send the probe")
                sent_once = True
            ready, _, _ = select.select([sock], [], [], max(0.0, search.deadline() - clock()))
            if ready:
                try:
                    data, (source, _port) = sock.recvfrom(65535)
                except OSError:
                    continue
                search.feed(data, source)
    return search.cameras()


def main(argv: list[str] | None = None) -> int:
    """`python -m firmware.camdiscover`: one JSON line per camera found."""
    p = argparse.ArgumentParser(prog="python -m firmware.camdiscover", description=__doc__)
    p.add_argument("--window", type=float, default=WINDOW_S, help="seconds to collect answers")
    p.add_argument("--interface", action="append", help="probe only here (repeatable)")
    args = p.parse_args(argv)
    try:
        cams = discover(args.window, args.interface)
    except (DiscoveryError, OSError) as e:
        print(f"camdiscover: {e}", file=sys.stderr)
        return 1
    for cam in cams:
        print(json.dumps({**asdict(cam), "rtsp_guess": cam.rtsp_guess}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
