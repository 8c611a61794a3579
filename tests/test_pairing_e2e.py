"""Pairing end to end on loopback: two boards' API servers (the real app, edge and routes, no
`nvr run`), one showing a code, the other joining with it over HTTP and a WebSocket."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from firmware.api import ApiContext, make_app
from firmware.httpedge import serve
from firmware.pairing import MAX_TRIES, Hello, Joiner, encode
from firmware.pairing_http import EXCHANGE_PATH, PairingService, PeerAddress, _local_only
from firmware.pairkey import key_fingerprint, load_pair_key

TOKEN = "t" * 43


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Boards:
    """Two boards' API servers on loopback; each one's peer is the other."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = Clock()
        self.paired: dict[str, list[str]] = {"a": [], "b": []}
        self.services: dict[str, PairingService] = {}
        self.ports: dict[str, int] = {}
        self.served = []

    def key(self, board: str) -> Path:
        return self.tmp / board / "pair.key"

    async def __aenter__(self) -> Boards:
        for b in ("a", "b"):
            svc = PairingService(self.key(b), PeerAddress("127.0.0.1", 0),
                                 self.paired[b].append, self.clock)  # fmt: skip
            ctx = ApiContext(snapshot=lambda: None, catalog=None, data_dir=self.tmp, token=TOKEN,
                             camera_names=set, handover=None, pairing=svc)  # fmt: skip
            served = await serve(make_app(ctx), "127.0.0.1", 0, f"api-{b}")
            self.services[b], self.ports[b] = svc, served.port
            self.served.append(served)
        self.services["a"].peer = PeerAddress("127.0.0.1", self.ports["b"])
        self.services["b"].peer = PeerAddress("127.0.0.1", self.ports["a"])
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.close()
        for s in self.served:
            await s.close()

    async def call(self, board: str, method: str, path: str, body: dict | None = None,
                   token: bool = True) -> tuple[int, dict]:  # fmt: skip
        url = f"http://127.0.0.1:{self.ports[board]}{path}"
        headers = None if token else {"Authorization": ""}
        async with self.http.request(method, url, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def code(self, board: str = "a") -> str:
        status, answer = await self.call(board, "POST", "/api/v1/pair/code")
        assert status == 200, answer
        return answer["code"]

    async def join(self, code: str, board: str = "b") -> tuple[int, dict]:
        return await self.call(board, "POST", "/api/v1/pair/join", {"code": code})


def run(body):
    return lambda tmp_path: asyncio.run(body(tmp_path))


def wrong(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


@run
async def test_pair_code_then_join_gives_both_boards_the_key(tmp_path):
    async with Boards(tmp_path) as bb:
        status, state = await bb.call("a", "GET", "/api/v1/pair")
        assert state == {"paired": False, "fingerprint": None, "code": None}
        code = await bb.code()
        status, answer = await bb.join(code)
        assert status == 200, answer
        fp = answer["fingerprint"]
        _, state_a = await bb.call("a", "GET", "/api/v1/pair")
        _, state_b = await bb.call("b", "GET", "/api/v1/pair")
        assert state_a["fingerprint"] == state_b["fingerprint"] == fp
        assert state_a["code"]["state"] == "used"
        ka, kb = load_pair_key(bb.key("a")), load_pair_key(bb.key("b"))
        assert ka == kb and key_fingerprint(ka) == fp
        assert bb.key("a").stat().st_mode & 0o777 == bb.key("b").stat().st_mode & 0o777 == 0o600
        assert bb.paired == {"a": [fp], "b": [fp]}  # both boards told to form the pair
        # Paired now: a second pairing needs --replace on either side.
        assert (await bb.call("a", "POST", "/api/v1/pair/code"))[0] == 409
        status, _ = await bb.call("a", "POST", "/api/v1/pair/code", {"replace": True})
        assert status == 200


@run
async def test_a_wrong_code_is_refused_and_changes_nothing(tmp_path):
    async with Boards(tmp_path) as bb:
        code = await bb.code()
        status, answer = await bb.join(wrong(code))
        assert status == 403 and "wrong code" in answer["error"]
        _, state = await bb.call("a", "GET", "/api/v1/pair")
        assert state["code"] == {"state": "open", "tries_left": MAX_TRIES - 1,
                                 "expires_in_seconds": 600.0}  # fmt: skip
        assert not bb.key("a").exists() and not bb.key("b").exists()
        assert bb.paired == {"a": [], "b": []}
        assert list(tmp_path.rglob("*")) == []  # no temporary file either


@run
async def test_five_wrong_tries_void_the_code(tmp_path):
    async with Boards(tmp_path) as bb:
        code = await bb.code()
        for _ in range(MAX_TRIES):
            assert (await bb.join(wrong(code)))[0] == 403
        status, answer = await bb.join(code)
        assert status == 409 and "void after too many wrong tries" in answer["error"]
        assert (await bb.call("a", "GET", "/api/v1/pair"))[1]["code"]["state"] == "void"
        assert not bb.key("a").exists() and not bb.key("b").exists()
        code = await bb.code()  # a new code works again
        assert (await bb.join(code))[0] == 200


@run
async def test_an_expired_code_is_refused(tmp_path):
    async with Boards(tmp_path) as bb:
        code = await bb.code()
        bb.clock.t += 600
        status, answer = await bb.join(code)
        assert status == 409 and "expired" in answer["error"]
        assert not bb.key("a").exists() and not bb.key("b").exists()


@run
async def test_join_without_a_code_shown_or_peer_away(tmp_path):
    async with Boards(tmp_path) as bb:
        status, answer = await bb.join("1234-5678")
        assert status == 409 and "no pairing code is shown" in answer["error"]
        assert (await bb.join("12"))[0] == 400
        bb.services["b"].peer = PeerAddress("127.0.0.1", 1)  # nothing listens there
        status, answer = await bb.join("1234-5678")
        assert status == 502 and "does not answer" in answer["error"]


@run
async def test_admin_routes_need_the_token_the_exchange_does_not(tmp_path):
    async with Boards(tmp_path) as bb:
        for method, path in (("POST", "/api/v1/pair/code"), ("POST", "/api/v1/pair/join"),
                             ("GET", "/api/v1/pair")):  # fmt: skip
            assert (await bb.call("a", method, path, token=False))[0] == 401
        url = f"http://127.0.0.1:{bb.ports['a']}{EXCHANGE_PATH}"
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            await ws.send_bytes(b"\x01\x07garbage")  # garbled: answered and closed
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == b"\x01\x05\x04"
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            await ws.send_bytes(b"x" * 4096)  # longer than any frame: the server closes
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


@run
async def test_a_hello_without_its_confirm_costs_a_try(tmp_path):
    async with Boards(tmp_path) as bb:
        await bb.code()
        url = f"http://127.0.0.1:{bb.ports['a']}{EXCHANGE_PATH}"
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            hello: Hello = Joiner("0000-0000").hello()
            await ws.send_bytes(encode(hello))
            assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.BINARY
        # The connection is gone; the waiter counted the try.
        for _ in range(100):
            _, state = await bb.call("a", "GET", "/api/v1/pair")
            if state["code"]["tries_left"] == MAX_TRIES - 1:
                break
            await asyncio.sleep(0.02)
        assert state["code"]["tries_left"] == MAX_TRIES - 1


def test_admin_routes_answer_only_the_board_itself():
    class Transport:
        def __init__(self, peer: str) -> None:
            self.peer = peer

        def get_extra_info(self, name, default=None):
            return (self.peer, 40000) if name == "peername" else default

        def is_closing(self) -> bool:
            return False

    for peer, allowed in (("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
                          ("192.0.2.7", False), ("198.51.100.2", False)):  # fmt: skip
        req = make_mocked_request("POST", "/api/v1/pair/code", transport=Transport(peer))
        if allowed:
            _local_only(req)
        else:
            with pytest.raises(Exception) as e:
                _local_only(req)
            assert json.loads(e.value.text)["error"].startswith("pairing is run on the board")


def test_the_code_and_the_key_reach_no_log_and_no_state(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    async def body() -> tuple[str, dict]:
        async with Boards(tmp_path) as bb:
            code = await bb.code()
            assert (await bb.join(wrong(code)))[0] == 403
            assert (await bb.join(code))[0] == 200
            return code, (await bb.call("a", "GET", "/api/v1/pair"))[1]

    code, state = asyncio.run(body())
    key = load_pair_key(tmp_path / "a" / "pair.key").decode()
    shown = caplog.text + json.dumps(state)
    for secret in (code, code.replace("-", ""), wrong(code), key):
        assert secret not in shown
    assert state["fingerprint"] in caplog.text  # what an installer compares is logged
