"""Camera simulator: an RTSP server whose every video frame carries its frame number.

Process::

    python -m hil.camera --port 8554 --bind 127.0.0.1 --control /run/cam.sock \\
        [--epoch UNIX_SECONDS] --stream name=cam1,codec=h264,cheap=1 [--stream ...] \\
        [--wsd [--wsd-name NAME] [--wsd-hardware HW]]

(stream keys and defaults: name, codec=h264|h265, width=640, height=360, fps=25,
bitrate=1000 kbit/s, gop=25 frames, audio=0, cheap=0, pattern=ball — see StreamSpec)
serves rtsp://BIND:PORT/NAME for each stream (H.264 or H.265, optional AAC track; media
shared by all clients of a stream). ``cheap=1`` loops a clip encoded once at start instead
of encoding live, for dozens of cameras on a small machine. ``--wsd`` (off by default) also
answers ONVIF WS-Discovery probes as a camera does (:mod:`hil.camera.wsd`).

Frame numbers: frame n is the n-th frame period since the epoch (floor((t - epoch) * fps)),
whether or not it reaches anybody. Each video access unit carries, just before its first
slice, an SEI "user data unregistered" message (H.264 NAL type 6 / H.265 prefix SEI type 39,
payloadType 5, 32 bytes, emulation prevention applied)::

    SEI_UUID (16 bytes) | frame number (u64 big-endian) | sender wall clock, us (u64 BE)

:mod:`hil.framecheck` reads them back from recordings without decoding.

Control: JSON lines on the ``--control`` unix socket, one reply line per request, always
with ``"ok"`` (and ``"error"`` when false)::

    {"cmd": "ping"}
    {"cmd": "stall", "stream": "cam1", "on": true}     keep connections, send nothing
    {"cmd": "drop", "stream": "cam1"}                  close that stream's client connections
    {"cmd": "jump", "stream": "cam1", "seconds": 3600} media timestamps jump forward
    {"cmd": "frame", "stream": "cam1"}                 -> "frame" (last sent), "clock"
    {"cmd": "clients", "stream": "cam1"}               -> "clients"
    {"cmd": "status", "stream": "cam1"}

:class:`CameraSim` runs and steers the process from Python. Nothing imported here loads
GStreamer; only the server process (:mod:`hil.camera.server`) does.
"""

from hil.camera.client import CameraError, CameraSim, free_port
from hil.camera.sei import SEI_UUID, build_sei_nal, insert_sei, parse_sei_nal
from hil.camera.spec import StreamSpec

__all__ = [
    "SEI_UUID",
    "CameraError",
    "CameraSim",
    "StreamSpec",
    "build_sei_nal",
    "free_port",
    "insert_sei",
    "parse_sei_nal",
]
