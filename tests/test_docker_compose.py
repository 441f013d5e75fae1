"""examples/docker-compose: `docker-compose config` accepts it (Debian's docker-compose, no
daemon needed; `make test` installs it), its Envoy runs the generated envoy/stack.yaml itself
(mounted from the repo, not a copy), and every upstream that config points at is a service of
the compose file on that port, as `make run` starts them. No image is pulled here."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
import yaml

import harness

COMPOSE = harness.REPO / "examples" / "docker-compose" / "docker-compose.yaml"


@pytest.fixture(scope="module")
def resolved() -> dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: `make docker-compose` (Debian's package) installs it"
    out = subprocess.run([exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def argv(service: dict) -> list[str]:
    cmd = service["command"]
    words = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    if words[:2] == ["sh", "-c"]:
        words = shlex.split(words[2].split("&&")[-1])
    return words


def test_envoy_runs_the_generated_stack_config(resolved):
    envoy = resolved["services"]["envoy"]
    words = argv(envoy)
    assert words[words.index("-c") + 1] == "/repo/envoy/stack.yaml", words
    assert words[words.index("--file-flush-interval-msec") + 1] == "100", words  # audit lines promptly
    (volume,) = envoy["volumes"]
    mount = volume if isinstance(volume, str) else f"{volume['source']}:{volume['target']}"
    assert mount.split(":")[:2] == [str(harness.REPO), "/repo"], mount
    assert envoy["network_mode"] == "host"
    assert "image" in envoy and "v1.40" in envoy["image"]


def test_every_upstream_of_the_stack_is_a_service(resolved):
    stack = harness.load_envoy_config("stack.yaml")
    wanted = {}
    for cluster in stack["static_resources"]["clusters"]:
        for ep in harness._walk(cluster["load_assignment"]):
            if "socket_address" in ep:
                wanted[ep["socket_address"]["port_value"]] = cluster["name"]
    served = {}
    for name, service in resolved["services"].items():
        words = argv(service)
        for flag in ("--port", "--listen"):
            if flag in words:
                served[int(words[words.index(flag) + 1].rsplit(":", 1)[-1])] = name
        assert service.get("network_mode") == "host", name
    missing = {port: cluster for port, cluster in wanted.items() if port not in served}
    assert not missing, f"clusters of envoy/stack.yaml with no compose service: {missing}"
    listener = stack["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    # The agents call back into the gateway (planner -> researcher -> LLM and MCP) on its port.
    gateway = f"http://127.0.0.1:{listener}"
    planner, researcher = argv(resolved["services"]["agent-planner"]), argv(resolved["services"]["agent-researcher"])
    assert planner[planner.index("--delegate-to") + 1] == f"{gateway}/agents/researcher/"
    assert researcher[researcher.index("--call-llm") + 1] == f"{gateway}/v1"
    assert researcher[researcher.index("--call-mcp") + 1] == f"{gateway}/mcp"
    assert resolved["services"]["agent-researcher"]["environment"]["AGENT_LLM_KEY"] == "tg-demo-researcher"
    # tollgate-limits uses the compose Redis.
    limits = argv(resolved["services"]["tollgate-limits"])
    redis_port = int(re.search(r":(\d+)/?$", limits[limits.index("--redis") + 1]).group(1))
    assert served.get(redis_port) == "redis", (redis_port, served)
