"""The first-boot wizard on the serial console: the answers of `nvr setup --answers FILE`, asked
one by one, checked by the same model (firmware.answers) and written by the same apply
(firmware.setupfiles), then the admin password (firmware.adminpw). Plain prompts, one per line,
ASCII only: it works on a VT100 at 80x24 over ttyS0 with no mouse.

It is forced: the console runs it until `setup_done` exists; leaving it half way (EOF, the line
hung up, power) writes nothing and the next start asks again."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import threading
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ValidationError

from firmware import adminpw, camdiscover
from firmware.answers import (
    SYNC_DEFAULT,
    Answers,
    BoardAnswers,
    CameraAnswers,
    LanAnswers,
    NtpAnswers,
    PairAnswers,
    Side,
    SyncAnswers,
)
from firmware.config import ConfigError, config_error, load_config, read_toml
from firmware.hw.profile import BoardProfile, Question, device_set
from firmware.paths import done_path, password_path
from firmware.provision import write_file_atomic
from firmware.setupfiles import Layout, apply, camera_url, render, summary_lines
from firmware.storagecli import Storage
from hal.errors import HalError

GoLive = Callable[[list[Path]], str | None]
"""Makes written files live (firmware.golive.GoLive): None, else what failed."""

Check = Callable[[str], str | None]
Ask = Callable[[str, Check | None, bool, str], str]
"""(question, check, secret, default) -> the answer; raises EOFError when the line is gone."""


def field_check(
    model: type[BaseModel], section: str, field: str, base: dict, as_list: bool = False
) -> Check:
    """The model's own rule for one key; the message names the key, never the value."""

    def check(text: str) -> str | None:
        value: object = split_list(text) if as_list else text
        try:
            model.model_validate({**base, field: value})
        except ValidationError as e:
            for err in e.errors():
                if err["loc"] and err["loc"][0] == field:
                    return f"{section}.{field}: {err['msg'].removeprefix('Value error, ')}"
        return None

    return check


def split_list(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def one_of(key: str, *choices: str) -> Check:
    return lambda t: None if t.lower() in choices else f"{key}: one of {', '.join(choices)}"


def prompt_ask() -> Ask:
    """prompt_toolkit over the terminal; no cursor-position queries (a serial line may not
    answer them) and the error of a refused answer shown under the line until it is fixed."""
    os.environ.setdefault("PROMPT_TOOLKIT_NO_CPR", "1")
    from prompt_toolkit import PromptSession
    from prompt_toolkit.document import Document
    from prompt_toolkit.validation import ValidationError as Refused
    from prompt_toolkit.validation import Validator

    class ByCheck(Validator):
        def __init__(self, check: Check) -> None:
            self.check = check

        def validate(self, document: Document) -> None:
            why = self.check(document.text.strip())
            if why:
                raise Refused(len(document.text), why)  # the cursor stays at the end

    session: PromptSession[str] = PromptSession()  # keeps its last options: pass them all

    def ask(question: str, check: Check | None, secret: bool, default: str) -> str:
        while True:
            try:
                return session.prompt(
                    f"{question}: ", is_password=secret, default=default,
                    validator=ByCheck(check or (lambda _: None)), validate_while_typing=False,
                ).strip()  # fmt: skip
            except KeyboardInterrupt:
                print("(the setup must be completed; Ctrl-D leaves and it starts again)")

    return ask


class Wizard:
    def __init__(
        self,
        layout: Layout,
        factory: Path,
        config: Path,
        ask: Ask,
        say: Callable[[str], None],
        golive: GoLive | None = None,
        storage: Callable[[], Storage] | None = None,
        profile: BoardProfile | None = None,
    ) -> None:
        self.layout, self.factory, self.config = layout, factory, config
        self.devices = device_set(profile) if profile is not None else None
        """The board's device set (firmware/hw/profile.py): only what it leaves open is
        asked; None off a board's image (everything that has a step is asked)."""
        self.ask, self.say = ask, say
        self.golive = golive
        """Makes written files live (firmware.golive, on a board); None: at the next boot."""
        self.storage = storage
        """The board's drives, for the recording-drives step; None: no such step."""
        self._probe_loading = False

    def q(self, question: str, check: Check | None = None, default: str = "") -> str:
        return self.ask(question, check, False, default)

    def yes(self, question: str, default: bool = False) -> bool:
        d = "y" if default else "n"
        return self.q(f"{question} (y/n)", one_of("answer", "y", "n", "yes", "no"), d)[0] == "y"

    def run(self) -> int:
        """0 when the setup was applied; EOFError propagates (nothing written)."""
        self.say("nvr-pair first-boot setup: 6 steps; the board records only once it is done")
        while True:
            password = self.password()
            self._load_the_probe()
            raw = self.board()
            while True:
                raw.update(self.network(raw["board"]["side"]))
                try:
                    Answers.model_validate(raw)
                    break
                except ValidationError as e:
                    self.say(str(config_error(e, raw, "refused")))
                    self.say("step 3 again")
            self.pairing(raw)
            raw["camera"] = self.cameras()
            self.drives()
            if self.finish(raw, password):
                return 0
            self.say("nothing written; from the start again")

    def _load_the_probe(self) -> None:
        """PyAV is imported while the installer types steps 2-4, not after the camera's URL: on
        a board's small CPU it is a second or more of the probe's wait. Not before the first
        question, which it would slow down."""
        if not self._probe_loading:
            self._probe_loading = True
            threading.Thread(target=_import_the_probe, name="probe-import", daemon=True).start()

    def password(self) -> str:
        self.say("step 1/6: admin password (8 or more characters, two kinds)")
        while True:
            pw = self.ask(
                "admin password",
                lambda t: adminpw.weakness(t) and f"password: {adminpw.weakness(t)}",
                True,
                "",
            )
            if self.ask("again", None, True, "") == pw:
                return pw
            self.say("password: the two differ")

    def board(self) -> dict:
        self.say("step 2/6: this board")
        side = self.q("board A or B", one_of("board.side", "a", "b")).lower()
        name = self.q(
            "board name", field_check(BoardAnswers, "board", "name", {"side": side}), side
        )
        raw: dict = {"board": {"side": side, "name": name}}
        if self.devices is not None and Question.UPS_PROTOCOL in self.devices.questions:
            port = self.devices.ups.port
            raw["ups"] = {
                "protocol": self.q(
                    f"UPS on {port} (none/megatec/apc)",
                    one_of("ups.protocol", "none", "megatec", "apc"),
                    "none",
                ).lower()
            }
        return raw

    def network(self, side: str) -> dict:
        self.say("step 3/6: network")
        lan: dict = {}
        if self.q("LAN by DHCP or static", one_of("lan", "dhcp", "static"), "static") == "dhcp":
            lan["dhcp"] = True
        else:
            lan["address"] = self.q(
                "LAN address/prefix", field_check(LanAnswers, "lan", "address", {})
            )
            gw = self.q(
                "gateway (empty: none)", _opt(field_check(LanAnswers, "lan", "gateway", {}))
            )
            dns = self.q(
                "DNS servers (empty: none)", field_check(LanAnswers, "lan", "dns", {}, True)
            )
            lan |= {"gateway": gw} if gw else {}
            lan |= {"dns": split_list(dns)} if dns else {}
        mine, other = SYNC_DEFAULT[Side(side)], SYNC_DEFAULT[Side.B if side == "a" else Side.A]
        sync = {
            "address": self.q(
                "sync link address", field_check(SyncAnswers, "sync", "address", {}), str(mine)
            ),
            "peer_address": self.q(
                "peer sync address",
                field_check(SyncAnswers, "sync", "peer_address", {}),
                str(other.ip),
            ),
        }
        pair = {
            "virtual_ip": self.q(
                "virtual IP/prefix", field_check(PairAnswers, "pair", "virtual_ip", {})
            ),
            "peer_lan_address": self.q(
                "peer board LAN address", field_check(PairAnswers, "pair", "peer_lan_address", {})
            ),
        }
        ntp = self.q(
            "NTP servers (empty: image default)",
            field_check(NtpAnswers, "ntp", "servers", {}, True),
        )
        return {"lan": lan, "sync": sync, "pair": pair, "ntp": {"servers": split_list(ntp)}}

    def pairing(self, raw: dict) -> None:
        """Until paired or skipped: a wrong code or a board away is said and asked again."""
        self.say("step 4/6: pairing with the other board")
        live = self.golive is None
        while True:
            how = self.q("show a code, join with one, or skip (code/join/skip)",
                         one_of("pairing", "code", "join", "skip"), "skip")  # fmt: skip
            if how == "skip":
                self.say("pairing skipped: later with `nvr pair code` / `nvr pair join CODE`")
                return
            if not live:
                # The boards meet on the sync addresses of step 3: until they are live,
                # both carry the image's default one.
                self.say("the network of step 3 goes live now, so that the boards meet")
                files = self.files(raw)
                live = files is not None and self.go_live(files) is None
            if live and self.pair(how):
                return
            self.say("pairing not done: again, or skip and pair later with `nvr pair code`")

    def pair(self, how: str) -> bool:
        from firmware import paircli

        args = argparse.Namespace(
            config=self.config, url=None, replace=False, no_wait=False, code=""
        )
        if how == "code":
            return paircli.cmd_pair_code(args) == 0
        args.code = self.q("pairing code", _code_check)
        return paircli.cmd_pair_join(args) == 0

    def cameras(self) -> list[dict]:
        self.say("step 5/6: cameras")
        from firmware.recorder.events import redact

        with contextlib.suppress(ConfigError, OSError):
            for c in load_config(self.base()).camera if self.keeps() else []:
                self.say(f"  kept: {c.name} {redact(c.url)} (remove in the console's menu)")
        cams: list[dict] = []
        while self.yes("add a camera", not cams):
            base = {"name": "x", "url": "rtsp://camera/"}
            guess = ("", "")  # (name, URL) prefilled from a discovered camera
            how = self.q("by URL or discover on the LAN (url/discover)",
                         one_of("camera", "url", "discover"), "url")  # fmt: skip
            if how == "discover":
                self.say(f"looking for ONVIF cameras ({camdiscover.WINDOW_S:.0f} s) ...")
                try:
                    found = camdiscover.discover()
                except (camdiscover.DiscoveryError, OSError) as e:
                    self.say(f"discovery: {e}")
                    found = []
                for i, seen_cam in enumerate(found, 1):
                    self.say(f"  {i}. {seen_cam.line()}")
                numbers = [str(i) for i in range(1, len(found) + 1)]
                if not found:
                    self.say("no camera answered: give its RTSP URL")
                elif pick := self.q(f"camera number (1-{len(found)}, empty: by URL)",
                                    _opt(one_of("camera number", *numbers))):  # fmt: skip
                    chosen = found[int(pick) - 1]
                    guess = (chosen.name_guess(), chosen.rtsp_guess)
                    self.say("the URL is a guess (port 554): complete the path of the stream")
            name = self.q(
                "camera name", field_check(CameraAnswers, "camera", "name", base), guess[0]
            )
            url = self.q(
                "RTSP URL (no credentials)",
                field_check(CameraAnswers, "camera", "url", base),
                guess[1],
            )
            cam: dict = {"name": name, "url": url}
            user = self.q("username (empty: none)")
            if user:
                cam |= {"username": user, "password": self.ask("camera password", None, True, "")}
            try:
                cam_ok = CameraAnswers.model_validate(cam)
            except ValidationError as e:
                self.say(str(config_error(e, {"camera": cam}, "refused")))
                continue
            self.say("probing ...")
            from firmware.camprobe import ProbeError, probe  # PyAV: loaded for the first probe

            try:
                self.say(f"camera {name}: {probe(camera_url(cam_ok)).line()}")
                seen = True
            except ProbeError as e:
                self.say(f"camera {name}: {e}")
                seen = False
            if name in (c["name"] for c in cams):
                self.say(f"camera.name: {name!r} is used twice")
            elif self.yes(f"save camera {name}", seen):  # not read: saved only when asked to
                cams.append(cam)
        return cams

    def drives(self) -> None:
        """Recording drives, when the board has drives besides the system disk: before the
        summary, so that the firmware started by it records on the new volume."""
        if self.storage is None:
            return
        if self.devices is not None and Question.RECORDING_DRIVES not in self.devices.questions:
            data = self.devices.data
            self.say(f"recording drives: the board's own {data.kind.value} {data.device}")
            return
        from firmware.storagecli import StorageError, wizard_storage

        try:
            wizard_storage(self.storage(), lambda q: self.q(q), self.say)
        except (StorageError, HalError, OSError) as e:
            self.say(f"recording drives: {e} (nvr storage list)")

    def finish(self, raw: dict, password: str) -> bool:
        self.say("step 6/6: summary")
        base_path = self.base()
        try:
            base = base_path.read_bytes()
            read_toml(base, str(base_path))
            answers = Answers.model_validate(raw)
            files, cfg = render(answers, base.decode("utf-8-sig"), self.layout, self.keeps())
        except ValidationError as e:
            self.say(str(config_error(e, raw, "refused")))
            return False
        except (ConfigError, OSError) as e:
            self.say(f"setup: {e}")
            return False
        for line in summary_lines(answers, cfg):
            self.say(f"  {line}")
        if not self.yes("apply", True):
            return False
        try:
            changed = apply(files)
            adminpw.save(self.layout.data_root, password)
            write_file_atomic(done_path(self.layout.data_root), b"", 0o600)
        except OSError as e:
            self.say(f"setup: {e.filename}: cannot write: {e.strerror}")
            return False
        if self.golive is None:
            self.say("setup applied; the settings take effect at the next boot")
        elif self.go_live(changed) is None:
            self.say("setup applied and live")
        else:
            self.say("setup applied; what did not go live now does at the next boot")
        return True

    def base(self) -> Path:
        """The config the answers go into: the board's, else the factory's."""
        return self.layout.config if self.layout.config.exists() else self.factory

    def keeps(self) -> bool:
        """The cameras already in the board's config stay (the answered ones are added) once
        the board is paired: they may be the pair's, from the other board (firmware/pairsync.py).
        Before, they are the factory's (first boot copies its config into place) and are
        replaced, as `nvr setup` does."""
        from firmware.datadir import unpaired

        try:
            cfg = load_config(self.base())
        except ConfigError:
            return False
        return cfg.pair is not None and not unpaired(cfg)

    def files(self, raw: dict) -> list[Path] | None:
        """Write the files of the answers so far (steps 1-3); the paths changed, None when
        they cannot be written (said)."""
        base_path = self.base()
        try:
            base = base_path.read_bytes()
            answers = Answers.model_validate(raw)
            files, _ = render(answers, base.decode("utf-8-sig"), self.layout, self.keeps())
            return apply(files)
        except (ValidationError, ConfigError) as e:
            self.say(f"setup: {e}")
        except OSError as e:
            self.say(f"setup: {e.filename}: cannot write: {e.strerror}")
        return None

    def go_live(self, changed: list[Path]) -> str | None:
        assert self.golive is not None
        self.say("applying: network, time, restarting the firmware ...")
        why = self.golive(changed)
        if why:
            self.say(f"setup: not live: {why}")
        return why


def _code_check(text: str) -> str | None:
    from firmware.pairing import normalize_code

    try:
        normalize_code(text)
    except ValueError as e:
        return f"pairing code: {e}"
    return None


def _opt(check: Check) -> Check:
    return lambda t: None if not t else check(t)


def run_wizard(
    layout: Layout,
    factory: Path,
    config: Path,
    golive: GoLive | None = None,
    storage: Callable[[], Storage] | None = None,
    profile: BoardProfile | None = None,
) -> int:
    """The wizard on this terminal: 0 when applied, 1 when left before the end. `golive` and
    `storage` on a board only: a development host's disks are not the installer's."""
    ask = prompt_ask()
    say = lambda s: print(s, flush=True)  # noqa: E731
    try:
        return Wizard(layout, factory, config, ask, say, golive, storage, profile).run()
    except EOFError:
        print("\nsetup left before the end: it starts again at the next console start", flush=True)
        return 1


def _import_the_probe() -> None:
    """A failing import is not reported here: the probe's own import, in the wizard's thread,
    raises it again and says it."""
    with contextlib.suppress(Exception):
        importlib.import_module("firmware.camprobe")


def read_secret(inp: TextIO, out: TextIO | None = None, prompt: str = "") -> str | None:
    """One line without echo on a terminal (a pipe has none to turn off); None at EOF. The
    echo goes off before `prompt` is written: what is typed as soon as it shows is neither
    echoed nor thrown away."""
    if not inp.isatty():
        if out is not None:
            out.write(prompt)
            out.flush()
        line = inp.readline()
        return line.rstrip("\r\n") if line else None
    import termios

    fd = inp.fileno()
    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    new[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSADRAIN, new)
    try:
        if out is not None:
            out.write(prompt)
            out.flush()
        line = inp.readline()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
    return line.rstrip("\r\n") if line else None


class PasswordCheck(Enum):
    RIGHT = "right"
    WRONG = "wrong"
    GONE = "gone"
    """EOF: the line went away, or the stored password cannot be read (said)."""


def load_backoff(state: Path | None) -> adminpw.Backoff:
    """The failures so far, kept in `state` (on /run: monotonic time, this boot), so that
    neither ending the console (systemd starts it again) nor asking from another place (the
    login, the root shell) resets them."""
    backoff = adminpw.Backoff()
    try:
        failures, until = (state.read_text() if state else "").split()
        backoff.failures, backoff.until = int(failures), float(until)
    except (OSError, ValueError):
        pass  # none yet, or not ours: start afresh
    return backoff


def admin_try(
    data_root: Path,
    inp: TextIO,
    out: TextIO,
    backoff: adminpw.Backoff,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    state: Path | None = None,
) -> PasswordCheck:
    """One ask of the admin password, after the wait that `backoff` calls for; a failure is
    counted there and kept in `state`."""
    try:
        stored = password_path(data_root).read_text()
    except OSError as e:
        out.write(f"console: the admin password cannot be read: {e.strerror}\n")
        return PasswordCheck.GONE
    wait = backoff.wait(clock())
    if wait:
        out.write(f"wait {wait:.0f} s\n")
        out.flush()
        sleep(wait)  # the back-off itself, on the serial line
    given = read_secret(inp, out, "admin password: ")
    out.write("\n")
    if given is None:
        return PasswordCheck.GONE
    if adminpw.verify(stored, given):
        if state:
            state.unlink(missing_ok=True)
        return PasswordCheck.RIGHT
    backoff.failed(clock())
    if state:
        with contextlib.suppress(OSError):
            write_file_atomic(state, f"{backoff.failures} {backoff.until}".encode(), 0o600)
    out.write("wrong password\n")
    return PasswordCheck.WRONG


def login(
    data_root: Path,
    inp: TextIO,
    out: TextIO,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    state: Path | None = None,
    audit: Callable[[str], None] = lambda event: None,
) -> bool:
    """The admin password before the console's commands, until right; False when gone.
    Each login and failed login is an audit event (a leaf of the evidence log)."""
    backoff = load_backoff(state)
    while True:
        match admin_try(data_root, inp, out, backoff, clock, sleep, state):
            case PasswordCheck.RIGHT:
                audit("console-login")
                return True
            case PasswordCheck.GONE:
                return False
            case PasswordCheck.WRONG:
                audit("console-login-failed")
