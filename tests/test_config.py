import pytest

from firmware.config import ConfigError, load_config, parse_config

GOOD = """
[board]
name = "a"
data_dir = "/tmp/x"

[recorder]
segment_seconds = 2

[[camera]]
name = "cam1"
url = "rtsp://192.0.2.31:8554/cam1"
"""


def test_example_config_in_rootfs_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "rootfs/etc/nvr/nvr.toml")
    assert cfg.pair is not None and cfg.camera


def test_good_config():
    cfg = parse_config(GOOD)
    assert cfg.recorder.segment_seconds == 2
    assert cfg.camera[0].name == "cam1"
    assert cfg.pair is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[recorder]\nsegment_seconds = 'four'\n", "nvr.toml: recorder.segment_seconds:"),
        ("[recordr]\nsegment_seconds = 4\n", "nvr.toml: recordr: unknown key"),
        ("[[camera]]\nname = 'c 1'\nurl = 'rtsp://x'\n", "camera[1] (c 1).name"),
        ("[[camera]]\nname = 'c1'\nurl = 'http://x'\n", "camera[1] (c1).url: must be an rtsp"),
        (
            "[[camera]]\nname='a'\nurl='rtsp://x'\n[[camera]]\nname='a'\nurl='rtsp://y'\n",
            "used twice",
        ),
        ("[pair]\npriority = 300\n", "pair.priority"),
        ("[board\nname='a'\n", "nvr.toml: not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(text, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "nvr.toml")
    assert needle in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "none.toml")


def _err(text: str | bytes, source: str = "nvr.toml") -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text, source)
    return str(e.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[recorder]\nretention_days = inf\n", "recorder.retention_days"),
        ("[recorder]\nretention_days = 1e300\n", "recorder.retention_days"),
        ("[recorder]\nmin_free_mb = inf\n", "recorder.min_free_mb"),
        ("[recorder]\nmin_free_mb = nan\n", "recorder.min_free_mb"),
        ("[ups]\ni2c_bus = 99999999999999999999\n", "ups.i2c_bus"),
        ("[recorder]\nworkers = true\n", "recorder.workers"),
        ("[recorder]\nsegment_seconds = '4'\n", "recorder.segment_seconds"),
        ("[pair]\npreempt = 1\n", "pair.preempt"),
        ("[panel]\nrows = true\n", "panel.rows"),
        ("[panel]\nrows = 3\n", "panel.rows"),
        ("[api]\nlisten_address = 'not-an-ip'\n", "api.listen_address"),
        ("[board]\ndata_dir = ''\n", "board.data_dir"),
        ('[board]\ndata_dir = "/tmp/a\\u0000b"\n', "board.data_dir"),
        ("[network]\nlan_interface = 'eth0/../x'\n", "network.lan_interface"),
        ('[ups]\nshutdown_command = "poweroff\\u0000"\n', "ups.shutdown_command"),
        ('[board]\nname = "a\\n"\n', "board.name"),  # `$` once let a trailing newline pass
    ],
)
def test_values_out_of_type_or_range_are_refused(text, key):
    """inf or 1e300 once passed and crashed the start (OverflowError); true passed as 1."""
    assert f"nvr.toml: {key}: " in _err(text)


def test_retention_and_free_space_limits_are_documented_ranges():
    cfg = parse_config("[recorder]\nretention_days = 3650\nmin_free_mb = 1000000\n")
    assert cfg.recorder.retention_days == 3650 and cfg.recorder.min_free_mb == 1e6
    assert "recorder.retention_days" in _err("[recorder]\nretention_days = 3651\n")
    assert "recorder.min_free_mb" in _err("[recorder]\nmin_free_mb = 1000001\n")


@pytest.mark.parametrize("text", ["", " \n\t\n", "# nothing but a comment\n", b"\xef\xbb\xbf"])
def test_empty_config_is_refused(text):
    """An empty file once ran as board 'single' on 0.0.0.0:8080 with data in /var/lib/nvr."""
    assert _err(text).startswith("nvr.toml: the file is empty")


def test_non_utf8_file_names_file_and_line(tmp_path):
    p = tmp_path / "nvr.toml"
    p.write_bytes(b"[board]\nname = 'a'\ndata_dir = '/tmp/\xe9t\xe9'\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: line 3: not UTF-8 text (save the file as UTF-8)"


def test_utf8_with_byte_order_mark_is_read(tmp_path):
    p = tmp_path / "nvr.toml"
    p.write_bytes("\ufeff[board]\nname = 'a'\n".encode())
    assert load_config(p).board.name == "a"


def test_reconnect_min_above_max_is_refused():
    msg = _err("[recorder]\nreconnect_min_seconds = 20\nreconnect_max_seconds = 10\n")
    assert (
        "nvr.toml: recorder: reconnect_min_seconds (20) is more than reconnect_max_seconds (10)"
        in msg
    )


PAIR = """
[pair]
peer_lan_address = "192.0.2.12"
peer_sync_address = "198.51.100.2"
virtual_ip = "192.0.2.100/24"
mirror_port = {mirror}
[api]
listen_port = {api}
"""


def test_api_and_mirror_on_one_port_are_refused():
    msg = _err(PAIR.format(mirror=5406, api=5406))
    assert "nvr.toml: api.listen_port: 5406 is also [pair] mirror_port" in msg
    assert parse_config(PAIR.format(mirror=5406, api=0)).api.listen_port == 0
    assert parse_config(PAIR.format(mirror=5406, api=5405)).pair.mirror_port == 5406


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe[board]\n",
        b"",
        b"[recorder]\nretention_days = inf\n",
        b"[api]\nlisten_address = 'x'\n",
    ],
)
@pytest.mark.parametrize("command", [["run"], ["status"], ["token"], ["hw", "ups"]])
def test_cli_prints_config_error_without_traceback(tmp_path, content, command):
    """Every command that reads the config says what is wrong with it, and no board starts."""
    from conftest import nvr

    p = tmp_path / "nvr.toml"
    p.write_bytes(content)
    done = nvr(*command, "--config", str(p), check=False)
    assert done.returncode != 0 and done.stderr.startswith("nvr"), done.stderr
    assert f": {p}: " in done.stderr and "Traceback" not in done.stderr


def test_keys_and_names_from_the_file_are_shown_on_one_short_line():
    msg = _err(
        '[recorder]\n"a\\nnvr: all good" = 1\n[[camera]]\nname = "x\\ny"\nurl = "rtsp://h/"\n'
    )
    assert msg.splitlines() == [
        "nvr.toml: recorder.a?nvr: all good: unknown key (check the spelling against the "
        "documented example)",
        "nvr.toml: camera[1] (x?y).name: must be 1-63 letters, digits, '-' or '_'",
    ]
    assert len(_err(f"[board]\n{'k' * 5000} = 1\n")) < 200
