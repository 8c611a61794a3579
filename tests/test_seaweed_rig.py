"""The SeaweedFS store the archive tier is tested against: a real master, volume servers,
filer and S3 gateway on loopback, and the faults the archive drills rely on (a volume server
killed, the endpoint gone for a while), plus what this SeaweedFS does with Object Lock."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
botocore_exceptions = pytest.importorskip("botocore.exceptions")
s3transfer = pytest.importorskip("boto3.s3.transfer")

from hil.seaweed import (  # noqa: E402
    LOCAL_OPENER,
    LOOPBACK,
    SeaweedError,
    SeaweedStore,
    WeedProcess,
    get_json,
    missing_weed,
    port_refuses,
)

if missing_weed() is not None:  # pragma: no cover - depends on the environment
    pytest.skip(str(missing_weed()), allow_module_level=True)

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def store() -> Iterator[SeaweedStore]:
    """One store for the tests that leave it as they found it."""
    with SeaweedStore() as s:
        yield s


def _listening(pids: list[int]) -> list[tuple[str, str]]:
    """(protocol, local address) of every listening TCP and every bound UDP socket the
    given processes hold, read from /proc."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found: list[tuple[str, str]] = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if inode not in inodes or (proto.startswith("tcp") and state != "0A"):
                continue
            found.append((proto, _decode_addr(local)))
    return found


def _decode_addr(hex_addr: str) -> str:
    """/proc/net address 0100007F:1F90 -> 127.0.0.1:8080 (IPv6 shown as hex)."""
    host, port = hex_addr.split(":")
    if len(host) != 8:
        return f"[{host}]:{int(port, 16)}"
    ip = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return f"{ip}:{int(port, 16)}"


def _session_members(sid: int) -> str:
    """pgrep's answer for processes in session sid (each weed runs in a session of its own,
    so this also catches anything a weed process forked)."""
    out = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True)
    return out.stdout.strip()


def test_put_get_head_and_multipart_round_trip(store: SeaweedStore, tmp_path: Path) -> None:
    """Objects come back byte-identical, single and multipart (what segment upload uses)."""
    s3 = store.client()
    s3.create_bucket(Bucket="roundtrip")
    body = os.urandom(MIB + 123)  # large enough to land on the volume servers
    s3.put_object(Bucket="roundtrip", Key="seg/one.mp4", Body=body)
    assert s3.get_object(Bucket="roundtrip", Key="seg/one.mp4")["Body"].read() == body
    head = s3.head_object(Bucket="roundtrip", Key="seg/one.mp4")
    assert head["ContentLength"] == len(body)
    assert head["ETag"].strip('"') == hashlib.md5(body).hexdigest()

    big = tmp_path / "big.bin"
    big_body = os.urandom(10 * MIB + 4321)  # two 5 MiB parts and a small last one
    big.write_bytes(big_body)
    cfg = s3transfer.TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    s3.upload_file(str(big), "roundtrip", "seg/big.mp4", Config=cfg)
    head = s3.head_object(Bucket="roundtrip", Key="seg/big.mp4")
    assert head["ContentLength"] == len(big_body)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # a 3-part upload
    got = s3.get_object(Bucket="roundtrip", Key="seg/big.mp4")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(big_body).digest()


def test_requests_are_signed_and_checked(store: SeaweedStore) -> None:
    """A wrong secret and an unsigned request are refused: the identity config is in force."""
    with pytest.raises(botocore_exceptions.ClientError) as err:
        store.client(secret_key=store.secret_key + "x").list_buckets()
    assert err.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}
    with pytest.raises(urllib.error.HTTPError) as http_err:
        LOCAL_OPENER.open(f"{store.endpoint}/", timeout=5)
    assert http_err.value.code == 403
    assert store.client().list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_binds_only_loopback(store: SeaweedStore) -> None:
    """Every socket any weed process listens on is on 127.0.0.1 and is one of ours."""
    sockets = _listening(store.pids())
    assert len(sockets) >= len(store.ports()), sockets
    assert all(addr.startswith(f"{LOOPBACK}:") for _, addr in sockets), sockets
    assert {int(addr.rsplit(":", 1)[1]) for _, addr in sockets} <= set(store.ports())


def test_endpoint_unreachable_then_back(store: SeaweedStore) -> None:
    """With the gateway gone a request fails to connect; once back, the data is intact."""
    s3 = store.client()
    s3.create_bucket(Bucket="outage")
    body = os.urandom(MIB)
    s3.put_object(Bucket="outage", Key="before", Body=body)
    store.stop_s3()
    with pytest.raises(botocore_exceptions.EndpointConnectionError):
        store.client().get_object(Bucket="outage", Key="before")
    store.start_s3()
    s3 = store.client()
    assert s3.get_object(Bucket="outage", Key="before")["Body"].read() == body
    s3.put_object(Bucket="outage", Key="after", Body=b"after")
    assert s3.get_object(Bucket="outage", Key="after")["Body"].read() == b"after"


def test_object_lock_retention_is_enforced(store: SeaweedStore) -> None:
    """SeaweedFS 4.48 supports Object Lock: a bucket created with it is versioned, a put
    with COMPLIANCE retention keeps its version undeletable and its date unshortenable,
    a plain delete only adds a delete marker, and lock headers on a bucket without Object
    Lock are refused (InvalidRequest) - so the archive must create its bucket with it."""
    s3 = store.client()
    s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
    conf = s3.get_object_lock_configuration(Bucket="locked")["ObjectLockConfiguration"]
    assert conf["ObjectLockEnabled"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket="locked")["Status"] == "Enabled"

    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    put = s3.put_object(
        Bucket="locked",
        Key="seg",
        Body=b"footage",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    version = put["VersionId"]
    retention = s3.get_object_retention(Bucket="locked", Key="seg")["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert retention["RetainUntilDate"] == until
    head = s3.head_object(Bucket="locked", Key="seg")
    assert head["ObjectLockMode"] == "COMPLIANCE"

    with pytest.raises(botocore_exceptions.ClientError) as err:
        s3.delete_object(Bucket="locked", Key="seg", VersionId=version)
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(botocore_exceptions.ClientError) as err:
        s3.put_object_retention(
            Bucket="locked",
            Key="seg",
            VersionId=version,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - dt.timedelta(hours=1)},
        )
    assert err.value.response["Error"]["Code"] == "AccessDenied"

    assert s3.delete_object(Bucket="locked", Key="seg")["DeleteMarker"] is True
    kept = s3.get_object(Bucket="locked", Key="seg", VersionId=version)["Body"].read()
    assert kept == b"footage"

    s3.create_bucket(Bucket="unlocked")
    with pytest.raises(botocore_exceptions.ClientError) as err:
        s3.put_object(
            Bucket="unlocked",
            Key="seg",
            Body=b"x",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=until,
        )
    assert err.value.response["Error"]["Code"] == "InvalidRequest"


def test_one_of_two_volume_servers_down_reads_go_on_writes_stop() -> None:
    """Replication 001 on two volume servers: with one killed every object stays readable,
    but a new put cannot be placed (the gateway retries for about 60 s, then answers 500
    InternalError); after the restart writes work again. Archive drills that kill a volume
    server during uploads need a third volume server (next test)."""
    with SeaweedStore(volumes=2) as st:
        s3 = st.client()
        s3.create_bucket(Bucket="repl")
        body = os.urandom(2 * MIB)
        s3.put_object(Bucket="repl", Key="kept", Body=body)
        st.kill_volume(1)
        assert st.registered_volumes() == {st.volume_urls()[0]}
        assert s3.get_object(Bucket="repl", Key="kept")["Body"].read() == body

        impatient = st.client(timeout=2.0)
        with pytest.raises((botocore_exceptions.ReadTimeoutError, botocore_exceptions.ClientError)):
            impatient.put_object(Bucket="repl", Key="during", Body=os.urandom(MIB))

        st.restart_volume(1)
        s3.put_object(Bucket="repl", Key="after", Body=b"after")
        assert s3.get_object(Bucket="repl", Key="after")["Body"].read() == b"after"
        assert s3.get_object(Bucket="repl", Key="kept")["Body"].read() == body


def test_one_of_three_volume_servers_down_writes_go_on() -> None:
    """With three volume servers and replication 001 the master grows new volumes on the
    two left, so puts go on while one server is down, and older objects stay readable."""
    with SeaweedStore(volumes=3) as st:
        s3 = st.client()
        s3.create_bucket(Bucket="repl3")
        body = os.urandom(2 * MIB)
        s3.put_object(Bucket="repl3", Key="kept", Body=body)
        holders = _holders_of_bucket(st, "repl3")
        victim = next(i for i, url in enumerate(st.volume_urls()) if url in holders)
        st.kill_volume(victim)
        assert s3.get_object(Bucket="repl3", Key="kept")["Body"].read() == body
        patient = st.client(timeout=20.0)
        for n in range(3):
            data = os.urandom(MIB)
            patient.put_object(Bucket="repl3", Key=f"during/{n}", Body=data)
            assert patient.get_object(Bucket="repl3", Key=f"during/{n}")["Body"].read() == data


def _holders_of_bucket(st: SeaweedStore, bucket: str) -> set[str]:
    """Volume servers holding a volume of the bucket's collection (master's /vol/status)."""
    status = get_json(f"{st.master_url}/vol/status", timeout=5)
    holders: set[str] = set()
    for racks in status["Volumes"]["DataCenters"].values():
        for nodes in racks.values():
            for url, vols in nodes.items():
                if any(v["Collection"] == bucket for v in vols or []):
                    holders.add(url)
    assert len(holders) == 2, holders  # replication 001: exactly two copies
    return holders


def test_close_leaves_no_process_port_or_dir() -> None:
    """close() kills every weed process (and anything they forked), frees the ports and
    removes the directory."""
    st = SeaweedStore().start()
    pids, ports, where = st.pids(), st.ports(), st.dir
    assert st.startup is not None and st.startup.s3 < 30.0
    assert len(pids) == 5 and where is not None and where.is_dir()
    assert not any(port_refuses(p) for p in ports)
    st.close()
    assert all(_session_members(pid) == "" for pid in pids)
    assert all(port_refuses(p) for p in ports)
    assert not where.exists()


def test_failed_start_cleans_up_and_shows_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that dies during start-up fails start() with its log tail, and what had
    started by then is killed and removed."""
    spawned: list[int] = []
    real_spawn = SeaweedStore._spawn

    def spawn_and_record(self: SeaweedStore, proc: WeedProcess) -> None:
        real_spawn(self, proc)
        assert proc.popen is not None
        spawned.append(proc.popen.pid)

    real_s3_argv = SeaweedStore._s3_argv
    monkeypatch.setattr(SeaweedStore, "_spawn", spawn_and_record)
    monkeypatch.setattr(
        SeaweedStore, "_s3_argv", lambda self: [*real_s3_argv(self), "-no.such.flag=1"]
    )
    st = SeaweedStore()
    with pytest.raises(SeaweedError) as err:
        st.start()
    assert "weed s3 exited" in str(err.value)
    assert "no.such.flag" in str(err.value)  # the tail of s3.log
    assert len(spawned) == 5
    assert all(_session_members(pid) == "" for pid in spawned)
    assert st.dir is not None and not st.dir.exists()
