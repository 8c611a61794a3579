"""What the front panel shows: pure, from the board's status, cut to the display's size."""

from __future__ import annotations


def panel_lines(status: dict, columns: int, rows: int) -> list[str]:
    """Board and role first (what an installer looks for), then the VIP, cameras recording and
    the most severe alert; a 2-row display shows the alert in place of the VIP when there is one."""
    cams = status.get("cameras") or []
    count = f"{sum(1 for c in cams if c.get('recording'))}/{len(cams)}"
    alerts = status.get("alerts") or []
    head = f"{status.get('board', '?')} {status.get('role', '?')}"
    vip = status.get("virtual_ip")
    alert = f"! {alerts[0]['id']}" if alerts else None
    if rows == 1:
        lines = [alert or head]
    elif rows == 2:
        lines = [f"{head} {count}", alert or vip or f"cams {count} rec"]
    else:
        lines = [head, f"cams {count} rec", vip or "no VIP", alert or "no alerts"]
    lines += [""] * (rows - len(lines))
    return [ln[:columns].ljust(columns) for ln in lines[:rows]]
