"""Asking the running firmware over its own API, as `nvr status` and the installer console do."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from firmware.status import pair_settings_line
from firmware.statustext import PAIR_HOWTO, UNPAIRED_HINT, role_line, vip_line


def api_base(config: Path, url: str | None = None) -> str:
    """url, else the config's API port on loopback (ConfigError if the config is bad)."""
    if url:
        return url.rstrip("/")
    from firmware.config import load_config  # pydantic: only when the config is read

    return f"http://127.0.0.1:{load_config(config).api.listen_port}"


def fetch_status(base: str, timeout: float = 5.0) -> dict:
    """GET /api/v1/status; OSError when the firmware does not answer."""
    try:
        with urllib.request.urlopen(base + "/api/v1/status", timeout=timeout) as r:
            return json.load(r)
    except urllib.error.URLError as e:
        raise OSError(f"the firmware does not answer at {base}: {e.reason}") from None


def capacity_line(cap: dict | None) -> str:
    """How many days the storage holds at the cameras' measured rates, against retention."""
    if not cap or cap.get("days") is None:
        return "retention: not measured yet (after a minute of each camera's footage)"
    short = cap["days"] < cap["retention_days"]
    return (
        f"retention: the storage holds {cap['days']:.1f} days at "
        f"{cap['bytes_per_day'] / 1e9:.1f} GB/day; configured {cap['retention_days']:g} days"
        + (" (SHORT)" if short else "")
    )


def status_lines(st: dict) -> list[str]:
    """The status an installer reads on the console."""
    out = [f"{role_line(st['board'], st['role'])}  version {st.get('version', '?')}"]
    if st["role"] == "unpaired":
        out.append(f"{UNPAIRED_HINT}; {PAIR_HOWTO}")
    elif st.get("pair_fingerprint"):
        out.append(f"pair key fingerprint {st['pair_fingerprint']} (the same on both boards)")
    if st.get("virtual_ip"):
        fo = st.get("failover") or {}
        out.append(
            f"{vip_line(st['virtual_ip'], bool(fo.get('vip_held')))}"
            f", epoch {st['epoch']}, priority {fo.get('effective_priority')}"
            f"/{fo.get('priority')}, health {', '.join(fo.get('health') or []) or 'ok'}"
        )
        peer = st.get("peer")
        if peer:
            paths = ", ".join(f"{k} {v:.1f} s ago" for k, v in peer["paths"].items())
            out.append(f"peer {peer['board']}: {peer['role']}, priority {peer['priority']}, "
                       f"heard on {paths}")  # fmt: skip
        else:
            out.append("peer: not heard")
        if st.get("pair_settings"):
            out.append(pair_settings_line(st["pair_settings"]))
    disk = st.get("disk") or {}
    if disk:
        out.append(
            f"data disk: {disk['free_bytes'] / 1e9:.2f} GB free of "
            f"{disk['total_bytes'] / 1e9:.2f} GB"
        )
        out.append(capacity_line(disk.get("capacity")))
        locks = disk.get("locks") or {}
        if locks.get("active"):
            out.append(
                f"evidence locks: {locks['active']} active, holding {locks['held_segments']} "
                f"segments, {locks['held_bytes'] / 1e9:.2f} GB from retention (nvr locks)"
            )
    if st.get("evidence"):
        out.append(evidence_line(st["evidence"]))
    if st.get("archive"):
        out.append(archive_line(st["archive"]))
    for cam in st["cameras"]:
        state = "recording" if cam["recording"] else "NOT recording"
        out.append(f"  camera {cam['name']}: {state}, last frame {cam['last_frame_at']}")
    for a in st["alerts"]:
        out.append(f"  ALERT [{a['severity']}] {a['id']}: {a['text']} (since {a['since']})")
    return out


def evidence_line(ev: dict) -> str:
    """The evidence log in one line: its size, how far the peer cosigned it, both keys (what a
    person compares with the fingerprints an export's verifier prints)."""
    signed = ev.get("signed") or {}
    cosigned = ev.get("cosigned") or {}
    witnessed = (f"cosigned by the peer up to {cosigned['size']} ({cosigned.get('at')})"
                 if cosigned else "not cosigned by a peer")  # fmt: skip
    line = (f"evidence log: {ev['size']} entries, signed up to {signed.get('size', 0)}, "
            f"{witnessed}; key {ev['key']}")  # fmt: skip
    if ev.get("peer_key"):
        line += f", peer's key {ev['peer_key']}"
    if ev.get("refused") or ev.get("refused_by_peer"):
        line += f"; REFUSED: {ev.get('refused') or ev.get('refused_by_peer')}"
    return line


def archive_line(ar: dict) -> str:
    """The archive uploader in one line: where, how far behind, what went up, the last error
    (scrubbed of credentials by the uploader)."""
    where = f"archive {ar['bucket']}/{ar['prefix']}"
    if not ar.get("uploading"):
        line = f"{where}: not uploading (the active board uploads)"
    else:
        line = f"{where}: {ar['lag_seconds']:.0f} s behind"
    line += f", {ar['uploaded']} segments ({ar['bytes'] / 1e9:.2f} GB) uploaded"
    if ar.get("failures"):
        line += f", {ar['failures']} failures, last: {ar.get('last_error') or '?'}"
    return line
