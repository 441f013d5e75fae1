"""The fleet-wide counter store for end-to-end tests (docs/limits-protocol.md): a real
`redis-server` (append-only persistence, its own data directory) and the real `tollgate-limits`
binary, each on a free port, each restartable on the same port and data; a tiny RESP client to
read counters; and the Envoy cluster that points a harness config at the service.

Nothing here knows a filter: LLM and MCP tests use it alike.

    with limits_store.LimitsStore(workdir) as store:
        cfg = limits_store.add_store_cluster(harness.load_envoy_config("mcp.yaml"), store.port)
        ...
        store.counters(limit="mcp.fleet-burst")   # [Counter(key, domain, entries, window_id, value)]
        store.service.restart(); store.redis.restart(); store.service.stop() ...

Needs `make redis limits-service` (Debian's redis-server, target/release/tollgate-limits).
"""
from __future__ import annotations

import copy
import shutil
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from h2util import h2_request

LIMITS_BIN = harness.REPO / "target" / "release" / "tollgate-limits"
CLUSTER = "tollgate_limits"
DEFAULT_PREFIX = "tollgate:"


class RedisError(Exception):
    """An error reply (`-ERR ...`)."""


# --- RESP --------------------------------------------------------------------------------------

def _encode(args: tuple[Any, ...]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _read(f) -> Any:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by redis")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read(f) for _ in range(n)]
    raise ConnectionError(f"unexpected RESP reply {line!r}")


def redis_command(port: int, *args: Any, timeout: float = 2.0) -> Any:
    """One command to the Redis on 127.0.0.1:`port`; its decoded reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_encode(args))
        with s.makefile("rb") as f:
            return _read(f)


# --- processes ---------------------------------------------------------------------------------

class _Restartable:
    """A process started by `_command()`, stopped by its PID, started again on the same port."""

    name = "proc"

    def __init__(self, workdir: Path, port: int | None):
        self.workdir = workdir
        self.port = port or harness.free_port()
        self.proc: harness.Proc | None = None
        self.starts = 0

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.popen.poll() is None

    def start(self) -> "_Restartable":
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        # One log per start (a restart must not truncate the previous run's log).
        self.proc = harness.Proc(f"{self.name}-{self.starts}", self._command(), self.workdir)
        harness.wait_until(self._ready, 20, f"{self.name} on port {self.port}", self.proc)
        return self

    def stop(self) -> None:
        """SIGTERM (both stop cleanly on it; Redis flushes its append-only file), SIGKILL after 5 s."""
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.proc.log() if self.proc else ""


class Redis(_Restartable):
    """`redis-server` with `appendonly yes` in `<workdir>/<name>-data`: counters survive a restart."""

    name = "redis"

    def __init__(self, workdir: Path, port: int | None = None, name: str = "redis"):
        super().__init__(workdir, port)
        self.name = name
        self.dir = workdir / f"{name}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise RuntimeError("redis-server is not installed: run `make redis`")

    def _command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
                "--loglevel", "warning"]

    def _ready(self) -> bool:
        return self.command("PING") == "PONG"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/"

    def command(self, *args: Any) -> Any:
        return redis_command(self.port, *args)

    def keys(self, pattern: str = "*") -> list[str]:
        return sorted(self.command("KEYS", pattern))

    def get(self, key: str) -> int | None:
        value = self.command("GET", key)
        return None if value is None else int(value)


class LimitsService(_Restartable):
    """`target/release/tollgate-limits --listen 127.0.0.1:<port> --redis <url>`."""

    name = "tollgate-limits"

    def __init__(self, workdir: Path, redis_url: str, port: int | None = None, key_prefix: str = DEFAULT_PREFIX,
                 clock_offset_ms: int = 0, name: str = "tollgate-limits"):
        super().__init__(workdir, port)
        self.name = name
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.clock_offset_ms = clock_offset_ms
        if not LIMITS_BIN.exists():
            raise RuntimeError(f"{LIMITS_BIN} is missing: run `make limits-service`")

    def _command(self) -> list[str]:
        return [str(LIMITS_BIN), "--listen", f"127.0.0.1:{self.port}", "--redis", self.redis_url,
                "--key-prefix", self.key_prefix, f"--clock-offset-ms={self.clock_offset_ms}"]

    def _ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def health(self, service: str = "") -> int | None:
        """`grpc.health.v1.Health/Check`: 1 SERVING (Redis answers PING), 2 NOT_SERVING; None
        when the service cannot be reached or answers a gRPC error."""
        name = service.encode()
        message = (b"\x0a" + bytes([len(name)]) + name) if name else b""
        frame = b"\x00" + len(message).to_bytes(4, "big") + message
        try:
            answer = h2_request(self.port, "POST", "/grpc.health.v1.Health/Check",
                                [("content-type", "application/grpc"), ("te", "trailers")], [frame], timeout=2)
        except OSError:
            return None
        status = answer.trailers.get("grpc-status", answer.headers.get("grpc-status"))
        if status != "0" or len(answer.body) < 5:
            return None
        body = answer.body[5:]
        # HealthCheckResponse { ServingStatus status = 1; }: absent means UNKNOWN (0).
        return body[1] if body[:1] == b"\x08" and len(body) >= 2 else 0

    def wait_serving(self, timeout: float = 20) -> None:
        """Waits until the service says SERVING (after a Redis restart it reconnects lazily)."""
        harness.wait_until(lambda: self.health() == 1, timeout, f"{self.name} SERVING", self.proc)


# --- counters ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Counter:
    """One Redis counter: `<prefix><domain>|<key>=<value>|…@<window id>`."""

    key: str
    domain: str
    entries: dict[str, str]
    window_id: str
    value: int


def parse_key(key: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, dict[str, str], str]:
    """(domain, entries, window id) of a counter key (entries percent-decoded)."""
    assert key.startswith(prefix), key
    body, _, window_id = key[len(prefix):].rpartition("@")
    domain, *pairs = body.split("|")
    entries = {}
    for pair in pairs:
        k, _, v = pair.partition("=")
        entries[urllib.parse.unquote(k)] = urllib.parse.unquote(v)
    return urllib.parse.unquote(domain), entries, urllib.parse.unquote(window_id)


# --- the whole store ---------------------------------------------------------------------------

class LimitsStore:
    """Redis and one `tollgate-limits` in front of it; a context manager that always stops both."""

    def __init__(self, workdir: Path, key_prefix: str = DEFAULT_PREFIX, clock_offset_ms: int = 0):
        self.workdir = workdir
        self.key_prefix = key_prefix
        self.redis = Redis(workdir)
        self.service = LimitsService(workdir, self.redis.url, key_prefix=key_prefix, clock_offset_ms=clock_offset_ms)

    @property
    def port(self) -> int:
        """The service's gRPC port (what Envoy's cluster points at)."""
        return self.service.port

    def start(self) -> "LimitsStore":
        self.redis.start()
        self.service.start()
        self.service.wait_serving()
        return self

    def stop(self) -> None:
        self.service.stop()
        self.redis.stop()

    def __enter__(self) -> "LimitsStore":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def counters(self, domain: str | None = None, **entries: str) -> list[Counter]:
        """Every counter in Redis (of `domain`, if given) whose entries include `entries`,
        sorted by key."""
        out = []
        for key in self.redis.keys(f"{self.key_prefix}*"):
            d, e, window_id = parse_key(key, self.key_prefix)
            if (domain is None or d == domain) and all(e.get(k) == v for k, v in entries.items()):
                value = self.redis.get(key)
                if value is not None:
                    out.append(Counter(key, d, e, window_id, value))
        return out

    def total(self, domain: str | None = None, **entries: str) -> int:
        """The sum of the matching counters (0 when there is none)."""
        return sum(c.value for c in self.counters(domain, **entries))

    def cluster(self, name: str = CLUSTER) -> dict:
        return store_cluster(self.port, name)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(p.proc.log_tail(lines) for p in (self.redis, self.service) if p.proc)


def store_cluster(port: int, name: str = CLUSTER, host: str = "127.0.0.1", connect_timeout: str = "0.25s") -> dict:
    """An Envoy cluster for the service: HTTP/2 (gRPC) to `host:port`."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port}}}}]}],
        },
    }


def add_store_cluster(cfg: dict, port: int, name: str = CLUSTER, **cluster_args: Any) -> dict:
    """A copy of the Envoy bootstrap `cfg` with the store's cluster `name` (replacing one of
    that name) pointing at `port`."""
    cfg = copy.deepcopy(cfg)
    clusters = cfg.setdefault("static_resources", {}).setdefault("clusters", [])
    clusters[:] = [c for c in clusters if c.get("name") != name]
    clusters.append(store_cluster(port, name, **cluster_args))
    return cfg
