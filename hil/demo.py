"""The main job on its simulated default: a simulated camera and one board recording it.

Starts the camera simulator, writes a board config for it, runs `nvr run --config` and stays in
the foreground until Ctrl-C (or --seconds), then stops both cleanly and lists what was recorded.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from hil.camera import CameraSim, StreamSpec, free_port

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT / "demo-data")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = Ctrl-C)")
    ap.add_argument("--api-port", type=int, default=8080)
    args = ap.parse_args()

    cam = CameraSim(
        streams=[
            StreamSpec(
                "cam1",
                codec="h264",
                width=1280,
                height=720,
                fps=25,
                bitrate=2000,
                gop=25,
                audio=True,
            )
        ],
        port=free_port(),
    )
    cam.start()
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    config = data / "demo.toml"
    config.write_text(
        f'[board]\nname = "demo"\ndata_dir = "{data}"\n\n'
        f"[recorder]\nsegment_seconds = 4\nmin_free_mb = 64\n\n"
        f'[api]\nlisten_port = {args.api_port}\nlisten_address = "127.0.0.1"\n\n'
        f'[[camera]]\nname = "cam1"\nurl = "{cam.url("cam1")}"\n'
    )
    print(f"demo: simulated camera at {cam.url('cam1')} (H.264 720p25 + AAC)", flush=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware.cli", "run", "--config", str(config)], cwd=ROOT
    )
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    shown = False
    try:
        while not stop and proc.poll() is None:
            if args.seconds and time.monotonic() - started > args.seconds:
                break
            if not shown and _segment_exists(data):
                shown = True
                newest = sorted((data / "segments").rglob("*.mp4"))[-1]
                print(
                    f"demo: first segment written: {newest}\n"
                    f"demo: play it with: ffplay {newest}   (or any player; fMP4, H.264)\n"
                    f"demo: status: curl http://127.0.0.1:{args.api_port}/api/v1/status\n"
                    f"demo: stop with Ctrl-C",
                    flush=True,
                )
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        cam.stop()
    subprocess.run(
        [sys.executable, "-m", "firmware.cli", "catalog", "--data", str(data)],
        cwd=ROOT,
        check=False,
    )
    print(f"demo: recordings kept in {data}/segments", flush=True)
    return 0 if shown else 1


def _segment_exists(data: Path) -> bool:
    return any((data / "segments").rglob("*.mp4")) if (data / "segments").exists() else False


if __name__ == "__main__":
    sys.exit(main())
