"""Shared fixtures: Envoy and upstream processes that are always stopped, with logs on failure."""
from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def procs(request, tmp_path):
    """Starts processes (Envoy or upstreams) that are stopped at teardown; on failure their
    logs are printed."""
    started: list = []

    class Factory:
        def envoy(self, cfg, concurrency: int = 1, name: str = "envoy", **render_args) -> harness.Envoy:
            if isinstance(cfg, str):
                cfg = harness.load_envoy_config(cfg)
            envoy = harness.Envoy(cfg, tmp_path, concurrency=concurrency, name=f"{name}{len(started)}", **render_args)
            started.append(envoy.proc)
            return envoy

        def python(self, name: str, script: str, args: list[str], ready_url: str, env=None) -> harness.Proc:
            proc = harness.python_server(name, script, args, tmp_path, ready_url, env=env)
            started.append(proc)
            return proc

    yield Factory()
    failed = any(getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
                 for w in ("setup", "call"))
    for proc in reversed(started):
        proc.stop()
        if failed:
            print(proc.log_tail(120))


LIMITS_BIN = harness.REPO / "target" / "release" / "tollgate-limits"


def redis_ready(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


def grpc_serving(port: int) -> bool:
    with httpx.Client(http1=False, http2=True, timeout=1) as c:
        r = c.post(f"http://127.0.0.1:{port}/grpc.health.v1.Health/Check", content=b"\x00" * 5,
                   headers={"content-type": "application/grpc", "te": "trailers"})
        return r.status_code == 200 and r.content[5:] == b"\x08\x01"


@pytest.fixture
def limits_store(tmp_path):
    """Redis (appendonly, its own data dir) and tollgate-limits on it, as `make run` starts them:
    what envoy/stack.yaml's fleet budget (cluster `tollgate_limits`) needs. Yields their ports."""
    if not shutil.which("redis-server") or not LIMITS_BIN.exists():
        pytest.fail("needs redis-server and target/release/tollgate-limits: make redis limits-service")
    redis_port, limits_port = harness.free_port(), harness.free_port()
    data = tmp_path / "redis"
    data.mkdir()
    started: list[harness.Proc] = []
    try:
        redis = harness.Proc("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", str(data),
                                       "--appendonly", "yes"], tmp_path)
        started.append(redis)
        harness.wait_until(lambda: redis_ready(redis_port), 10, "redis", redis)
        limits = harness.Proc("tollgate-limits", [str(LIMITS_BIN), "--listen", f"127.0.0.1:{limits_port}",
                                                  "--redis", f"redis://127.0.0.1:{redis_port}/"], tmp_path)
        started.append(limits)
        harness.wait_until(lambda: grpc_serving(limits_port), 20, "tollgate-limits serving", limits)
        yield {"redis": redis_port, "tollgate_limits": limits_port}
    finally:
        for p in reversed(started):
            p.stop()
