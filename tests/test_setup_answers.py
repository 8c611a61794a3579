"""`nvr setup --answers FILE`: the wizard's answers from a TOML file, checked like the config,
applied as the board's files on the data partition (atomic, idempotent, credentials 0600 and
never printed)."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, nvr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_timesync import layout_made

from firmware.answers import parse_answers
from firmware.config import ConfigError, load_config

EXAMPLE = ROOT / "rootfs" / "usr" / "share" / "nvr" / "answers.toml"
FACTORY = ROOT / "rootfs" / "etc" / "nvr" / "nvr.toml"
SECRET = "s3cr:t/@x y"


def answers(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "answers.toml"
    p.write_text(text)
    return p


def setup(tmp_path: Path, text: str, check: bool = True):
    res = nvr("setup", "--answers", str(answers(tmp_path, text)), "--data-root",
              str(tmp_path / "data"), "--factory", str(FACTORY), check=False)  # fmt: skip
    if check:
        assert res.returncode == 0, res.stderr
    return res


def example(**changes: str) -> str:
    """The shipped example with lines replaced (old line start -> new line)."""
    text = EXAMPLE.read_text().replace('password = "change-me"', f"password = {SECRET!r}")
    for old, new in changes.items():
        lines = text.splitlines()
        hits = [i for i, ln in enumerate(lines) if ln.startswith(old)]
        assert hits, old
        lines[hits[0]] = new
        text = "\n".join(lines) + "\n"
    return text


def test_the_example_gives_the_board_files_and_the_firmware_loads_its_config(tmp_path):
    res = setup(tmp_path, example())
    data = tmp_path / "data"
    cfg = load_config(data / "etc/nvr/nvr.toml")
    assert cfg.board.name == "nvr-a"
    assert cfg.pair is not None and cfg.pair.priority == 150
    assert str(cfg.pair.virtual_ip) == "192.0.2.100/24"
    assert str(cfg.pair.peer_lan_address) == "192.0.2.12"
    assert str(cfg.pair.peer_sync_address) == "198.51.100.2"
    assert cfg.pair.key_file == Path("/etc/nvr/pair.key")  # the factory's, untouched
    assert [c.name for c in cfg.camera] == ["cam1", "cam2"]
    assert cfg.camera[0].url == "rtsp://192.0.2.31:8554/cam1"
    from urllib.parse import unquote, urlsplit

    url = urlsplit(cfg.camera[1].url)
    assert (unquote(url.username), unquote(url.password)) == ("viewer", SECRET)
    # Everything else as the factory config has it, comments included.
    text = (data / "etc/nvr/nvr.toml").read_text()
    assert "# Board configuration of the NVR pair firmware." in text
    assert cfg.recorder.segment_seconds == 4 and cfg.pair.mirror_port == 5406
    lan = (data / "etc/systemd/network/10-lan.network").read_text()
    assert "Name=lan0" in lan and "Address=192.0.2.11/24" in lan  # the profile's names
    assert "Gateway=192.0.2.1" in lan and "DNS=192.0.2.1" in lan and "DHCP" not in lan
    sync = (data / "etc/systemd/network/20-sync.network").read_text()
    assert "Name=sync0" in sync and "Address=198.51.100.1/28" in sync
    ntp = (data / "etc/chrony/sources.d/nvr.sources").read_text()
    assert ntp.splitlines() == [f"server {s} iburst" for s in
                                ("192.0.2.1", "pool.ntp.org", "198.51.100.2")]  # fmt: skip
    assert (data / "etc/chrony/conf.d/nvr.conf").read_text() == "allow 198.51.100.2\n"
    # Credentials: the config is 0600 in a 0700 directory, and never printed.
    assert stat.S_IMODE(os.stat(data / "etc/nvr/nvr.toml").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data / "etc/nvr").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data / "etc/systemd/network/10-lan.network").st_mode) == 0o644
    for leak in (SECRET, "s3cr", "viewer"):
        assert leak not in res.stdout + res.stderr
    assert "camera cam2: rtsp://***@192.0.2.32:554/stream1" in res.stdout


def test_board_b_with_dhcp_gets_the_other_sync_address(tmp_path):
    text = example(**{
        'side = "a"': 'side = "B"', 'name = "nvr-a"': "", "dhcp = false": "dhcp = true",
        "address = ": "", "gateway = ": "", "dns = ": "",
    })  # fmt: skip
    setup(tmp_path, text)
    data = tmp_path / "data"
    cfg = load_config(data / "etc/nvr/nvr.toml")
    assert cfg.board.name == "b" and cfg.pair is not None and cfg.pair.priority == 100
    assert str(cfg.pair.peer_sync_address) == "198.51.100.1"
    lan = (data / "etc/systemd/network/10-lan.network").read_text()
    assert "DHCP=ipv4" in lan and "\nAddress=" not in lan
    assert "Address=198.51.100.2/28" in (data / "etc/systemd/network/20-sync.network").read_text()


def test_running_it_again_changes_nothing_and_new_answers_replace_old_ones(tmp_path):
    setup(tmp_path, example())
    data = tmp_path / "data"
    files = sorted(p for p in data.rglob("*") if p.is_file())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in files}
    res = setup(tmp_path, example())
    assert "written" not in res.stdout and res.stdout.count("unchanged:") == 5
    assert sorted(p for p in data.rglob("*") if p.is_file()) == files  # no temp files left
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in files} == before
    # A board's own later edits of other keys are kept; the answered keys are set again.
    cfg = data / "etc/nvr/nvr.toml"
    cfg.write_text(cfg.read_text().replace("retention_days = 30", "retention_days = 7"))
    text = example(**{"servers = ": ""})
    text = text[: text.index("[[camera]]")]  # no cameras, no NTP servers
    setup(tmp_path, text)
    loaded = load_config(cfg)
    assert loaded.recorder.retention_days == 7 and loaded.camera == []
    sources = (data / "etc/chrony/sources.d/nvr.sources").read_text()
    assert sources == "server 198.51.100.2 iburst\n"  # the peer only: the image's pool stays


BAD = [
    ({'side = "a"': 'side = "c"'}, "board.side"),
    ({'name = "nvr-a"': 'name = "nvr a"'}, "board.name"),
    ({"address = ": 'address = "192.0.2.11"'}, "lan.address"),  # no prefix: /32
    ({"address = ": 'address = "192.0.2.300/24"'}, "lan.address"),
    ({"dhcp = false": "dhcp = true"}, "lan.address"),  # DHCP with a static address
    ({"address = ": ""}, "lan.address"),  # neither
    ({"gateway = ": 'gateway = "203.0.113.1"'}, "lan.gateway"),
    ({"dns = ": 'dns = ["dns.example"]'}, "lan.dns[1]"),
    ({"# peer_address": 'peer_address = "198.51.100.1"'}, "sync.peer_address"),
    ({"# address": 'address = "203.0.113.17/28"'}, "sync.peer_address"),
    ({"virtual_ip = ": 'virtual_ip = "203.0.113.100/24"'}, "pair.virtual_ip"),
    ({"virtual_ip = ": 'virtual_ip = "192.0.2.12/24"'}, "pair.virtual_ip"),
    ({"peer_lan_address = ": 'peer_lan_address = "192.0.2.11"'}, "pair.peer_lan_address"),
    ({"peer_lan_address = ": ""}, "pair.peer_lan_address"),
    ({"[pair]": '[pair]\nkey_file = "/etc/nvr/pair.key"'}, "pair.key_file: unknown key"),
    ({"servers = ": 'servers = ["bad host"]'}, "ntp.servers[1]"),
    ({'url = "rtsp://192.0.2.31': 'url = "http://192.0.2.31/x"'}, "camera[1] (cam1).url"),
    ({'url = "rtsp://192.0.2.32': 'url = "rtsp://u:p@192.0.2.32/"'}, "camera[2] (cam2).url"),
    ({"username = ": ""}, "camera[2] (cam2)"),
    ({'name = "cam2"': 'name = "cam1"'}, "camera: camera name 'cam1' is used twice"),
    ({"[ntp]": "[ntp]\nserver = 1"}, "ntp.server: unknown key"),
    ({"[board]": "[board]\nside = 1"}, "not valid TOML"),  # a key twice
]


@pytest.mark.parametrize(("changes", "key"), BAD, ids=[k for _, k in BAD])
def test_each_bad_answer_names_the_file_and_the_key_and_writes_nothing(tmp_path, changes, key):
    text = example(**changes)
    with pytest.raises(ConfigError) as e:
        parse_answers(text, "answers.toml")
    assert f"answers.toml: {key}" in str(e.value)
    assert SECRET not in str(e.value)
    res = setup(tmp_path, text, check=False)
    assert res.returncode == 2 and f"{tmp_path / 'answers.toml'}: {key}" in res.stderr
    assert SECRET not in res.stdout + res.stderr
    assert not (tmp_path / "data").exists()


def test_a_bad_password_is_refused_without_being_shown(tmp_path):
    text = example().replace(repr(SECRET), '"s3cret\\u0007"')
    with pytest.raises(ConfigError) as e:
        parse_answers(text, "answers.toml")
    assert "camera[2] (cam2).password" in str(e.value) and "s3cret" not in str(e.value)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user=st.text(min_size=1, max_size=20), password=st.text(min_size=1, max_size=40))
def test_any_credentials_come_back_as_given_or_are_refused(tmp_path, user, password):
    """Whatever the vendor's password, the recorder's URL carries exactly it, or the answer is
    refused with a ConfigError that does not show it."""
    from urllib.parse import unquote, urlsplit

    from firmware.setupfiles import Layout, render

    text = example().replace('username = "viewer"', f"username = {_toml_str(user)}")
    text = text.replace(repr(SECRET), _toml_str(password))
    try:
        a = parse_answers(text, "answers.toml")
    except ConfigError as e:
        assert "answers.toml: camera[2] (cam2)." in str(e)
        return
    _, cfg = render(a, FACTORY.read_text(), Layout(tmp_path))
    url = urlsplit(cfg.camera[1].url)
    assert (unquote(url.username or ""), unquote(url.password or "")) == (user, password)
    assert url.hostname == "192.0.2.32"


def _toml_str(s: str) -> str:
    """s as a TOML basic string: JSON's escapes are TOML's, and TOML wants DEL escaped too."""
    import json

    quoted = json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")
    assert tomllib.loads(f"x = {quoted}")["x"] == s
    return quoted


def test_a_stale_temp_file_never_widens_the_credentials_file(tmp_path):
    etc = tmp_path / "data/etc/nvr"
    etc.mkdir(parents=True, mode=0o700)
    stale = etc / ".nvr.toml.tmp"  # a power cut during an earlier write, made 0644
    stale.write_text("x")
    stale.chmod(0o644)
    setup(tmp_path, example())
    assert stat.S_IMODE(os.stat(etc / "nvr.toml").st_mode) == 0o600


def test_the_image_reads_the_network_files_from_data():
    """The files setup writes replace the image's defaults of the same name: networkd reads
    /etc/systemd/network (a link into /data) before /usr/lib/systemd/network, and starts only
    once /data is mounted and laid out."""
    import importlib.util
    import inspect

    from firmware.setupfiles import Layout

    spec = importlib.util.spec_from_file_location("image_build", ROOT / "image" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    script = inspect.getsource(build.customize_script)
    assert 'ln -s /data/etc/systemd/network "$root/etc/systemd/network"' in script
    written = Layout(Path("/data")).network_dir
    assert written == Path("/data/etc/systemd/network")
    defaults = {p.name for p in (ROOT / "rootfs/usr/lib/systemd/network").glob("*.network")}
    assert defaults == {"10-lan.network", "20-sync.network"}
    assert not (ROOT / "rootfs/etc/systemd/network").exists()  # it would hide the link
    units = ROOT / "rootfs/usr/lib/systemd/system"
    dropin = (units / "systemd-networkd.service.d/nvr.conf").read_text()
    assert "RequiresMountsFor=/data" in dropin and "After=nvr-data-layout.service" in dropin
    layout = (units / "nvr-data-layout.service").read_text()
    assert str(written) in layout_made() and "Before=systemd-networkd.service" in layout
    assert Layout(Path("/data")).config == Path("/data/etc/nvr/nvr.toml")  # /etc/nvr's target
