"""What each `nvr` command imports, checked without a clock: pydantic, aiohttp, PyAV and pyroute2
cost a large part of a second together, and the installer's quick commands must not pay for
them (issue 15; hil/bench_start.py measures the times). A fresh interpreter per check, since
this test process has imported everything already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("av", "aiohttp", "pyroute2", "pydantic", "spake2", "boto3", "botocore")
NOT_FOR_A_SINGLE_BOARD = (
    "pyroute2",
    "spake2",
    "firmware.failover.daemon",
    "firmware.mirror",
    "firmware.pairsync",
    "tomlkit",
    "firmware.answers",
)
"""What a single board (no [pair]) starts without: the pair's parts, the NICs' netlink (until a
NIC is first asked), the setup's TOML writer and answers."""

_REPORT = """
import json, sys
roots = {roots!r}
def loaded():
    return sorted(m for m in sys.modules if any(m == r or m.startswith(r + ".") for r in roots))
"""


def loaded_after(body: str, roots: tuple[str, ...]) -> tuple[list[str], str]:
    """Run `body` in a fresh interpreter; the modules under `roots` it left imported, and its
    stdout and stderr (what the command said)."""
    code = _REPORT.format(roots=roots) + body + "\nprint('\\nLOADED ' + json.dumps(loaded()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    out, _, tail = done.stdout.rpartition("\nLOADED ")
    assert tail, f"the check did not finish ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(tail), out + done.stderr


def nvr_loads(*argv: str, roots: tuple[str, ...] = HEAVY) -> tuple[list[str], str]:
    """`nvr ARGV` in-process (main(), its SystemExit caught), then what it imported."""
    body = (
        "from firmware.cli import main\n"
        "try:\n"
        f"    code = main({list(argv)!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('exit', code)\n"
    )
    return loaded_after(body, roots)


def test_help_imports_no_heavy_module() -> None:
    """`nvr --help` builds every command's parser: none of them may import its command's code."""
    loaded, out = nvr_loads("--help")
    assert "usage: nvr" in out and "exit 0" in out
    assert loaded == []


def test_every_subcommand_help_imports_no_heavy_module() -> None:
    """The parsers other modules add (hw, pair, network, storage, archive) stay light on their
    own; boto3 comes in only when an archive command runs."""
    for cmd in ("hw", "pair", "network", "storage", "run", "console", "archive", "verify"):
        loaded, out = nvr_loads(cmd, "--help")
        assert "exit 0" in out, (cmd, out)
        assert loaded == [], cmd


def test_catalog_imports_no_heavy_module(tmp_path: Path) -> None:
    """`nvr catalog` reads SQLite and prints; a missing catalog is said the same way."""
    from firmware.catalog import Catalog

    (tmp_path / "data").mkdir()
    Catalog(tmp_path / "data").close()
    loaded, out = nvr_loads("catalog", "--data", str(tmp_path / "data"))
    assert "no recordings" in out and "exit 0" in out
    assert loaded == []
    loaded, out = nvr_loads("catalog", "--data", str(tmp_path / "none"))
    assert "no catalog here" in out and "exit 2" in out
    assert loaded == []


def test_status_with_url_imports_no_heavy_module() -> None:
    """`nvr status --url` is urllib and JSON (a closed port: the failure path imports no more)."""
    loaded, out = nvr_loads("status", "--url", "http://127.0.0.1:9")
    assert "does not answer" in out and "exit 1" in out
    assert loaded == []


def test_status_with_config_imports_only_the_config_model(tmp_path: Path) -> None:
    """The port comes from the config, which pydantic checks; nothing else heavy."""
    cfg = tmp_path / "nvr.toml"
    cfg.write_text(f'[board]\nname = "a"\ndata_dir = "{tmp_path}"\n[api]\nlisten_port = 9\n')
    loaded, out = nvr_loads("status", "--config", str(cfg))
    assert "does not answer at http://127.0.0.1:9" in out and "exit 1" in out
    assert {m.split(".")[0] for m in loaded} == {"pydantic"}
    cfg.write_text("[board]\nname = 5\n")
    loaded, out = nvr_loads("status", "--config", str(cfg))
    assert "board.name" in out and "exit 2" in out  # a bad config is still said as before


def test_config_error_is_one_class_wherever_it_is_imported_from() -> None:
    """firmware.config re-exports the light module's ConfigError: `except` clauses that name
    either catch what load_config raises."""
    from firmware import config, configfile

    assert config.ConfigError is configfile.ConfigError
    assert config.read_toml is configfile.read_toml and config.load_file is configfile.load_file


@pytest.mark.parametrize("serve_api", [False, True])
def test_single_board_starts_without_the_pair_parts(tmp_path: Path, serve_api: bool) -> None:
    """A board without [pair] builds without the election, the mirror, the pair's settings,
    pyroute2 (opened only when a NIC is first used) and the setup's own modules."""
    body = (
        "from pathlib import Path\n"
        "from firmware.board import Board\n"
        "from firmware.config import validate_config\n"
        f"cfg = validate_config({{'board': {{'name': 'a', 'data_dir': {str(tmp_path)!r}}}}}, 'x')\n"
        f"board = Board(cfg, serve_api={serve_api}, board_file=Path({str(tmp_path / 'no')!r}))\n"
        "print('role', board.role.value, board.failover, board.mirror)\n"
    )
    loaded, out = loaded_after(body, NOT_FOR_A_SINGLE_BOARD)
    assert "role single None None" in out, out
    assert loaded == []


def test_board_main_process_loads_no_pyav(tmp_path: Path) -> None:
    """`nvr run`'s own process: the board built with a camera, the API on, and the recorder's
    start-up recovery run over a clean data directory, all without PyAV (its FFmpeg libraries
    are large). The recorder's worker processes import it; the module of their spawn target,
    which the supervisor imports, does not."""
    cfg = {
        "board": {"name": "a", "data_dir": str(tmp_path)},
        "camera": [{"name": "door", "url": "rtsp://u:secret@127.0.0.1:9/door"}],
    }
    body = (
        "from pathlib import Path\n"
        "from firmware.board import Board\n"
        "from firmware.config import validate_config\n"
        "from firmware.recorder.recovery import recover\n"
        f"cfg = validate_config({cfg!r}, 'x')\n"
        f"board = Board(cfg, serve_api=True, board_file=Path({str(tmp_path / 'no')!r}))\n"
        "print(recover(board.data_dir, board.catalog, 'a').summary())\n"
        "print('shown as', board.recorder.status['door'].url)\n"
    )
    loaded, out = loaded_after(body, ("av",))
    assert "recovery: 0 partial segments salvaged" in out, out
    assert "shown as rtsp://***@127.0.0.1:9/door" in out, out
    assert loaded == []


def test_console_reaches_the_wizards_first_question_without_pyav(tmp_path: Path) -> None:
    """`nvr console` on a board not set up: everything up to the wizard's first question
    (go-live, storage, board profile, wizard) without PyAV, which only the camera probe
    needs, nor the console's menu, which comes after the wizard. The line is closed at the
    question: the wizard says it was left."""
    body = (
        "import os\n"
        "fd = os.open(os.devnull, os.O_RDONLY)\n"
        "os.dup2(fd, 0)\n"
        "sys.stdin = open(os.devnull)\n"
        "from firmware.cli import main\n"
        "try:\n"
        f"    code = main(['console', '--data-root', {str(tmp_path / 'data')!r},\n"
        f"                 '--config', {str(tmp_path / 'nvr.toml')!r},\n"
        f"                 '--release', {str(tmp_path / 'release')!r},\n"
        f"                 '--factory', {str(tmp_path / 'factory.toml')!r},\n"
        f"                 '--board', {str(tmp_path / 'board.toml')!r}])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('exit', code)\n"
    )
    loaded, out = loaded_after(body, ("av", "firmware.camprobe", "firmware.console"))
    assert "step 1/6" in out and "setup left before the end" in out and "exit 1" in out, out
    assert loaded == []


def test_the_wizard_loads_the_camera_probe_once_the_first_step_is_answered(
    tmp_path: Path,
) -> None:
    """PyAV is imported in the background while steps 2-4 are typed, so the camera's probe
    does not wait for it; not before the first question, which it would slow down."""
    body = (
        "import threading\n"
        "from pathlib import Path\n"
        "from firmware.setupfiles import Layout\n"
        "from firmware.wizard import Wizard\n"
        "asked = []\n"
        "def ask(question, check, secret, default):\n"
        "    asked.append((question, 'firmware.camprobe' in sys.modules))\n"
        "    if question in ('admin password', 'again'):\n"
        "        return 'Install3r-pw'\n"
        "    raise EOFError\n"
        f"w = Wizard(Layout(Path({str(tmp_path)!r})), Path('rootfs/etc/nvr/nvr.toml'),\n"
        f"           Path({str(tmp_path / 'nvr.toml')!r}), ask, lambda s: None)\n"
        "try:\n"
        "    w.run()\n"
        "except EOFError:\n"
        "    pass\n"
        "for t in threading.enumerate():\n"
        "    if t.name == 'probe-import':\n"
        "        t.join(60)\n"
        "print('asked', asked)\n"
    )
    loaded, out = loaded_after(body, ("firmware.camprobe",))
    assert "asked [('admin password', False), ('again', False), ('board A or B', " in out, out
    assert loaded == ["firmware.camprobe"]


_FORKSERVER = """
import os, time
from firmware.recorder.procs import prewarm
from hil.proctree import children
prewarm()
deadline = time.monotonic() + 60
ready = []
while not ready and time.monotonic() < deadline:
    for pid in children(os.getpid()):
        if "libavformat" in open(f"/proc/{pid}/maps").read():
            ready.append(pid)
    time.sleep(0.05)
print("forkserver with PyAV:", ready)
"""


def test_run_starts_the_workers_forkserver_first_with_pyav_loaded_there_not_here() -> None:
    """`nvr run` and `nvr record` start the forkserver its workers fork from before their own
    imports: PyAV and the ingest load in that process (beside the main process's start, on
    another core), never in the main process."""
    loaded, out = loaded_after(_FORKSERVER, HEAVY)
    assert "forkserver with PyAV: [" in out and "forkserver with PyAV: []" not in out, out
    assert loaded == []
    from firmware.recorder import procs

    assert procs.context().get_start_method() == "forkserver"
