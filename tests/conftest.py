"""Shared fixtures: Envoy and upstream processes that are always stopped, with logs on failure."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import limits_store  # noqa: E402


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


@pytest.fixture
def fleet_store(tmp_path):
    """Redis (appendonly, its own data dir) and tollgate-limits on it, as `make run` starts them
    (tests/limits_store.py): what envoy/stack.yaml's fleet budget (cluster `tollgate_limits`)
    needs. Yields their ports."""
    with limits_store.LimitsStore(tmp_path) as store:
        yield {"redis": store.redis.port, "tollgate_limits": store.port}
