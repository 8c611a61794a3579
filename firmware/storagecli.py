"""`nvr storage list|init|replace|status|mount`: the recording drives (firmware/drives.py plans,
hal/linux/volumes.py acts; docs/INSTALL.md "Recording drives").

`init` asks on the terminal: once for the whole plan, and for every drive that carries data a
second time, naming its model and serial, answered by typing the serial. `--yes` skips the first
question only; a drive with data is formatted without the second one only when `--wipe-data KEY`
names it (KEY: its serial, or its device path when it has none). `mount` runs at boot
(nvr-storage.service): it mounts the recorded volume at the data directory, `degraded` when a
drive of a raid1 is missing, and fails (so the firmware does not start on the system disk)
when the volume is not there at all."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from firmware.drives import (
    AddDevice,
    Choice,
    ConvertToRaid1,
    Drive,
    InitPlan,
    Layout,
    MakeFilesystem,
    MountVolume,
    RecordVolume,
    Refused,
    RemoveMissing,
    ReplaceDevice,
    ReplacePlan,
    Step,
    Unconfirmed,
    WipeSignatures,
    WriteIdentity,
    find,
    plan_init,
    plan_replace,
    unfit,
)
from firmware.timefmt import iso
from hal.disks import Disks, RaidState
from hal.errors import HalError
from hal.volumes import ReplaceProgress, ReplaceState, Volumes

RECORD_FILE = Path("storage/volume.json")
"""Under the data root (/data), outside /data/etc: a factory reset keeping the footage keeps the
volume it is on mounted."""
IDENTITY_FILE = "nvr-data.json"
REPLACE_POLL_S = 2.0

Say = Callable[[str], None]
Ask = Callable[[str], str]


class StorageError(Exception):
    pass


@dataclass(frozen=True)
class VolumeRecord:
    label: str
    layout: Layout
    mount_point: str
    drives: list[dict]
    """path, model, serial of each drive when the volume was made."""
    created: str | None = None

    def to_json(self) -> dict:
        return {**asdict(self), "layout": self.layout.value}

    @classmethod
    def from_json(cls, data: dict) -> VolumeRecord:
        return cls(str(data["label"]), Layout(data["layout"]), str(data["mount_point"]),
                   list(data.get("drives", [])), data.get("created"))  # fmt: skip


class Storage:
    """Drive facts gathered through hal, plan steps carried out through it."""

    def __init__(self, disks: Disks, vols: Volumes, data_dir: Path, data_root: Path,
                 board: str, now: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.disks, self.vols = disks, vols
        self.data_dir = Path(os.path.realpath(data_dir))
        self.data_root, self.board, self.now = data_root, board, now

    # facts

    def drives(self, smart: bool = True) -> list[Drive]:
        system, used = self.vols.system_disks(), self.vols.in_use()
        out = []
        for dev in self.disks.devices():
            try:
                sig = self.vols.signature(dev.path)
            except HalError as e:  # unreadable: counts as data, never formatted unasked
                sig = f"unknown ({e})"
            passed = None
            if smart:
                try:
                    health = self.disks.smart(dev.path)
                    passed = health.passed
                    if dev.model is None or dev.serial is None:
                        dev = type(dev)(**{**dev.to_json(), "model": dev.model or health.model,
                                           "serial": dev.serial or health.serial})  # fmt: skip
                except HalError:
                    pass
            out.append(Drive(dev, sig, passed, dev.path in system, dev.path in used))
        return out

    @property
    def record_path(self) -> Path:
        return self.data_root / RECORD_FILE

    def record(self) -> VolumeRecord | None:
        try:
            return VolumeRecord.from_json(json.loads(self.record_path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StorageError(f"{self.record_path}: unreadable volume record: {e}") from None

    def raid(self) -> RaidState | None:
        """The recording volume's RAID state, when it is a mounted multi-drive btrfs."""
        for r in self.disks.raid():
            if r.name == str(self.data_dir):
                return r
        return None

    def refresh_record(self, members: list[str]) -> None:
        """The record names the drives the volume has now (after a replacement)."""
        rec = self.record()
        if rec is None:
            return
        known = {d.path: d.device for d in self.drives(smart=False)}
        drives = [{"path": m, "model": known[m].model if m in known else None,
                   "serial": known[m].serial if m in known else None} for m in members]  # fmt: skip
        rec = VolumeRecord(rec.label, rec.layout, rec.mount_point, drives, rec.created)
        _write(self.record_path, json.dumps(rec.to_json(), indent=1), 0o644)

    def mounted_here(self) -> bool:
        try:
            return self.disks.mount_state(self.data_dir).mount_point == str(self.data_dir)
        except HalError:
            return False

    # carrying steps out

    def execute(self, step: Step, say: Say) -> None:
        v = self.vols
        match step:
            case WipeSignatures(device):
                say(f"clearing the signatures on {device}")
                v.wipe(device)
            case MakeFilesystem(label, layout, devices):
                say(f"making btrfs {layout.value} '{label}' on {' '.join(devices)}")
                v.mkfs_btrfs(label, layout.value, list(devices))
            case MountVolume(devices, mount_point):
                say(f"mounting it at {mount_point}")
                v.mount(list(devices), mount_point)
            case WriteIdentity(mount_point, identity, board):
                info = {"id": identity, "board": board, "created": iso(int(self.now() * 1e6))}
                _write(Path(mount_point) / IDENTITY_FILE, json.dumps(info, indent=1), 0o644)
            case RecordVolume(label, layout, mount_point, drives):
                rec = VolumeRecord(label, layout, mount_point,
                                   [{"path": p, "model": m, "serial": s} for p, m, s in drives],
                                   iso(int(self.now() * 1e6)))  # fmt: skip
                _write(self.record_path, json.dumps(rec.to_json(), indent=1), 0o644)
                say(f"recorded in {self.record_path}: it is mounted there at every boot")
            case ReplaceDevice(mount_point, source, target):
                what = f"devid {source}" if source.isdigit() else source
                say(f"copying {what}'s data onto {target} (btrfs replace)")
                v.replace_start(mount_point, source, target)
            case AddDevice(mount_point, device):
                say(f"adding {device} to the volume")
                v.add_device(mount_point, device)
            case RemoveMissing(mount_point):
                say("dropping the missing drive (its data is copied again; this takes a while)")
                v.remove_missing(mount_point)
            case ConvertToRaid1(mount_point):
                say("making blocks written while degraded raid1 again (balance)")
                v.convert_raid1(mount_point)

    def follow(self, say: Say, poll: float = REPLACE_POLL_S,
               sleep: Callable[[float], None] = time.sleep) -> ReplaceProgress:  # fmt: skip
        """Reports the copy's progress until it ends (finished, canceled or suspended)."""
        last = None
        while True:
            p = self.vols.replace_status(str(self.data_dir))
            shown = (p.state, None if p.percent is None else round(p.percent))
            if shown != last:
                say(progress_text(p))
                last = shown
            if p.state != ReplaceState.RUNNING:
                return p
            sleep(poll)

    def mount_at_boot(self, say: Say) -> None:
        """The recorded volume at the data directory; degraded when a raid1 drive is missing.
        Raises StorageError when it cannot be mounted."""
        rec = self.record()
        if rec is None:
            say("no recording volume recorded: the data directory stays on the system disk")
            return
        if self.mounted_here():
            say(f"{self.data_dir} is mounted already")
            return
        found = self.vols.find_label(rec.label)
        if not found:
            raise StorageError(f"the recording volume '{rec.label}' is not there: none of its "
                               f"drives ({_names(rec)}) was found")  # fmt: skip
        degraded = rec.layout == Layout.RAID1 and len(found) < len(rec.drives)
        if degraded:
            say(f"only {len(found)} of the volume's {len(rec.drives)} drives are there: "
                "mounting it degraded (alert raid-degraded; nvr storage replace)")  # fmt: skip
        try:
            self.vols.mount(found, str(self.data_dir), degraded=degraded)
        except HalError as e:
            if degraded or rec.layout != Layout.RAID1:
                raise StorageError(f"cannot mount the recording volume: {e}") from None
            say(f"mount failed ({e}); trying degraded")
            try:
                self.vols.mount(found, str(self.data_dir), degraded=True)
            except HalError as e2:
                raise StorageError(f"cannot mount the recording volume: {e2}") from None
        say(f"recording volume '{rec.label}' mounted at {self.data_dir}")


def _write(path: Path, text: str, mode: int) -> None:
    from firmware.provision import write_file_atomic

    write_file_atomic(path, (text + "\n").encode(), mode)


def _names(rec: VolumeRecord) -> str:
    return ", ".join(f"{d.get('path')} (model {d.get('model') or '(none)'}, serial "
                     f"{d.get('serial') or '(none)'})" for d in rec.drives)  # fmt: skip


def progress_text(p: ReplaceProgress) -> str:
    pct = "" if p.percent is None else f" {p.percent:.1f}%"
    errs = ""
    if p.write_errors or p.read_errors:
        errs = f" ({p.write_errors} write errors, {p.read_errors} unreadable blocks)"
    return f"replace: {p.state.value}{pct}{errs}"


def smart_text(passed: bool | None) -> str:
    return {True: "ok", False: "FAILING", None: "none"}[passed]


def drive_lines(drives: list[Drive], allow_removable: bool = False) -> list[str]:
    """The drives other than the system disk, with what they are and whether they can record."""
    lines = []
    for d in drives:
        if d.system:
            continue
        why = unfit(d, allow_removable)
        use = "can record" if why is None else f"not usable: {why.value}"
        lines.append(f"{d.describe()} SMART {smart_text(d.smart_passed)} "
                     f"contents {d.signature or 'blank'}: {use}")  # fmt: skip
    return lines


def status_lines(st: Storage) -> list[str]:
    rec = st.record()
    if rec is None:
        return ["storage: no recording volume: recording on the system disk (nvr storage init)"]
    lines = [f"storage: volume '{rec.label}' ({rec.layout.value}) at {rec.mount_point}",
             f"storage: made of {_names(rec)}"]  # fmt: skip
    if not st.mounted_here():
        lines.append(f"storage: NOT MOUNTED at {st.data_dir}")
        return lines
    raid = st.raid()
    if raid is not None:
        state = "DEGRADED" if raid.degraded else "whole"
        detail = f" ({raid.detail})" if raid.detail else ""
        lines.append(f"storage: {state}: {' '.join(raid.members)}{detail}")
    elif rec.layout == Layout.RAID1:
        lines.append("storage: DEGRADED: only one drive of the raid1 is there")
    else:
        lines.append("storage: mounted (one drive, no second copy)")
    try:
        p = st.vols.replace_status(str(st.data_dir))
        if p.state != ReplaceState.NEVER:
            lines.append("storage: " + progress_text(p))
    except HalError:
        pass
    return lines


# --- the commands ------------------------------------------------------------------------------


def confirm_data(drives: list[Drive], ask: Ask, say: Say) -> frozenset[str] | None:
    """The second confirmation: each drive with data, named by model and serial, confirmed
    by typing its key. None when any is not confirmed."""
    keys = set()
    for d in drives:
        say(f"WARNING: {d.describe()} has data on it ({d.signature}); formatting destroys it.")
        what = "serial" if d.device.serial else "device path (it has no serial)"
        answer = ask(f"Type its {what} {d.key} to erase it (anything else keeps it): ")
        if answer.strip() != d.key:
            return None
        keys.add(d.key)
    return frozenset(keys)


def init_volume(st: Storage, names: list[str], *, yes: bool, wipe_data: list[str],
                allow_removable: bool, ask: Ask, say: Say) -> int:  # fmt: skip
    """0 made; 1 refused or not confirmed (nothing done); 2 a tool failed half way."""
    if st.mounted_here():
        say(f"nvr: storage: a volume is mounted at {st.data_dir} already (nvr storage status)")
        return 1
    drives = st.drives()
    chosen = [d for n in names for d in find(drives, n)]
    stray = [k for k in wipe_data if k not in {d.key for d in chosen}]
    if stray:
        say(f"nvr: storage: --wipe-data {' '.join(stray)}: names no chosen drive "
            "(a serial, or the path of a drive without one)")  # fmt: skip
        return 1
    choice = Choice(tuple(names), frozenset(wipe_data), allow_removable)
    identity = str(uuid.uuid4())
    kw = dict(identity=identity, board=st.board, mount_point=str(st.data_dir))
    try:
        plan: InitPlan | None = plan_init(drives, choice, **kw)
        unconfirmed: list[Drive] = []
    except Refused as e:
        say(f"nvr: storage: nothing done: {e}")
        return 1
    except Unconfirmed as e:
        plan, unconfirmed = None, e.drives
    chosen_paths = " ".join(d.path for d in chosen)
    layout = Layout.SINGLE if len(chosen) == 1 else Layout.RAID1
    say(f"storage: btrfs {layout.value} of {chosen_paths}, mounted at {st.data_dir}")
    if not yes and ask("Format these drives for recording? [y/N] ").strip().lower() not in (
        "y",
        "yes",
    ):
        say("storage: nothing done")
        return 1
    if unconfirmed:
        if yes:
            for d in unconfirmed:
                say(f"nvr: storage: {d.describe()} has data on it ({d.signature}): not "
                    f"formatted; name it with --wipe-data {d.key} to erase it")  # fmt: skip
            say("storage: nothing done")
            return 1
        keys = confirm_data(unconfirmed, ask, say)
        if keys is None:
            say("storage: not confirmed: nothing done")
            return 1
        choice = Choice(choice.devices, choice.confirmed | keys, allow_removable)
        plan = plan_init(drives, choice, **kw)
    assert plan is not None
    try:
        for step in plan.steps:
            st.execute(step, say)
    except (HalError, OSError) as e:
        say(f"nvr: storage: failed: {e}")
        return 2
    say(f"storage: done: volume '{plan.label}'; restart the firmware to record on it "
        "(systemctl restart nvr)")  # fmt: skip
    return 0


def _finish(st: Storage, say: Say, poll: float) -> int:
    """Follows a running copy to its end, then makes degraded-time blocks raid1 again."""
    p = st.follow(say, poll)
    if p.state != ReplaceState.FINISHED:
        say(f"nvr: storage: the copy stopped ({p.detail or p.state.value})")
        return 2
    st.execute(ConvertToRaid1(str(st.data_dir)), say)
    return _whole(st, say)


def _whole(st: Storage, say: Say) -> int:
    raid = st.raid()
    whole = raid is not None and not raid.degraded
    if whole and raid is not None:
        st.refresh_record(raid.members)
    say("storage: the volume is whole again" if whole else
        f"storage: still degraded: {raid.detail if raid else 'not mounted'}")  # fmt: skip
    return 0 if whole else 2


def replace_drive(st: Storage, new: str | None, *, old: str | None, yes: bool,
                  wipe_data: list[str], ask: Ask, say: Say,
                  poll: float = REPLACE_POLL_S) -> int:  # fmt: skip
    """0 whole again; 1 refused or not confirmed (nothing done); 2 failed or still degraded.
    A copy that is running already (the last command was cut off) is followed to its end."""
    try:
        running = st.vols.replace_status(str(st.data_dir)).state == ReplaceState.RUNNING
    except HalError:
        running = False
    if running:
        say("storage: a drive replacement is running; following it")
        try:
            return _finish(st, say, poll)
        except (HalError, OSError) as e:
            say(f"nvr: storage: failed: {e}")
            return 2
    if new is None:
        say("nvr: storage: name the new drive (nvr storage list shows them)")
        return 1
    drives = st.drives()
    raid = st.raid()
    kw = dict(old=old)
    try:
        plan: ReplacePlan | None = plan_replace(drives, raid, new,
                                                confirmed=frozenset(wipe_data), **kw)  # fmt: skip
    except Refused as e:
        say(f"nvr: storage: nothing done: {e}")
        return 1
    except Unconfirmed as e:
        if yes:
            d = e.drives[0]
            say(f"nvr: storage: {d.describe()} has data on it ({d.signature}): not used; name "
                f"it with --wipe-data {d.key} to erase it")  # fmt: skip
            return 1
        keys = confirm_data(e.drives, ask, say)
        if keys is None:
            say("storage: not confirmed: nothing done")
            return 1
        plan = plan_replace(drives, raid, new, confirmed=frozenset(wipe_data) | keys, **kw)
    assert plan is not None
    say(f"storage: {plan.new.describe()} replaces {plan.old} in the volume at {st.data_dir}")
    if not yes and ask("Go ahead? [y/N] ").strip().lower() not in ("y", "yes"):
        say("storage: nothing done")
        return 1
    try:
        for step in plan.steps:
            if isinstance(step, ConvertToRaid1) and plan.tracks_progress:
                return _finish(st, say, poll)
            st.execute(step, say)
        return _whole(st, say)
    except (HalError, OSError) as e:
        say(f"nvr: storage: failed: {e}")
        return 2


# --- the console and the wizard ----------------------------------------------------------------


MaybeAsk = Callable[[str], "str | None"]
MENU = "1) list drives  2) make the recording volume  3) replace a drive  Enter) back: "


def pick_drives(st: Storage, ask: MaybeAsk, say: Say, many: bool) -> list[str] | None:
    """The usable drives numbered, with model, serial, size, SMART and contents; the
    installer's pick by number. None: none picked (or none there)."""
    usable = [d for d in st.drives() if unfit(d) is None]
    if not usable:
        say("storage: no drive other than the system disk can record (nvr storage list)")
        return None
    for i, line in enumerate(drive_lines(usable), 1):
        say(f"{i}) {line}")
    what = "numbers, space-separated; one: single drive, two or more: raid1" if many else "number"
    answer = (ask(f"Drive(s) to use ({what}; Enter: none): ") or "").split()
    if not answer:
        return None
    if not all(a.isdigit() and 1 <= int(a) <= len(usable) for a in answer) or (
        not many and len(answer) != 1
    ):
        say(f"storage: pick {'numbers' if many else 'one number'} from the list")
        return None
    return [usable[int(a) - 1].path for a in answer]


def console_storage(st: Storage, args: list[str], ask: MaybeAsk, say: Say,
                    poll: float = REPLACE_POLL_S) -> int:  # fmt: skip
    """The console's `storage [status|list|init|replace]`: the same steps and questions as
    `nvr storage`, drives picked from a numbered list."""

    def ask_text(q: str) -> str:
        return ask(q) or ""

    try:
        sub = args[0] if args else None
        if sub is None:
            for line in status_lines(st):
                say(line)
            sub = {"1": "list", "2": "init", "3": "replace"}.get(ask(MENU) or "")
            if sub is None:
                return 0
        if sub == "status":
            for line in status_lines(st):
                say(line)
            return 0
        if sub == "list":
            for line in drive_lines(st.drives()) or ["storage: no drives"]:
                say(line)
            return 0
        if sub == "init":
            names = pick_drives(st, ask, say, many=True)
            if names is None:
                return 0
            return init_volume(st, names, yes=False, wipe_data=[], allow_removable=False,
                               ask=ask_text, say=say)  # fmt: skip
        if sub == "replace":
            for line in status_lines(st):
                say(line)
            names = pick_drives(st, ask, say, many=False)
            if names is None:
                return 0
            return replace_drive(st, names[0], old=None, yes=False, wipe_data=[], ask=ask_text,
                                 say=say, poll=poll)  # fmt: skip
        say("usage: storage [status|list|init|replace]")
        return 2
    except (StorageError, HalError) as e:
        say(f"storage: {e}")
        return 1


def wizard_storage(st: Storage, ask: Ask, say: Say) -> None:
    """The wizard's recording-drives step: offered only when drives besides the system disk
    can record (loop devices, which are files, are left to `nvr storage init`); none, one, or
    all as one raid1 volume, with init's questions."""
    if st.mounted_here():
        say(f"recording drives: a volume is mounted at {st.data_dir} (nvr storage status)")
        return
    usable = [d for d in st.drives() if unfit(d) is None and not d.device.name.startswith("loop")]
    if not usable:
        return
    say("recording drives: the system disk keeps the system; footage can go on these drives")
    for i, line in enumerate(drive_lines(usable), 1):
        say(f"  {i}) {line}")
    numbers = [str(i) for i in range(1, len(usable) + 1)]
    every = "all (raid1), " if len(usable) > 1 else ""
    pick = ask(f"record on: none, {every}or a drive's number").strip().lower()
    if pick in ("all", "a") and len(usable) > 1:
        names = [d.path for d in usable]
    elif pick in numbers:
        names = [usable[int(pick) - 1].path]
    else:
        say("recording stays on the system disk (nvr storage init makes the volume later)")
        return
    init_volume(st, names, yes=False, wipe_data=[], allow_removable=False, ask=ask, say=say)


# --- argparse ----------------------------------------------------------------------------------


def storage_for(config: Path, data_root: Path, data_dir: Path | None = None) -> Storage:
    """The board's drives through the linux backends; the config's data directory."""
    from firmware.config import Config, ConfigError, load_config
    from hal.linux.disks import LinuxDisks
    from hal.linux.volumes import LinuxVolumes

    try:
        cfg = load_config(config)
    except ConfigError:
        cfg = Config()  # not set up yet (the wizard's storage step): the image's defaults
    return Storage(LinuxDisks(), LinuxVolumes(), data_dir or cfg.board.data_dir, data_root,
                   cfg.board.name)  # fmt: skip


def storage_from_args(args: argparse.Namespace) -> Storage:
    return storage_for(args.config, args.data_root, args.data_dir)


def _say(line: str) -> None:
    print(line, file=sys.stderr if line.startswith("nvr:") else sys.stdout, flush=True)


def _ask(prompt: str) -> str:
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    if not line:
        raise StorageError("no answer (end of input): nothing done")
    return line


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (StorageError, HalError, Refused) as e:
            print(f"nvr: storage: {e}", file=sys.stderr)
            return 1

    return run


@_guard
def cmd_list(args: argparse.Namespace) -> int:
    st = storage_from_args(args)
    drives = st.drives()
    if args.json:
        print(json.dumps([{**d.device.to_json(), "smart_passed": d.smart_passed,
                           "contents": d.signature, "system": d.system, "in_use": d.in_use,
                           "unfit": (u.value if (u := unfit(d, args.allow_removable)) else None)}
                          for d in drives], indent=1))  # fmt: skip
        return 0
    for line in drive_lines(drives, args.allow_removable) or ["storage: no drives"]:
        print(line)
    system = " ".join(d.path for d in drives if d.system)
    print(f"storage: system disk {system or '(not found)'} is not listed")
    return 0


@_guard
def cmd_init(args: argparse.Namespace) -> int:
    return init_volume(storage_from_args(args), args.drives, yes=args.yes,
                       wipe_data=args.wipe_data, allow_removable=args.allow_removable,
                       ask=_ask, say=_say)  # fmt: skip


@_guard
def cmd_replace(args: argparse.Namespace) -> int:
    return replace_drive(storage_from_args(args), args.new, old=args.old, yes=args.yes,
                         wipe_data=args.wipe_data, ask=_ask, say=_say, poll=args.poll)  # fmt: skip


@_guard
def cmd_status(args: argparse.Namespace) -> int:
    st = storage_from_args(args)
    if args.json:
        rec = st.record()
        raid = st.raid()
        print(json.dumps({"volume": rec.to_json() if rec else None,
                          "mounted": st.mounted_here(),
                          "raid": raid.to_json() if raid else None}, indent=1))  # fmt: skip
        return 0
    for line in status_lines(st):
        print(line)
    return 0


@_guard
def cmd_mount(args: argparse.Namespace) -> int:
    storage_from_args(args).mount_at_boot(_say)
    return 0


def add_parser(sub: argparse._SubParsersAction, default_config: Path, data_root: Path) -> None:
    p = sub.add_parser("storage", help="recording drives: list, make the volume, replace a drive")
    s = p.add_subparsers(dest="storage_cmd", required=True)

    def common(r: argparse.ArgumentParser) -> None:
        r.add_argument("--config", type=Path, default=default_config)
        r.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="where the volume is mounted (default: the config's data_dir)",
        )
        r.add_argument("--data-root", type=Path, default=data_root,
                       help="the data partition, where the volume's record is kept")  # fmt: skip

    def confirm(r: argparse.ArgumentParser) -> None:
        r.add_argument("--yes", action="store_true",
                       help="no questions; drives with data only with --wipe-data")  # fmt: skip
        r.add_argument("--wipe-data", nargs="+", default=[], metavar="SERIAL",
                       help="erase these drives even though they hold data (serial, or the "
                       "device path of a drive without one)")  # fmt: skip

    r = s.add_parser("list", help="drives other than the system disk; which can record")
    r.add_argument("--json", action="store_true")
    r.add_argument("--allow-removable", action="store_true")
    common(r)
    r.set_defaults(func=cmd_list)
    r = s.add_parser("init", help="format drives as the recording volume (2+: btrfs raid1)")
    r.add_argument("drives", nargs="+", metavar="DRIVE", help="path, kernel name or serial")
    r.add_argument("--allow-removable", action="store_true")
    confirm(r)
    common(r)
    r.set_defaults(func=cmd_init)
    r = s.add_parser("replace", help="a new drive in place of a missing or failing one")
    r.add_argument(
        "new",
        metavar="DRIVE",
        nargs="?",
        help="the new drive: path, kernel name or serial (none: follow a running one)",
    )
    r.add_argument("--old", help="the member to swap out (default: the missing one)")
    r.add_argument("--poll", type=float, default=REPLACE_POLL_S, help=argparse.SUPPRESS)
    confirm(r)
    common(r)
    r.set_defaults(func=cmd_replace)
    r = s.add_parser("status", help="the recording volume: whole, degraded, a copy's progress")
    r.add_argument("--json", action="store_true")
    common(r)
    r.set_defaults(func=cmd_status)
    r = s.add_parser("mount", help="at boot: mount the recorded volume (degraded if need be)")
    common(r)
    r.set_defaults(func=cmd_mount)
