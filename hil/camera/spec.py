"""Stream description shared by the simulator process and its Python client."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_CODECS = ("h264", "h265")


@dataclass(frozen=True)
class StreamSpec:
    """One camera stream, served at rtsp://BIND:PORT/NAME.

    bitrate is in kbit/s; gop is the keyframe interval in frames; pattern is a
    videotestsrc pattern name ("ball" moves but compresses to far below bitrate;
    "smpte" or "snow" fill a 4 Mbit/s budget, which benchmarks want). cheap streams loop a
    clip encoded once at start instead of encoding live.
    """

    name: str
    codec: str = "h264"
    width: int = 640
    height: int = 360
    fps: int = 25
    bitrate: int = 1000
    gop: int = 25
    audio: bool = False
    cheap: bool = False
    pattern: str = "ball"

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"stream name {self.name!r}: use letters, digits, '_' or '-'")
        codec = {"hevc": "h265", "avc": "h264"}.get(self.codec.lower(), self.codec.lower())
        if codec not in _CODECS:
            raise ValueError(f"stream {self.name}: codec must be one of {_CODECS}")
        object.__setattr__(self, "codec", codec)
        for key in ("width", "height", "fps", "bitrate", "gop"):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"stream {self.name}: {key} must be positive")
            object.__setattr__(self, key, int(getattr(self, key)))
        if self.width % 2 or self.height % 2:
            raise ValueError(f"stream {self.name}: width and height must be even")
        if not re.match(r"^[a-z0-9-]+$", self.pattern):
            raise ValueError(f"stream {self.name}: bad pattern {self.pattern!r}")

    def to_arg(self) -> str:
        """The --stream argument of `python -m hil.camera` describing this stream."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            parts.append(f"{f.name}={int(value) if isinstance(value, bool) else value}")
        return ",".join(parts)

    @classmethod
    def from_arg(cls, text: str) -> StreamSpec:
        """Parse 'name=cam1,codec=h264,width=640,...' (unknown keys are an error)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, object] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise ValueError(f"bad stream item {item!r} (known keys: {', '.join(known)})")
            raw = raw.strip()
            kind = known[key].type
            if kind == "bool":
                if raw.lower() not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(f"{key}: expected 0 or 1, got {raw!r}")
                values[key] = raw.lower() in ("1", "true", "yes", "on")
            elif kind == "int":
                values[key] = int(raw)
            else:
                values[key] = raw
        if "name" not in values:
            raise ValueError(f"stream {text!r} has no name=")
        return cls(**values)  # type: ignore[arg-type]
