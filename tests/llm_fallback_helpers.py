"""The virtual-models stack shared by tests/test_llm_fallback.py (load balancing, fallback) and
tests/test_llm_translation.py (API translation): envoy/llm-fallback.yaml as shipped but for
ports, with three fake providers (`openai-a`, `openai-b`, `anthropic-c`) behind the
deployments cluster; each provider's `address` in the plugin configuration is rewritten to
its fake's port."""
from __future__ import annotations

import copy
import secrets

import anthropic
import httpx
import openai

import harness

ALICE = "tg-demo-alice"
PROVIDERS = ("openai-a", "openai-b", "anthropic-c")


def trace() -> tuple[str, dict[str, str]]:
    """A fresh sampled traceparent: (trace id, headers)."""
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


class Stack:
    def __init__(self, envoy: harness.Envoy, fakes: dict[str, str], config: dict):
        self.envoy, self.fakes, self.config = envoy, fakes, config
        self.url = envoy.url

    def requests(self, name: str) -> list[dict]:
        return httpx.get(f"{self.fakes[name]}/_fake/requests", timeout=5).json()

    def set(self, name: str, **switches) -> None:
        httpx.post(f"{self.fakes[name]}/_fake/config", json=switches, timeout=5).raise_for_status()

    def reset(self) -> None:
        for url in self.fakes.values():
            httpx.post(f"{url}/_fake/reset", timeout=5)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=ALICE, max_retries=0, timeout=20)

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=ALICE, max_retries=0, timeout=20)

    def genai(self):
        from google import genai
        return genai.Client(api_key=ALICE, http_options={"base_url": self.url, "timeout": 20_000,
                                                         "retry_options": {"attempts": 1}})

    def record(self, trace_id: str) -> dict:
        return self.envoy.wait_audit(1, 5, where=lambda r: r.get("trace_id") == trace_id)[-1]

    def price(self, model: str) -> dict:
        return next(p for p in self.config["prices"] if p["model"] == model)

    def chat(self, model: str, **kwargs):
        trace_id, headers = trace()
        reply = self.openai().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}], extra_headers=headers, **kwargs)
        return reply, trace_id


def shipped_config() -> tuple[dict, dict]:
    cfg = harness.load_envoy_config("llm-fallback.yaml")
    return cfg, harness.plugin_config(cfg, "tollgate.llm")


def start(workdir, started, *, dead_openai_a: bool = False) -> Stack:
    """Fakes for the three providers, and Envoy with their ports (openai-a's address points at
    a closed port when `dead_openai_a`)."""
    cfg, plugin = shipped_config()
    fakes, ports = {}, {}
    for name in PROVIDERS:
        port = harness.free_port()
        started.append(harness.python_server(
            f"fake-{name}", harness.FAKE_LLM, ["--host", "127.0.0.1", "--port", str(port), "--name", name],
            workdir, f"http://127.0.0.1:{port}/healthz"))
        fakes[name], ports[name] = f"http://127.0.0.1:{port}", port
    if dead_openai_a:
        ports["openai-a"] = harness.free_port()  # nothing listens there
    plugin = copy.deepcopy(plugin)
    old_to_new = {}
    for p in plugin["providers"]:
        old_to_new[p["address"]] = f"127.0.0.1:{ports[p['name']]}"
        p["address"] = old_to_new[p["address"]]
    cfg = copy.deepcopy(cfg)
    for cluster in cfg["static_resources"]["clusters"]:
        for ep in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]:
            sa = ep["endpoint"]["address"]["socket_address"]
            sa["port_value"] = int(old_to_new[f"{sa['address']}:{sa['port_value']}"].rsplit(":", 1)[1])
    envoy = harness.Envoy(cfg, workdir, plugin_configs={"tollgate.llm": plugin, "tollgate.llm.attempt": plugin})
    started.append(envoy.proc)
    return Stack(envoy, fakes, plugin)


def stack_fixture(name: str, tmp_path_factory):
    """A module's stack (generator for a pytest fixture): started, then always stopped."""
    workdir = tmp_path_factory.mktemp(name)
    started: list = []
    try:
        yield start(workdir, started)
    finally:
        for proc in reversed(started):
            proc.stop()


def stream_chat(stack: Stack, model: str) -> tuple[str, str]:
    """(text, trace id) of one streamed chat completion through the openai SDK."""
    trace_id, headers = trace()
    stream = stack.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], stream=True, extra_headers=headers)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices), trace_id
