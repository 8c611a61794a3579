"""The simulator's WS-Discovery responder (off unless `--wsd`): it answers a Probe on
239.255.255.250:3702 that asks for ONVIF video transmitters (or for any type) with a
ProbeMatch, unicast to the prober, as an ONVIF camera does (WS-Discovery 2005/04, SOAP 1.2).

The answer names the camera by ONVIF scopes (onvif://www.onvif.org/name/..., /hardware/...)
and gives as XAddrs the ONVIF device service URL http://ADDRESS/onvif/device_service; the
simulator serves no ONVIF service there (nothing of it is needed to find the camera: the
installer completes the RTSP URL). Standard library only: this is a counterpart written apart
from the firmware's decoder, not a copy of it."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
import uuid
from urllib.parse import quote
from xml.etree import ElementTree as ET

GROUP, PORT = "239.255.255.250", 3702
NS_S = "http://www.w3.org/2003/05/soap-envelope"
NS_A = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_D = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"


def probe_id(data: bytes) -> str | None:
    """The MessageID of a Probe asking for video transmitters (or for anything), else None."""
    if len(data) > 16384 or b"<!" in data:
        return None
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    action = root.findtext(f"{{{NS_S}}}Header/{{{NS_A}}}Action", "").strip()
    mid = root.findtext(f"{{{NS_S}}}Header/{{{NS_A}}}MessageID", "").strip()
    probe = root.find(f"{{{NS_S}}}Body/{{{NS_D}}}Probe")
    if action != f"{NS_D}/Probe" or not mid or probe is None:
        return None
    types = probe.findtext(f"{{{NS_D}}}Types", "").split()
    if types and not any(t.rpartition(":")[2] == "NetworkVideoTransmitter" for t in types):
        return None
    return mid


def probe_match(relates_to: str, endpoint: str, address: str, name: str, hardware: str) -> bytes:
    scopes = " ".join(
        f"onvif://www.onvif.org/{s}"
        for s in (
            "type/video_encoder",
            "Profile/Streaming",
            f"name/{quote(name)}",
            f"hardware/{quote(hardware)}",
            "location/lab",
        )
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS_S}" xmlns:wsa="{NS_A}" xmlns:wsd="{NS_D}"'
        f' xmlns:dn="{NS_DN}" xmlns:tds="http://www.onvif.org/ver10/device/wsdl">'
        "<SOAP-ENV:Header>"
        f"<wsa:MessageID>{uuid.uuid4().urn}</wsa:MessageID>"
        f"<wsa:RelatesTo>{relates_to}</wsa:RelatesTo>"
        f"<wsa:To>{NS_A}/role/anonymous</wsa:To>"
        f"<wsa:Action>{NS_D}/ProbeMatches</wsa:Action>"
        "</SOAP-ENV:Header><SOAP-ENV:Body><wsd:ProbeMatches><wsd:ProbeMatch>"
        f"<wsa:EndpointReference><wsa:Address>{endpoint}</wsa:Address></wsa:EndpointReference>"
        "<wsd:Types>dn:NetworkVideoTransmitter tds:Device</wsd:Types>"
        f"<wsd:Scopes>{scopes}</wsd:Scopes>"
        f"<wsd:XAddrs>http://{address}/onvif/device_service</wsd:XAddrs>"
        "<wsd:MetadataVersion>1</wsd:MetadataVersion>"
        "</wsd:ProbeMatch></wsd:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


class Responder:
    """Listens in a thread of its own; `address` is the camera's (its RTSP bind address, or
    the one the prober reached when that is 0.0.0.0)."""

    def __init__(self, address: str, name: str, hardware: str) -> None:
        self.address, self.name, self.hardware = address, name, hardware
        self.endpoint = uuid.uuid4().urn
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("", PORT))
        joined = 0
        for index, _name in socket.if_nameindex():
            mreqn = struct.pack("4s4si", socket.inet_aton(GROUP), bytes(4), index)
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                joined += 1
        if not joined:
            self.sock.close()
            raise OSError(f"cannot join {GROUP} on any interface")
        self.thread = threading.Thread(target=self._run, name="wsd", daemon=True)
        self._stop = threading.Event()

    def start(self) -> Responder:
        self.thread.start()
        return self

    def _own_address(self, peer: str) -> str:
        if self.address not in ("", "0.0.0.0"):
            return self.address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer, PORT))
            return str(s.getsockname()[0])

    def _run(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                data, peer = b"", None
            if self._stop.is_set() or peer is None:
                return  # shut down: the simulator is stopping
            try:
                mid = probe_id(data)
                if mid is not None:
                    reply = probe_match(mid, self.endpoint, self._own_address(peer[0]),
                                        self.name, self.hardware)  # fmt: skip
                    self.sock.sendto(reply, peer)
            except Exception as exc:  # one bad probe must not end the responder
                print(f"camera-sim: wsd: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
