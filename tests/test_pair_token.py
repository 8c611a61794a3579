"""One API token for a pair: derived from the pair key, so a client's token works on whichever
board holds the floating IP; a single board keeps its generated token file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import nvr

from firmware.board import Board
from firmware.config import Config, ConfigError, load_config
from firmware.datadir import api_token
from firmware.pairkey import load_pair_key, make_pair_key, pair_api_token
from hal.sim.nic import SimNic

KEY = b"00112233445566778899aabbccddeeff"
KEY_TOKEN = "XYMI92u3tdZDw26IoKIV4vylhbrSt9EQg19OLaMBsvI"
"""HMAC-SHA256(KEY, b"nvr-pair api token v1"), url-safe base64 without padding, as
`openssl dgst -sha256 -hmac ... -binary | base64 | tr '+/' '-_' | tr -d =` computes it: clients
and installers may rely on the recipe, so a change to it must fail here."""

INSTALLER_TOKEN = "installer-token-0123456789abcdef-xyz"
LAN = {"a": "192.0.2.11", "b": "192.0.2.12"}
SYNC = {"a": "198.51.100.1", "b": "198.51.100.2"}


def write_config(tmp: Path, host: str, key_file: Path | None, **api: str) -> Path:
    """A board's config file; key_file None = a single board without [pair]."""
    peer = "b" if host == "a" else "a"
    lines = ["[board]", f'name = "{host}"', f'data_dir = "{tmp / host / "data"}"', ""]
    if key_file is not None:
        lines += [
            "[pair]",
            f'peer_lan_address = "{LAN[peer]}"',
            f'peer_sync_address = "{SYNC[peer]}"',
            'virtual_ip = "192.0.2.100/24"',
            f"priority = {150 if host == 'a' else 100}",
            f'key_file = "{key_file}"',
            "",
        ]
    lines += ["[api]", "listen_port = 0", *(f'{k} = "{v}"' for k, v in api.items())]
    path = tmp / host / "nvr.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp: Path, host: str, key_file: Path | None, **api: str) -> Config:
    return load_config(write_config(tmp, host, key_file, **api))


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "pair.key"
    make_pair_key(path)
    return path


def board(cfg: Config) -> Board:
    nic = SimNic({"eth0": "02:00:00:00:00:01", "eth1": "02:00:00:00:00:02"})
    return Board(cfg, serve_api=False, nic=nic)


def test_derivation_is_the_documented_recipe_and_stable():
    assert pair_api_token(KEY) == KEY_TOKEN


def test_token_differs_by_key_and_a_new_key_file_rotates_it(tmp_path, key_file):
    assert pair_api_token(KEY) != pair_api_token(KEY[:-1] + b"0")
    cfg = config(tmp_path, "a", key_file)
    before = api_token(cfg)
    key_file.unlink()
    make_pair_key(key_file)
    after = api_token(cfg)
    assert after != before
    assert after == pair_api_token(load_pair_key(key_file))


def test_both_boards_of_a_pair_give_the_same_token(tmp_path, key_file):
    a, b = config(tmp_path, "a", key_file), config(tmp_path, "b", key_file)
    want = pair_api_token(load_pair_key(key_file))
    assert api_token(a) == api_token(b) == want
    assert api_token(a, board=False) == api_token(b, board=False) == want
    for host in ("a", "b"):
        assert not (tmp_path / host / "data" / "api.token").exists()
    printed = {
        h: nvr("token", "--config", str(write_config(tmp_path, h, key_file))).stdout.strip()
        for h in ("a", "b")
    }
    assert printed == {"a": want, "b": want}


def test_a_board_with_pair_but_no_key_yet_keeps_a_single_board_s_token(tmp_path):
    """Unpaired (`nvr pair` gives it the key): it records alone, with its own token file."""
    path = write_config(tmp_path, "a", tmp_path / "missing.key")
    res = nvr("token", "--config", str(path), check=False)
    assert res.returncode == 1 and "creates it on first start" in res.stderr
    token = api_token(load_config(path))  # the firmware's start makes it
    assert (tmp_path / "a" / "data" / "api.token").read_text().strip() == token
    assert nvr("token", "--config", str(path)).stdout.strip() == token


def test_a_single_board_keeps_its_random_file_token(tmp_path, key_file):
    cfg = config(tmp_path, "a", None)
    path = tmp_path / "a" / "data" / "api.token"
    res = nvr("token", "--config", str(write_config(tmp_path, "a", None)), check=False)
    assert res.returncode == 1 and "creates it on first start" in res.stderr
    assert not path.exists()
    token = api_token(cfg)
    assert path.read_text().strip() == token
    assert path.stat().st_mode & 0o777 == 0o600
    assert api_token(cfg) == api_token(cfg, board=False) == token
    assert nvr("token", "--config", str(write_config(tmp_path, "a", None))).stdout.strip() == token
    other = api_token(config(tmp_path, "b", None))
    assert other != token
    assert pair_api_token(load_pair_key(key_file)) not in (token, other)


def test_an_explicit_token_file_wins_on_a_paired_board_with_a_warning(tmp_path, key_file, caplog):
    own = tmp_path / "own.token"
    own.write_text(INSTALLER_TOKEN + "\n")
    own.chmod(0o600)
    cfg = config(tmp_path, "a", key_file, token_file=str(own))
    with caplog.at_level(logging.WARNING):
        assert api_token(cfg) == INSTALLER_TOKEN
    assert "token_file" in caplog.text and str(own) in caplog.text
    assert INSTALLER_TOKEN not in caplog.text
    assert api_token(cfg, board=False) == INSTALLER_TOKEN


def test_an_explicit_token_file_is_never_generated_on_a_paired_board(tmp_path, key_file):
    own = tmp_path / "own.token"
    cfg = config(tmp_path, "a", key_file, token_file=str(own))
    with pytest.raises(ConfigError, match="both boards"):
        api_token(cfg)
    assert not own.exists()


def test_the_token_stays_out_of_status_alerts_logs_and_audit(tmp_path, key_file, caplog):
    cfg = config(tmp_path, "a", key_file)
    want = pair_api_token(load_pair_key(key_file))
    with caplog.at_level(logging.DEBUG):
        b = board(cfg)
    try:
        assert b.api_token == want
        b.alerts.raise_("test", "warning", "an alert", 0)
        shown = json.dumps(b.status())
        assert '"board": "a"' in shown and str(cfg.board.data_dir) in shown
        assert want not in shown
        assert want not in json.dumps([c.detail_json() for c in b.snapshot().cameras])
        assert caplog.records and want not in caplog.text
        audit = (cfg.board.data_dir / "audit.log").read_text()
        assert "alert-raise" in audit and want not in audit
    finally:
        b.catalog.close()


# --- key and token files that others could read, or guess ---------------------------------


def test_a_pair_key_open_to_others_is_made_private_with_a_warning(tmp_path, key_file, caplog):
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        key = load_pair_key(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "open to others" in caplog.text and str(key_file) in caplog.text
    assert key.decode() not in caplog.text
    caplog.clear()
    assert api_token(config(tmp_path, "a", key_file)) == pair_api_token(key)
    assert "open to others" not in caplog.text


def test_a_short_token_is_refused(tmp_path, key_file):
    own = tmp_path / "own.token"
    own.write_text("installer-token\n")
    own.chmod(0o600)
    with pytest.raises(ConfigError, match="shorter than 32"):
        api_token(config(tmp_path, "a", key_file, token_file=str(own)))
    cfg = config(tmp_path, "s", None)
    short = cfg.token_file
    short.parent.mkdir(parents=True)
    short.write_text("guessable\n")
    with pytest.raises(ConfigError, match="shorter than 32"):
        api_token(cfg)
    with pytest.raises(ConfigError, match="shorter than 32"):
        api_token(cfg, board=False)
    assert short.read_text() == "guessable\n", "refused, not replaced behind the clients' back"


def test_an_empty_token_file_is_regenerated_private(tmp_path):
    cfg = config(tmp_path, "a", None)
    path = cfg.token_file
    path.parent.mkdir(parents=True)
    path.write_text("")
    path.chmod(0o644)
    token = api_token(cfg)
    assert len(token) >= 32 and path.read_text().strip() == token
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_token_file_open_to_others_is_made_private(tmp_path, caplog):
    cfg = config(tmp_path, "a", None)
    token = api_token(cfg)
    cfg.token_file.chmod(0o640)
    with caplog.at_level(logging.WARNING):
        assert api_token(cfg) == token
    assert cfg.token_file.stat().st_mode & 0o777 == 0o600
    assert "open to others" in caplog.text and token not in caplog.text
