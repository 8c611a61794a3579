"""HTTP authentication as RTSP cameras use it: Basic (RFC 7617) and Digest (RFC 7616/2617).

Digest: MD5 and SHA-256 (and their -sess forms), with qop=auth or without qop. auth-int and
other algorithms are not offered by cameras in practice; such challenges are skipped, so a
camera offering only them fails with AUTH rather than with a wrong answer.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass


class AuthScheme(enum.Enum):
    BASIC = "Basic"
    DIGEST = "Digest"


class DigestAlgorithm(enum.Enum):
    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @property
    def sess(self) -> bool:
        return self in (DigestAlgorithm.MD5_SESS, DigestAlgorithm.SHA256_SESS)

    @property
    def strong(self) -> bool:
        return self in (DigestAlgorithm.SHA256, DigestAlgorithm.SHA256_SESS)


_ALGORITHMS = {a.value.lower(): a for a in DigestAlgorithm}


@dataclass(frozen=True)
class Challenge:
    """One supported challenge from a WWW-Authenticate header."""

    scheme: AuthScheme
    realm: str
    nonce: str = ""
    opaque: str | None = None
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    algorithm_given: bool = False
    qop: bool = False
    """True when the camera asked for qop=auth (the only qop answered)."""
    stale: bool = False

    @property
    def rank(self) -> int:
        """Higher is preferred: Digest over Basic, SHA-256 over MD5."""
        if self.scheme is AuthScheme.BASIC:
            return 0
        return 2 if self.algorithm.strong else 1


def parse_challenges(values: Iterable[str]) -> tuple[Challenge, ...]:
    """Every supported challenge in these header values, in order; the rest skipped."""
    found: list[Challenge] = []
    for value in values:
        for scheme, params in _split_challenges(value):
            challenge = _challenge(scheme, params)
            if challenge is not None:
                found.append(challenge)
    return tuple(found)


def choose(challenges: Iterable[Challenge]) -> Challenge | None:
    """The strongest challenge; the first of equals, as the camera ordered them."""
    best: Challenge | None = None
    for c in challenges:
        if best is None or c.rank > best.rank:
            best = c
    return best


def _challenge(scheme: str, params: dict[str, str]) -> Challenge | None:
    name = scheme.lower()
    if name == "basic":
        return Challenge(AuthScheme.BASIC, params.get("realm", ""))
    if name != "digest" or "nonce" not in params:
        return None
    algo_text = params.get("algorithm")
    algorithm = _ALGORITHMS.get((algo_text or "MD5").lower())
    if algorithm is None:
        return None
    qop_text = params.get("qop")
    qop = False
    if qop_text is not None:
        offered = {q.strip().lower() for q in qop_text.split(",")}
        if "auth" not in offered:
            return None
        qop = True
    return Challenge(
        AuthScheme.DIGEST,
        params.get("realm", ""),
        params["nonce"],
        params.get("opaque"),
        algorithm,
        algo_text is not None,
        qop,
        params.get("stale", "").lower() == "true",
    )


def _split_challenges(value: str) -> list[tuple[str, dict[str, str]]]:
    """RFC 7235 challenge lists: `Digest a="b", c=d, Basic realm="x"` is two challenges."""
    out: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        start = i
        while i < n and value[i] not in " \t,=":
            i += 1
        token = value[start:i]
        if not token:
            i += 1  # a stray '=': skip it
            continue
        j = i
        while j < n and value[j] in " \t":
            j += 1
        if j < n and value[j] == "=" and out:
            i = j + 1
            while i < n and value[i] in " \t":
                i += 1
            if i < n and value[i] == '"':
                i, param = _quoted(value, i + 1)
            else:
                start = i
                while i < n and value[i] not in " \t,":
                    i += 1
                param = value[start:i]
            out[-1][1].setdefault(token.lower(), param)
        else:
            out.append((token, {}))
            i = j
    return out


def _quoted(value: str, i: int) -> tuple[int, str]:
    chars: list[str] = []
    n = len(value)
    while i < n and value[i] != '"':
        if value[i] == "\\" and i + 1 < n:
            i += 1
        chars.append(value[i])
        i += 1
    return i + 1, "".join(chars)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Authenticator:
    """Authorization header values for one adopted challenge; counts Digest's nc."""

    __slots__ = ("_challenge", "_cnonce", "_nc", "_password", "_username")

    def __init__(
        self, username: str, password: str, challenge: Challenge, cnonce: Callable[[], str]
    ) -> None:
        self._username = username
        self._password = password
        self._challenge = challenge
        self._nc = 0
        self._cnonce = cnonce() if challenge.qop or challenge.algorithm.sess else ""

    @property
    def challenge(self) -> Challenge:
        return self._challenge

    def __repr__(self) -> str:
        return f"Authenticator({self._challenge.scheme.value}, user={self._username!r})"

    def header(self, method: str, uri: str) -> str:
        """The Authorization value for this request; each Digest call uses the next nc."""
        c = self._challenge
        if c.scheme is AuthScheme.BASIC:
            token = base64.b64encode(_bytes(f"{self._username}:{self._password}"))
            return "Basic " + token.decode("ascii")
        self._nc += 1
        digest = hashlib.sha256 if c.algorithm.strong else hashlib.md5

        def h(text: str) -> str:
            return digest(_bytes(text)).hexdigest()

        ha1 = h(f"{self._username}:{c.realm}:{self._password}")
        if c.algorithm.sess:
            ha1 = h(f"{ha1}:{c.nonce}:{self._cnonce}")
        ha2 = h(f"{method}:{uri}")
        nc = f"{self._nc:08x}"
        if c.qop:
            response = h(f"{ha1}:{c.nonce}:{nc}:{self._cnonce}:auth:{ha2}")
        else:
            response = h(f"{ha1}:{c.nonce}:{ha2}")
        parts = [
            f"username={_quote(self._username)}",
            f"realm={_quote(c.realm)}",
            f"nonce={_quote(c.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
        ]
        if c.algorithm_given:
            parts.append(f"algorithm={c.algorithm.value}")
        if c.opaque is not None:
            parts.append(f"opaque={_quote(c.opaque)}")
        if c.qop:
            parts += ["qop=auth", f"nc={nc}", f"cnonce={_quote(self._cnonce)}"]
        elif c.algorithm.sess:
            parts.append(f"cnonce={_quote(self._cnonce)}")
        return "Digest " + ", ".join(parts)
