"""What the front panel shows: pure, from the board's status, cut to the display's size."""

from __future__ import annotations


def panel_lines(status: dict, columns: int, rows: int) -> list[str]:
    """Board and role first (what an installer looks for), then the VIP, cameras recording and
    the most severe alert; a 2-row display shows the alert in place of the VIP when there is one."""
    role = status.get("role", "?")
    vip = status.get("virtual_ip") or ""
    cams = status.get("cameras") or []
    recording = sum(1 for c in cams if c.get("recording"))
    alerts = status.get("alerts") or []
    top = alerts[0] if alerts else None
    alert_line = f"! {top['id']}" if top else "no alerts"
    lines = [
        f"{status.get('board', '?')} {role}",
        f"cams {recording}/{len(cams)} rec",
        vip or "no VIP",
        alert_line,
    ]
    if rows == 2:
        lines = [lines[0] + f" {recording}/{len(cams)}", alert_line if top else (vip or lines[1])]
    elif rows == 1:
        lines = [alert_line if top else lines[0]]
    return [ln[:columns].ljust(columns) for ln in lines[:rows]] + [" " * columns] * max(
        0, rows - len(lines)
    )
