"""Foundation: each module loads in the real Envoy 1.40, sees traffic, and refuses bad config."""
from __future__ import annotations

import sys
from pathlib import Path

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


def _istio_plugin_configs():
    """(layer, plugin JSON) of every Tollgate filter configured in examples/istio."""
    import json
    import yaml
    out = []
    for path in sorted((harness.REPO / "examples" / "istio").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "WasmPlugin":
                out.append((doc["spec"]["pluginName"].split(".")[-1], doc["spec"]["pluginConfig"], path.name))
            elif doc["kind"] == "EnvoyFilter":
                for patch in doc["spec"]["configPatches"]:
                    cfg = patch["patch"]["value"]["typed_config"]["config"]
                    out.append((cfg["root_id"].split(".")[-1], json.loads(cfg["configuration"]["value"]), path.name))
    return out


@pytest.mark.parametrize("layer,plugin_config,source", _istio_plugin_configs())
def test_istio_example_plugin_configs_load(workdir, layer, plugin_config, source):
    """The module's on_configure runs under `envoy --mode validate`, so this proves the
    example configuration is accepted by the filter, not just well-formed YAML."""
    import subprocess
    import yaml
    rendered, _, _ = harness.render(harness.load_envoy_config(f"{layer}.yaml"),
                                    plugin_configs={f"tollgate.{layer}": plugin_config})
    path = workdir / "istio-example.yaml"
    path.write_text(yaml.safe_dump(rendered))
    result = subprocess.run([harness.ENVOY, "--mode", "validate", "-c", str(path), "-l", "error"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{source}: {result.stdout}{result.stderr}"


def test_stack_is_composed_from_the_layer_configs():
    """envoy/stack.yaml is generated from envoy/{llm,mcp,a2a}.yaml and must not drift."""
    import subprocess
    result = subprocess.run([sys.executable, str(harness.REPO / "envoy" / "compose_stack.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("layer", ["llm", "llm_attempt", "mcp", "a2a"])
def test_module_is_within_the_size_budget(layer):
    """Each module stays under 1 MB (the project's budget; make bench reports the sizes too)."""
    size = (harness.REPO / "dist" / f"tollgate_{layer}.wasm").stat().st_size
    assert size < 1_000_000, f"dist/tollgate_{layer}.wasm is {size} bytes"


@pytest.mark.parametrize("module, root_id, message", [
    ("dist/tollgate_llm.wasm", "tollgate.llm.attempt", "is the attempt role, which this module does not have"),
    ("dist/tollgate_llm_attempt.wasm", "tollgate.llm", "is the gateway, which this module (the attempt role) does not have"),
])
def test_an_llm_module_given_the_other_role_is_refused_at_load(workdir, module, root_id, message):
    """The gateway and attempt-role modules are built apart: each refuses the other's part by name."""
    cfg = harness.load_envoy_config("llm.yaml")
    (wasm,) = harness.wasm_filters(cfg)
    wasm["root_id"] = root_id
    wasm["vm_config"]["code"]["local"]["filename"] = module
    log = harness.run_envoy_expect_failure(cfg, workdir)
    assert message in log, log[-3000:]


def test_every_shipped_config_lets_tcmalloc_return_free_memory():
    """Issue 22 (memory): V8's compiler scratch memory, freed once a module has loaded, stays in
    tcmalloc's free lists for the life of the process unless the bootstrap turns on tcmalloc's
    background release (bench/README.md, "Issue 22: memory"). Every shipped config that loads a
    module must turn it on."""
    checked = []
    for path in sorted((harness.REPO / "envoy").glob("*.yaml")):
        cfg = harness.load_envoy_config(path.name)
        if not harness.wasm_filters(cfg):
            continue
        release = cfg.get("memory_allocator_manager", {})
        assert int(release.get("bytes_to_release", 0)) > 0, f"envoy/{path.name}: no memory_allocator_manager.bytes_to_release"
        checked.append(path.name)
    assert "stack.yaml" in checked and len(checked) >= 4, checked


def test_envoy_runs_tcmalloc_background_release_with_a_shipped_config(procs, static_upstream):
    """The running Envoy (A2A config as shipped) has tcmalloc's background thread, which Envoy
    starts only when `memory_allocator_manager.bytes_to_release` is set."""
    envoy = procs.envoy("a2a.yaml", upstreams={UPSTREAM_CLUSTER["a2a"]: static_upstream})
    tasks = Path(f"/proc/{envoy.proc.pid}/task")
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir()]
    assert any(n.startswith("TcmallocProcess") for n in names), names
