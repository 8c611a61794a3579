"""A board with [pair] and no key yet records alone and says it is unpaired; paired by code
through its own API, it restarts into the pair. Two boards in this process on loopback, no
`nvr run`: an unpaired board touches no address, and the paired ones are only constructed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from pathlib import Path

from conftest import NVR, ROOT, nvr, wait_until
from test_pair_token import board, config, write_config

from firmware import board as board_module
from firmware.alert_ids import AlertId
from firmware.apiclient import status_lines
from firmware.board import Board
from firmware.pairing_http import PeerAddress
from firmware.pairkey import key_fingerprint, load_pair_key, pair_api_token
from firmware.roles import RecorderMode, Role


def test_a_board_without_its_pair_key_records_alone_and_says_unpaired(tmp_path):
    b = board(config(tmp_path, "a", tmp_path / "a" / "pair.key"))
    st = b.snapshot()
    assert st.role is Role.UNPAIRED and st.to_json()["role"] == "unpaired"
    assert st.to_json()["pair_fingerprint"] is None
    assert b.failover is None and b.mirror is None and b.pairing is not None
    assert b.recorder.mode is RecorderMode.RECORD
    alert = b.alerts.get(AlertId.UNPAIRED)
    assert alert is not None and "nvr pair code" in alert.text
    assert b.api_token == (tmp_path / "a" / "data" / "api.token").read_text().strip()
    assert "unpaired: recording alone" in "\n".join(status_lines(b.status()))


def test_a_paired_board_shows_its_key_s_fingerprint(tmp_path):
    key = tmp_path / "pair.key"
    key.write_bytes(b"0123456789abcdef" * 4 + b"\n")
    st = board(config(tmp_path, "a", key)).snapshot()
    assert st.role is not Role.UNPAIRED
    assert st.to_json()["pair_fingerprint"] == key_fingerprint(load_pair_key(key))


def call(b: Board, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{b.api_port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {b.api_token}"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=40) as r:
        return json.load(r)


def cli(b: Board, path: Path, *args: str):
    """`nvr pair ...` as an installer types it on board b (its API port is the test's)."""
    return nvr("pair", *args, "--config", str(path), "--url", f"http://127.0.0.1:{b.api_port}",
               check=False)  # fmt: skip


def test_two_unpaired_boards_pair_by_code_and_restart_into_the_pair(tmp_path):
    paths = {h: write_config(tmp_path, h, tmp_path / h / "pair.key") for h in ("a", "b")}
    boards = {h: Board(config(tmp_path, h, tmp_path / h / "pair.key")) for h in paths}

    async def main() -> dict[str, dict]:
        stops = {h: asyncio.Event() for h in boards}
        tasks = [asyncio.create_task(boards[h].serve(stops[h])) for h in boards]
        try:
            await asyncio.to_thread(wait_until, lambda: all(b.api_port for b in boards.values()),
                                    30, "both APIs up")  # fmt: skip
            a, b = boards["a"], boards["b"]
            a.pairing.peer = PeerAddress("127.0.0.1", b.api_port)
            b.pairing.peer = PeerAddress("127.0.0.1", a.api_port)
            wrong = await asyncio.to_thread(cli, b, paths["b"], "join", "1234-5678")
            assert wrong.returncode == 1 and "no pairing code is shown" in wrong.stderr
            shown = await asyncio.to_thread(cli, a, paths["a"], "code", "--no-wait")
            code = shown.stdout.split()[2]
            assert f"nvr pair join {code}" in shown.stdout
            bad = str((int(code[-1]) + 1) % 10)
            wrong = await asyncio.to_thread(cli, b, paths["b"], "join", code[:-1] + bad)
            assert wrong.returncode == 1 and "wrong code; nothing changed" in wrong.stderr
            assert not (tmp_path / "a" / "pair.key").exists()
            assert not (tmp_path / "b" / "pair.key").exists()
            joined = await asyncio.to_thread(cli, b, paths["b"], "join", code)
            assert joined.returncode == 0, joined.stderr
            state_a = await asyncio.to_thread(call, a, "GET", "/api/v1/pair")
            # Both stop by themselves to restart paired (cli.py execs the firmware again).
            await asyncio.wait_for(asyncio.gather(*(s.wait() for s in stops.values())), 30)
            return {"joined": joined, "a": state_a}
        finally:
            for s in stops.values():
                s.set()
            await asyncio.gather(*tasks)

    got = asyncio.run(main())
    fp = got["joined"].stdout.split("fingerprint ")[1].split()[0]
    assert got["a"]["fingerprint"] == fp
    assert all(b.restart_reason == "paired" for b in boards.values())
    ka, kb = (load_pair_key(tmp_path / h / "pair.key") for h in ("a", "b"))
    assert ka == kb and key_fingerprint(ka) == fp
    # What the restart finds: a pair, one token on both boards, the same fingerprint shown.
    again = {h: board(config(tmp_path, h, tmp_path / h / "pair.key")) for h in ("a", "b")}
    for h, b in again.items():
        assert b.failover is not None and b.snapshot().role is not Role.UNPAIRED
        assert b.api_token == pair_api_token(ka)
        assert b.snapshot().to_json()["pair_fingerprint"] == fp
        assert nvr("token", "--config", str(paths[h])).stdout.strip() == pair_api_token(ka)
    audit = (tmp_path / "a" / "data").glob("audit*")
    assert any('"paired"' in Path(p).read_text() for p in audit)


def waiting_code(b: Board, path: Path) -> tuple[subprocess.Popen, str]:
    """`nvr pair code` as typed, waiting for the other board; its code from its first line."""
    proc = subprocess.Popen([*NVR, "pair", "code", "--config", str(path), "--url",
                             f"http://127.0.0.1:{b.api_port}"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    first = proc.stdout.readline()
    return proc, first.split()[2]


def test_pair_code_waits_for_the_join_and_says_void_after_five_wrong_tries(tmp_path, monkeypatch):
    monkeypatch.setattr(board_module, "PAIRED_RESTART_S", 600.0)  # stay up for the waiting CLI
    paths = {h: write_config(tmp_path, h, tmp_path / h / "pair.key") for h in ("a", "b")}
    boards = {h: Board(config(tmp_path, h, tmp_path / h / "pair.key")) for h in paths}

    async def main() -> tuple[tuple, tuple, str]:
        stops = {h: asyncio.Event() for h in boards}
        tasks = [asyncio.create_task(boards[h].serve(stops[h])) for h in boards]
        try:
            await asyncio.to_thread(wait_until, lambda: all(b.api_port for b in boards.values()),
                                    30, "both APIs up")  # fmt: skip
            a, b = boards["a"], boards["b"]
            b.pairing.peer = PeerAddress("127.0.0.1", a.api_port)
            proc, code = await asyncio.to_thread(waiting_code, a, paths["a"])
            bad = code[:-1] + str((int(code[-1]) + 1) % 10)
            for _ in range(5):
                await asyncio.to_thread(cli, b, paths["b"], "join", bad)
            void = await asyncio.to_thread(proc.communicate, timeout=30)
            void = (proc.returncode, *void)
            proc, code = await asyncio.to_thread(waiting_code, a, paths["a"])
            joined = await asyncio.to_thread(cli, b, paths["b"], "join", code)
            assert joined.returncode == 0, joined.stderr
            out = await asyncio.to_thread(proc.communicate, timeout=30)
            return void, (proc.returncode, *out), joined.stdout
        finally:
            for s in stops.values():
                s.set()
            await asyncio.gather(*tasks)

    void, paired, joined = asyncio.run(main())
    assert void[0] == 1 and "void (too many wrong tries); nothing changed" in void[2]
    fp = joined.split("fingerprint ")[1].split()[0]
    assert paired[0] == 0 and f"paired: pair key fingerprint {fp}" in paired[1]
