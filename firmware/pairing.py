"""Pairing two boards by a one-time code (SPAKE2), so no key file is ever copied by hand.

The board that waits shows a code; the other board joins with it over the sync link. The code
is a password for a password-authenticated key exchange: a passive listener learns nothing, and
an active one gets one guess per exchange, so the waiter counts every exchange that does not end
confirmed and voids the code after MAX_TRIES. Both sides prove they hold the same session key
(key confirmation) before either writes anything: a wrong code is seen on both boards and
changes nothing.

Sans-IO: messages in, messages and outcomes out, `now` passed in; the adapter
(firmware/pairing_http.py) carries the frames and writes the key.

    joiner                      waiter
    Hello(pake)          ->     (a try is counted)
                         <-     Challenge(pake, waiter's proof)
    Confirm(joiner's proof) ->  (both proofs checked: the key is the same on both sides)
                         <-     Done                  (the waiter has written its key)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import Enum, IntEnum

CODE_DIGITS = 8
"""10^8 codes against MAX_TRIES online guesses per code: one chance in 20 million."""
CODE_TTL_S = 600.0
MAX_TRIES = 5
EXCHANGE_S = 30.0
"""An exchange not finished within this long is abandoned (its try stays counted), so a peer
that opens one and goes quiet does not hold the code."""

PROTOCOL_VERSION = 1
PAKE_BYTES = 33
MAC_BYTES = 32
MAX_FRAME = 2 + PAKE_BYTES + MAC_BYTES
"""The longest frame there is; the adapter reads no more."""

_ID_JOINER = b"nvr-pair joiner"
_ID_WAITER = b"nvr-pair waiter"
_LABEL_WAITER = b"nvr-pair waiter proof v1"
_LABEL_JOINER = b"nvr-pair joiner proof v1"
_LABEL_KEY = b"nvr-pair key v1"


class PairingWireError(ValueError):
    """A frame that is not a pairing message of this version."""


def new_code() -> str:
    """A fresh one-time code, as shown: 8 digits in two groups (a 16-column panel fits it)."""
    n = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    return f"{n[:4]}-{n[4:]}"


def normalize_code(text: str) -> str:
    """The digits an installer typed, spaces and dashes ignored; ValueError otherwise."""
    digits = "".join(c for c in text if c not in " -")
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"a pairing code is {CODE_DIGITS} digits, e.g. 1234-5678")
    return digits


# --- messages -----------------------------------------------------------------------------------


class MsgType(IntEnum):
    HELLO = 1
    CHALLENGE = 2
    CONFIRM = 3
    DONE = 4
    REFUSED = 5


class Refusal(IntEnum):
    """Why an exchange ended without a key; the text is what both boards say."""

    WRONG_CODE = 1
    NO_CODE = 2
    BUSY = 3
    PROTOCOL = 4
    NOT_SAVED = 5
    UNREACHABLE = 6

    @property
    def text(self) -> str:
        return _REFUSAL_TEXT[self]


_REFUSAL_TEXT = {
    Refusal.WRONG_CODE: "wrong code",
    Refusal.NO_CODE: "no pairing code is shown on the other board (none, expired, used or "
    "void after too many wrong tries): show a new one with `nvr pair code`",
    Refusal.BUSY: "the other board is in another pairing exchange; try again in a minute",
    Refusal.PROTOCOL: "the exchange broke off or was garbled",
    Refusal.NOT_SAVED: "the other board could not save the pair key; see its log",
    Refusal.UNREACHABLE: "the other board does not answer at its sync address",
}


@dataclass(frozen=True)
class Hello:
    pake: bytes


@dataclass(frozen=True)
class Challenge:
    pake: bytes
    proof: bytes


@dataclass(frozen=True)
class Confirm:
    proof: bytes


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Refused:
    reason: Refusal


Message = Hello | Challenge | Confirm | Done | Refused


def encode(msg: Message) -> bytes:
    head = bytes([PROTOCOL_VERSION])
    match msg:
        case Hello(pake):
            return head + bytes([MsgType.HELLO]) + pake
        case Challenge(pake, proof):
            return head + bytes([MsgType.CHALLENGE]) + pake + proof
        case Confirm(proof):
            return head + bytes([MsgType.CONFIRM]) + proof
        case Done():
            return head + bytes([MsgType.DONE])
        case Refused(reason):
            return head + bytes([MsgType.REFUSED, reason])
    raise TypeError(f"not a pairing message: {msg!r}")


_BODY = {
    MsgType.HELLO: PAKE_BYTES,
    MsgType.CHALLENGE: PAKE_BYTES + MAC_BYTES,
    MsgType.CONFIRM: MAC_BYTES,
    MsgType.DONE: 0,
    MsgType.REFUSED: 1,
}


def decode(frame: bytes) -> Message:
    """The one place a frame becomes a message: exact lengths, known types, nothing extra."""
    if len(frame) < 2 or frame[0] != PROTOCOL_VERSION:
        raise PairingWireError("not a pairing frame of this version")
    try:
        kind = MsgType(frame[1])
    except ValueError:
        raise PairingWireError(f"unknown message type {frame[1]}") from None
    body = frame[2:]
    if len(body) != _BODY[kind]:
        raise PairingWireError(f"{kind.name}: {len(body)} bytes, not {_BODY[kind]}")
    match kind:
        case MsgType.HELLO:
            return Hello(body)
        case MsgType.CHALLENGE:
            return Challenge(body[:PAKE_BYTES], body[PAKE_BYTES:])
        case MsgType.CONFIRM:
            return Confirm(body)
        case MsgType.DONE:
            return Done()
    try:
        return Refused(Refusal(body[0]))
    except ValueError:
        raise PairingWireError(f"unknown refusal {body[0]}") from None


# --- outcomes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What one message leads to: a reply to send (or none), and whether the exchange ended,
    with the pair key (to be written before the waiter's Done goes out) or a refusal."""

    send: Message | None = None
    ended: bool = False
    key: bytes | None = None
    """The pair key file's contents (hex text, as firmware/pairkey.py reads it)."""
    refusal: Refusal | None = None


def _mac(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()


def _pair_key(session_key: bytes) -> bytes:
    return _mac(session_key, _LABEL_KEY).hex().encode()


def _refuse(reason: Refusal, tell: bool = True) -> Step:
    return Step(send=Refused(reason) if tell else None, ended=True, refusal=reason)


class CodeState(Enum):
    OPEN = "open"
    EXPIRED = "expired"
    VOID = "void"
    """Too many wrong tries."""
    USED = "used"


@dataclass
class _Exchange:
    hello: Hello
    started: float
    session_key: bytes


class Waiter:
    """The board that shows the code: one code, one exchange at a time, tries counted."""

    def __init__(self, code: str, now: float) -> None:
        self.code = normalize_code(code)
        self.issued = now
        self.failed = 0
        self.used = False
        self._exchange: _Exchange | None = None

    @classmethod
    def new(cls, now: float) -> Waiter:
        return cls(new_code(), now)

    @property
    def shown(self) -> str:
        return f"{self.code[:4]}-{self.code[4:]}"

    @property
    def expires(self) -> float:
        return self.issued + CODE_TTL_S

    @property
    def tries_left(self) -> int:
        return max(0, MAX_TRIES - self.failed)

    def state(self, now: float) -> CodeState:
        if self.used:
            return CodeState.USED
        if self.failed >= MAX_TRIES:
            return CodeState.VOID
        if now >= self.expires:
            return CodeState.EXPIRED
        return CodeState.OPEN

    def handle(self, msg: Message, now: float) -> Step:
        if isinstance(msg, Hello):
            return self._hello(msg, now)
        ex = self._exchange
        if ex is None or now - ex.started > EXCHANGE_S:
            return _refuse(Refusal.PROTOCOL)
        self._exchange = None
        if isinstance(msg, Confirm) and hmac.compare_digest(
            msg.proof, _mac(ex.session_key, _LABEL_JOINER)
        ):
            if self.state(now) is not CodeState.OPEN:  # expired while the joiner answered
                return _refuse(Refusal.NO_CODE)
            self.used = True
            self.failed -= 1  # the try counted at its Hello ended well
            return Step(send=Done(), ended=True, key=_pair_key(ex.session_key))
        if isinstance(msg, Refused):
            return _refuse(msg.reason, tell=False)
        return _refuse(Refusal.WRONG_CODE if isinstance(msg, Confirm) else Refusal.PROTOCOL)

    def abandon(self, hello: Hello) -> None:
        """The connection that sent `hello` is gone: its exchange ends, its try stays counted
        (another connection's exchange goes on)."""
        if self._exchange is not None and self._exchange.hello == hello:
            self._exchange = None

    def _hello(self, msg: Hello, now: float) -> Step:
        if self.state(now) is not CodeState.OPEN:
            return _refuse(Refusal.NO_CODE)
        if self._exchange is not None and now - self._exchange.started <= EXCHANGE_S:
            return _refuse(Refusal.BUSY)
        self.failed += 1  # every exchange is a guess until its proof arrives
        # spake2 builds its curve tables when imported: only an exchange pays for that, not
        # every `nvr` command whose parser names this module's constants.
        from spake2 import SPAKE2_B
        from spake2.spake2 import SPAKEError

        pake = SPAKE2_B(self.code.encode(), idA=_ID_JOINER, idB=_ID_WAITER)
        mine = pake.start()
        try:
            session_key = pake.finish(msg.pake)
        except (SPAKEError, ValueError, AssertionError):
            return _refuse(Refusal.PROTOCOL)
        self._exchange = _Exchange(msg, now, session_key)
        return Step(send=Challenge(mine, _mac(session_key, _LABEL_WAITER)))


class Joiner:
    """The board that types the code: it checks the waiter's proof before it sends its own,
    and writes its key only after the waiter's Done (the waiter wrote first)."""

    def __init__(self, code: str) -> None:
        from spake2 import SPAKE2_A  # at first use, as in Waiter._hello

        self._pake = SPAKE2_A(normalize_code(code).encode(), idA=_ID_JOINER, idB=_ID_WAITER)
        self._hello = Hello(self._pake.start())
        self._session_key: bytes | None = None
        self._ended = False

    def hello(self) -> Hello:
        return self._hello

    def handle(self, msg: Message) -> Step:
        if self._ended:
            return _refuse(Refusal.PROTOCOL, tell=False)
        step = self._handle(msg)
        self._ended = step.ended
        return step

    def _handle(self, msg: Message) -> Step:
        if isinstance(msg, Refused):
            return _refuse(msg.reason, tell=False)
        if isinstance(msg, Challenge) and self._session_key is None:
            from spake2.spake2 import SPAKEError  # imported by __init__ already

            try:
                key = self._pake.finish(msg.pake)
            except (SPAKEError, ValueError, AssertionError):
                return _refuse(Refusal.PROTOCOL)
            if not hmac.compare_digest(msg.proof, _mac(key, _LABEL_WAITER)):
                return _refuse(Refusal.WRONG_CODE)
            self._session_key = key
            return Step(send=Confirm(_mac(key, _LABEL_JOINER)))
        if isinstance(msg, Done) and self._session_key is not None:
            return Step(ended=True, key=_pair_key(self._session_key))
        return _refuse(Refusal.PROTOCOL)
