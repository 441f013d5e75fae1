"""Foundation: each module loads in the real Envoy 1.40, sees traffic, and refuses bad config."""
from __future__ import annotations

import sys

import httpx
import pytest

import harness

UPSTREAM_CLUSTER = {"llm": "llm_provider_a", "mcp": "mcp_demo", "a2a": "agent_echo"}
PATH = {"llm": "/v1/models", "mcp": "/mcp", "a2a": "/agents/echo/"}


@pytest.fixture
def static_upstream(procs, workdir):
    port = harness.free_port()
    (workdir / "www").mkdir()
    proc = harness.Proc("static-upstream", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                            "--directory", str(workdir / "www")], workdir)
    harness.wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200, 20,
                       "static upstream", proc)
    yield port
    proc.stop()


@pytest.mark.parametrize("layer", ["llm", "mcp", "a2a"])
def test_module_loads_and_sees_requests(procs, static_upstream, layer):
    envoy = procs.envoy(f"{layer}.yaml", upstreams={UPSTREAM_CLUSTER[layer]: static_upstream})
    before = envoy.stat(f"wasmcustom.tollgate.{layer}.requests")
    response = httpx.get(envoy.url + PATH[layer], timeout=10)
    assert response.status_code < 500, response.text
    harness.wait_until(lambda: envoy.stat(f"wasmcustom.tollgate.{layer}.requests") > before, 5,
                       f"{layer} request metric")


@pytest.mark.parametrize("layer", ["llm", "mcp", "a2a"])
def test_unknown_field_is_refused_with_the_field_named(workdir, layer):
    cfg = harness.load_envoy_config(f"{layer}.yaml")
    log = harness.run_envoy_expect_failure(cfg, workdir, plugin_configs={f"tollgate.{layer}": {"audit": {"lgo": True}}})
    assert f"tollgate-{layer}: invalid plugin configuration: audit.lgo: unknown field `lgo`" in log, log[-3000:]


@pytest.mark.parametrize("layer", ["llm", "mcp", "a2a"])
def test_malformed_configuration_is_refused(workdir, layer):
    cfg = harness.load_envoy_config(f"{layer}.yaml")
    log = harness.run_envoy_expect_failure(cfg, workdir, plugin_configs={f"tollgate.{layer}": "{not json"})
    assert f"tollgate-{layer}: invalid plugin configuration" in log, log[-3000:]
