"""Power-on to recording of the emulated board, boot after boot: one boot's figures move by
seconds with the host (under TCG a boot is a minute of two busy cores), so a change to the boot
is judged by medians of several, side by side in one run.

Each --image (a build's output directory, holding disk.img) boots --runs times, round-robin
(A B A B ...: a busy moment of the host falls on each image alike), each boot from its own
copy-on-write overlay, so each is a first boot: the console's wizard typed as an installer
answers each prompt as it shows (hil/wizardrun.py: the image test's answers, one camera on the
GStreamer simulator), then `status --json` polled until the camera records, then the boot's own
figures read in the board (hil/bootfigures.py: before the kernel, kernel, initramfs, systemd,
the firmware's start). Without --image, an image is built from this tree first (image/build.py;
`bash image/build.sh tools` installs what that needs).

Run: `bash hil/bench.sh boot [--runs 3] [--image DIR ...] [--json FILE] [--reports DIR]`. Prints
a Markdown table: each figure's median per image, and every run's value; --reports keeps each
boot's own account (critical chains, blame, the firmware's journal lines)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from hil.bootfigures import boot_report
from hil.camera.client import CameraSim
from hil.camera.spec import StreamSpec
from hil.vm import Vm, emulated_board, kvm_works
from hil.wizardrun import BOOT_S, LAB_FACTORY, first_boot_to_recording

TOP = Path(__file__).resolve().parent.parent
EPOCH = 1_790_000_000
SHOWN = ("boot_to_console_s", "boot_to_set_up_s", "boot_to_recording_s", "loader_s", "kernel_s",
         "initrd_s", "nvr_console_started_at_s", "nvr_started_at_s", "firmware_boot_ready_at_s",
         "firmware_restart_to_recording_s")  # fmt: skip
"""The figures in the table (all of them go to --json); *_at_s are the kernel's clock."""


def build(out: Path, board: str) -> Path:
    """An image of this tree, as the image test builds it."""
    factory = out / "factory.toml"
    out.mkdir(parents=True, exist_ok=True)
    factory.write_text(LAB_FACTORY)
    subprocess.run([sys.executable, str(TOP / "image" / "build.py"), "--out", str(out), "image",
                    "--board", board, "--version", "1.0.0-bench.1", "--compression", "gzip",
                    "--factory-config", str(factory)],
                   check=True, env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)})  # fmt: skip
    return out


def boot_once(
    disk: Path, workdir: Path, camera: CameraSim, board_name: str, report: Path | None = None
) -> dict[str, float]:
    """One first boot, set up through the console, to the camera recording; `report`: where
    the board's own account of the boot goes (critical chains, blame, the firmware's journal)."""
    board = emulated_board(board_name)
    vm = Vm(disk, workdir, camera_port=camera.port, board=board)
    try:
        vm.start()
        figures, _ = first_boot_to_recording(vm, BOOT_S * 2)
        got = boot_report(vm, vm.powered_on)
        figures |= got.figures
        if report is not None:
            marks = "".join(f"{at - vm.powered_on:7.2f} {what}\n" for at, what in vm.matched)
            report.write_text(f"{got.text}\n==console (s from power-on, what was seen)\n{marks}")
    finally:
        vm.stop()
    return {k: round(v, 2) for k, v in figures.items()}


def table(images: list[str], runs: dict[str, list[dict[str, float]]]) -> str:
    head = "| figure (s) | " + " | ".join(f"{i}: median | runs" for i in images) + " |"
    lines = [head, "|---|" + "---|---|" * len(images)]
    for key in SHOWN:
        cells = []
        for image in images:
            values = [r[key] for r in runs[image] if key in r]
            median = f"{statistics.median(values):.1f}" if values else "-"
            cells.append(f"{median} | {' '.join(f'{v:.1f}' for v in values)}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_boot", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--image", type=Path, action="append", default=[],
                   help="a build's output directory (disk.img); repeat to compare")  # fmt: skip
    p.add_argument("--board", default=None, help="image/boards/NAME.toml (default qemu-x86_64)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--reports", type=Path, default=None,
                   help="a directory for each boot's report, INDEX-RUN.txt (INDEX: the "
                        "image's place among --image)")  # fmt: skip
    args = p.parse_args(argv)
    board = emulated_board(args.board).board.name
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as tmp_name:
        tmp = Path(tmp_name)
        images = args.image or [build(tmp / "image", board)]
        for image in images:
            if not (image / "disk.img").is_file():
                p.error(f"{image}: no disk.img (a build's output directory)")
        names = [str(i) for i in images]
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        with CameraSim([StreamSpec("cam1", fps=25, gop=25, width=320, height=240)]) as cam:
            for n in range(args.runs):
                for image, name in zip(images, names, strict=True):
                    workdir = tmp / f"vm-{len(runs[name])}-{images.index(image)}"
                    report = None
                    if args.reports:
                        args.reports.mkdir(parents=True, exist_ok=True)
                        report = args.reports / f"{images.index(image)}-{n + 1}.txt"
                    got = boot_once(image / "disk.img", workdir, cam, board, report)
                    shutil.rmtree(workdir, ignore_errors=True)
                    runs[name].append(got)
                    took = got.get("boot_to_recording_s")
                    print(f"run {n + 1}/{args.runs} {name}: {took} s to recording", flush=True)
    accel = "KVM" if kvm_works(emulated_board(board)) else "TCG (no KVM)"
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
          f"QEMU on {accel}")  # fmt: skip
    print(table(names, runs))
    if args.json:
        args.json.write_text(json.dumps({"board": board, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
