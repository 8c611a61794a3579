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
