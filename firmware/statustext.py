"""Status texts the console and the front panel share, so an installer reads the same words
on both: the role line, the VIP (virtual IP) line, the unpaired hint. Short enough for a
16-column panel before the details a wider screen adds."""

from __future__ import annotations

UNPAIRED_HINT = "unpaired: recording alone"
PAIR_HOWTO = "pair it with `nvr pair code` here and `nvr pair join CODE` on the other board"


def role_line(board: str, role: str) -> str:
    return f"board {board} {role}"


def vip_parts(vip: str | None, held: bool) -> tuple[str, str]:
    """The address and where it is, for a panel that shows them on two rows."""
    if not vip:
        return "no VIP", ""
    return f"VIP {vip}", "held here" if held else "not here"


def vip_line(vip: str | None, held: bool) -> str:
    return " ".join(p for p in vip_parts(vip, held) if p)
