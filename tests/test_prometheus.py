"""Metrics fit for the operator's questions, answered by a real Prometheus (Debian's
`prometheus`, `make prometheus`) scraping Envoy's /stats/prometheus every second.

Two Envoys: the demo stack (envoy/stack.yaml: LLM, MCP and A2A behind one listener, with every
demo upstream; plus a guardrail policy for bob's key, and the team budget counted locally) and the
virtual-models gateway (envoy/llm-fallback.yaml). Traffic is made in two rounds through the
real SDKs (openai, anthropic, mcp, A2A JSON-RPC); each round ends when its audit records are
written and Prometheus has scraped both Envoys after them. The README's PromQL ("Observability")
is then checked against the audit records and the requests made, and every panel of
examples/grafana/tollgate.json is executed.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import time
from collections import Counter
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest
import yaml

import harness
from llm_fallback_helpers import start as start_fallback
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.timeout(240)

PROMETHEUS = shutil.which("prometheus")
DASHBOARD = harness.REPO / "examples" / "grafana" / "tollgate.json"
KEYS = {"alice": "tg-demo-alice", "bob": "tg-demo-bob", "planner": "tg-demo-planner"}
CARD = "4111 1111 1111 1111"
BOB_NO_CARDS = {"id": "bob-no-cards", "keys": ["bob-key"], "on": ["request"], "action": "block",
                "detectors": {"builtin": ["card"]}}
# Grafana's variables in the dashboard's expressions, as Grafana would fill them in.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h"}


def window(metric: str, by: str, over: str) -> str:
    """The README's exact window form: the counter now minus the counter `over` ago (0 for a
    series born inside the window)."""
    return f"sum by ({by}) ({metric} - ({metric} offset {over} or {metric} * 0))"


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, int]):
        port = harness.free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": job, "metrics_path": "/stats/prometheus", "scrape_interval": "1s",
                                      "static_configs": [{"targets": [f"127.0.0.1:{admin}"]}]}
                                     for job, admin in targets.items()]}
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.jobs = set(targets)
        self.proc = harness.Proc("prometheus", [PROMETHEUS, f"--config.file={path}",
                                                f"--storage.tsdb.path={workdir / 'tsdb'}",
                                                f"--web.listen-address=127.0.0.1:{port}"], workdir)
        self.url = f"http://127.0.0.1:{port}"
        harness.wait_until(lambda: httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200, 30,
                           "prometheus ready", self.proc)

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        response = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (promql, body)
        return body["data"]["result"]

    def query_range(self, promql: str, start: float, end: float) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query_range", timeout=10,
                             params={"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (promql, body)
        return body["data"]["result"]

    def values(self, promql: str, by: tuple[str, ...], at: float | None = None) -> dict[tuple, float]:
        return {tuple(r["metric"].get(label, "") for label in by): float(r["value"][1]) for r in self.query(promql, at)}

    def wait_scraped_after(self, t: float) -> None:
        """Until every Envoy was scraped (successfully) after `t`."""
        def scraped() -> bool:
            last = {r["metric"]["job"]: float(r["value"][1]) for r in self.query("timestamp(up == 1)")}
            return set(last) == self.jobs and all(last[j] > t for j in self.jobs)
        harness.wait_until(scraped, 20, "a scrape of every Envoy", self.proc)


def traceparent() -> tuple[str, dict[str, str]]:
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


class World:
    """Both Envoys, their upstreams, Prometheus, and what each round of traffic did."""

    def __init__(self, stack: harness.Envoy, ports: dict[str, int], fallback, prometheus: Prometheus):
        self.stack, self.ports, self.fallback, self.prom = stack, ports, fallback, prometheus
        self.round_ends: list[float] = []
        self.expected_mcp: Counter = Counter()
        self.expected_upstream_tools: Counter = Counter()

    # --- traffic -------------------------------------------------------------------------
    def llm(self) -> list[str]:
        """LLM calls through the stack; returns their trace ids."""
        traces = []

        def chat(who: str, model: str, text: str = "how much did we spend?", status: int = 200, **headers) -> None:
            trace_id, h = traceparent()
            traces.append(trace_id)
            client = openai.OpenAI(base_url=f"{self.stack.url}/v1", api_key=KEYS[who], max_retries=0, timeout=20)
            try:
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               extra_headers={**h, **headers})
                answered = 200
            except openai.APIStatusError as e:
                answered = e.status_code
            assert answered == status, (who, model, answered)

        chat("alice", "fast")  # an alias: served as gpt-4o-mini
        chat("alice", "gpt-4o-mini")
        chat("alice", "gpt-4.1")  # a dotted model name
        chat("bob", "fast")
        chat("alice", "gpt-4o-mini", status=503, **{"x-fake-status": "503"})  # a provider error
        chat("bob", "gpt-4o-mini", text=f"my card is {CARD}", status=400)  # refused by bob-no-cards
        trace_id, h = traceparent()
        traces.append(trace_id)
        claude = anthropic.Anthropic(base_url=self.stack.url, api_key=KEYS["alice"], max_retries=0, timeout=20)
        with claude.messages.stream(model="claude-sonnet-4-6", max_tokens=64, extra_headers=h,
                                    messages=[{"role": "user", "content": "stream please"}]) as stream:
            assert "provider-b" in "".join(stream.text_stream)
        return traces

    def mcp(self) -> None:
        async def session(who: str, calls: list[tuple[str, dict, str]]) -> None:
            async with httpx2.AsyncClient(headers={"x-api-key": KEYS[who]}, timeout=20) as http:
                async with Client(streamable_http_client(f"{self.stack.url}/mcp", http_client=http), mode="legacy") as client:
                    for tool, arguments, decision in calls:
                        if decision == "allow":
                            result = await client.call_tool(tool, arguments)
                            assert not result.is_error, result
                            self.expected_upstream_tools[tool] += 1
                        else:
                            with pytest.raises(MCPError):
                                await client.call_tool(tool, arguments)
                        self.expected_mcp[(who, tool, decision)] += 1

        asyncio.run(session("alice", [("echo", {"text": "hi"}, "allow"), ("add", {"a": 1, "b": 2}, "allow"),
                                      ("query_db", {"table": "users", "sql": "select 1"}, "deny")]))
        asyncio.run(session("bob", [("add", {"a": 2, "b": 3}, "allow")]))

    def a2a(self) -> None:
        def send(agent: str, who: str, text: str, **headers) -> httpx.Response:
            return httpx.post(f"{self.stack.url}/agents/{agent}/", timeout=30,
                              headers={"a2a-version": "1.0", "x-api-key": KEYS[who], **headers},
                              json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
                                  "messageId": secrets.token_hex(4), "role": "ROLE_USER", "parts": [{"text": text}]}}})

        sent = send("planner", "alice", "plan it")  # two hops: planner, then echo
        assert "[echo] echo: plan it" in sent.text, sent.text
        # The planner (a trusted agent) replays a chain that already holds echo: a loop.
        loop = send("echo", "planner", "again", **{"x-tollgate-a2a-chain": "planner,echo", "x-tollgate-a2a-hop": "1"})
        assert loop.json()["error"]["code"] == -32050, loop.text

    def fallback_chat(self) -> str:
        """openai-a fails once: the virtual model `chat` falls back to openai-b."""
        self.fallback.set("openai-a", status=503, fail_first=1)
        reply, trace_id = self.fallback.chat("chat")
        assert "openai-b" in reply.choices[0].message.content
        return trace_id

    def round(self, with_fallback: bool) -> None:
        traces = self.llm()
        self.mcp()
        self.a2a()
        fallback_traces = [self.fallback_chat()] if with_fallback else []
        rounds = len(self.round_ends) + 1
        # Every request's record is written (its metrics are counted at the same moment)...
        for trace_id in traces:
            self.stack.wait_audit(1, 10, where=lambda r, t=trace_id: r.get("trace_id") == t and r["layer"] == "llm")
        for trace_id in fallback_traces:
            self.fallback.envoy.wait_audit(1, 10, where=lambda r, t=trace_id: r.get("trace_id") == t)
        self.stack.wait_audit(sum(self.expected_mcp.values()), 10,
                              where=lambda r: r["layer"] == "mcp" and r.get("method") == "tools/call")
        self.stack.wait_audit(2 * rounds, 10, where=lambda r: r["layer"] == "a2a" and r.get("decision") == "allow"
                              and r.get("method") == "SendMessage")
        self.stack.wait_audit(rounds, 10, where=lambda r: r["layer"] == "a2a" and r.get("reason") == "A2A_DELEGATION_LOOP")
        # ... and Prometheus scraped both Envoys after that: its totals are the requests made.
        self.prom.wait_scraped_after(time.time())
        def total(promql: str) -> float:
            return sum(float(r["value"][1]) for r in self.prom.query(promql))
        stack_llm = len([r for r in self.stack.audit_records() if r["layer"] == "llm"])
        fallback_llm = len([r for r in self.fallback.envoy.audit_records() if r["layer"] == "llm"])
        a2a_calls = len([r for r in self.stack.audit_records() if r["layer"] == "a2a"])  # hops, card reads, refusals
        want = (stack_llm, fallback_llm, sum(self.expected_mcp.values()), a2a_calls)
        seen = []

        def holds() -> bool:
            seen[:] = [total('sum(tollgate_llm_gen_ai_client_requests{job="stack"})'),
                       total('sum(tollgate_llm_gen_ai_client_requests{job="fallback"})'),
                       total("sum(tollgate_mcp_calls)"), total("sum(tollgate_a2a_calls)")]
            return tuple(seen) == want
        try:
            harness.wait_until(holds, 20, "Prometheus holding this round's requests")
        except TimeoutError as e:
            a2a = [(r.get("method"), r.get("target"), r.get("decision")) for r in self.stack.audit_records() if r["layer"] == "a2a"]
            raise AssertionError(f"Prometheus has {seen}, the requests made {want}; a2a {a2a}") from e
        self.round_ends.append(time.time())

    # --- audit -----------------------------------------------------------------------------
    def llm_records(self) -> list[dict]:
        records = [r for r in self.stack.audit_records() if r["layer"] == "llm"]
        return records + [r for r in self.fallback.envoy.audit_records() if r["layer"] == "llm"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if PROMETHEUS is None:
        pytest.fail("prometheus is not installed: `make prometheus` (Debian's package)")
    workdir = tmp_path_factory.mktemp("prometheus")
    started: list = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: [p.stop() for p in reversed(started)])
        ports = {name: harness.free_port() for name in
                 ("llm_provider_a", "llm_provider_b", "mcp_demo", "agent_echo", "agent_planner", "agent_researcher")}
        cfg = harness.load_envoy_config("stack.yaml")
        llm = harness.plugin_config(cfg, "tollgate.llm")
        llm["guardrails"] = {"policies": [BOB_NO_CARDS]}
        # The team budget counted in this Envoy (no Redis and tollgate-limits needed here).
        del llm["store"]
        llm["limits"] = [{k: v for k, v in limit.items() if k not in ("counters", "on_store_failure")}
                         for limit in llm["limits"]]
        stack = harness.Envoy(cfg, workdir, concurrency=2, name="stack", upstreams=ports,
                              plugin_configs={"tollgate.llm": llm})
        started.append(stack.proc)
        p = ports
        for name, port in (("provider-a", p["llm_provider_a"]), ("provider-b", p["llm_provider_b"])):
            started.append(harness.python_server(name, harness.FAKE_LLM, ["--port", str(port), "--name", name], workdir,
                                                 f"http://127.0.0.1:{port}/healthz"))
        started.append(harness.python_server("mcp", "examples/mcp_server/server.py", ["--port", str(p["mcp_demo"])],
                                             workdir, f"http://127.0.0.1:{p['mcp_demo']}/_calls"))
        started.append(harness.python_server(
            "echo", "examples/a2a_agent/agent.py",
            ["--port", str(p["agent_echo"]), "--name", "echo", "--public-url", f"http://127.0.0.1:{p['agent_echo']}/"],
            workdir, f"http://127.0.0.1:{p['agent_echo']}/.well-known/agent-card.json"))
        started.append(harness.python_server(
            "planner", "examples/a2a_agent/agent.py",
            ["--port", str(p["agent_planner"]), "--name", "planner", "--public-url", f"http://127.0.0.1:{p['agent_planner']}/",
             "--delegate-to", f"{stack.url}/agents/echo/"],
            workdir, f"http://127.0.0.1:{p['agent_planner']}/.well-known/agent-card.json"))
        fallback = start_fallback(workdir, started)
        prometheus = Prometheus(workdir, {"stack": stack.admin_port, "fallback": fallback.envoy.admin_port})
        started.append(prometheus.proc)
        w = World(stack, ports, fallback, prometheus)
        w.round(with_fallback=True)
        w.round(with_fallback=False)
        yield w


# --- the questions ---------------------------------------------------------------------------

def spend_by_team_and_model(records: list[dict]) -> dict[tuple, float]:
    out: Counter = Counter()
    for r in records:
        if r.get("cost_micro_usd"):
            out[((r.get("identity") or {}).get("team", "none"), r.get("upstream_model", "none"))] += r["cost_micro_usd"]
    return dict(out)


def test_spend_of_a_team_on_a_served_model_equals_the_audit_records_aliases_included(world):
    records = world.llm_records()
    expected = spend_by_team_and_model(records)
    assert expected.get(("payments", "gpt-4.1"), 0) > 0 and expected.get(("research", "gpt-4o-mini"), 0) > 0, expected
    got = world.prom.values(window("tollgate_llm_cost_micro_usd", "team, upstream_model", "1h"), ("team", "upstream_model"))
    assert got == expected
    # The alias `fast` has no series of its own: its cost is under the model the provider served.
    assert not world.prom.query('tollgate_llm_cost_micro_usd{upstream_model="fast"}')
    fast = sum(r["cost_micro_usd"] for r in records if r.get("model") == "fast" and r["identity"]["team"] == "payments"
               and r.get("cost_micro_usd"))
    direct = sum(r["cost_micro_usd"] for r in records if r.get("model") == "gpt-4o-mini" and r.get("upstream_model") == "gpt-4o-mini"
                 and r["identity"]["team"] == "payments" and r.get("cost_micro_usd"))
    assert fast > 0 and direct > 0
    # One team, one model, in dollars: the README's question as asked.
    [answer] = world.prom.query(window('tollgate_llm_cost_micro_usd{team="payments",upstream_model="gpt-4o-mini"}',
                                       "team, upstream_model", "1h") + " / 1e6")
    assert float(answer["value"][1]) == pytest.approx(expected[("payments", "gpt-4o-mini")] / 1e6, abs=1e-9)


def test_spend_over_a_window_counts_only_the_window(world):
    """Evaluated now with the window starting between the rounds: only round 2's spend."""
    between = world.round_ends[0]
    now = time.time()
    over = f"{int((now - between) * 1000)}ms"
    round_two = [r for r in world.llm_records() if r["timestamp_ms"] / 1000 > between]
    got = world.prom.values(window("tollgate_llm_cost_micro_usd", "team, upstream_model", over),
                            ("team", "upstream_model"), at=now)
    # Series that did not move in the window answer 0 (round 2 made no fallback traffic).
    assert {k: v for k, v in got.items() if v} == spend_by_team_and_model(round_two)
    assert got[("payments", "gpt-4o-mini")] < world.prom.values(
        window("tollgate_llm_cost_micro_usd", "team, upstream_model", "1h"), ("team", "upstream_model"), at=now)[
        ("payments", "gpt-4o-mini")]


def test_dotted_model_names_are_label_values_as_they_are(world):
    series = world.prom.query('tollgate_llm_cost_micro_usd{upstream_model="gpt-4.1"}')
    assert series and all(s["metric"]["model"] == "gpt-4.1" and s["metric"]["key"] == "alice-key"
                          and s["metric"]["agent"] == "alice" and s["metric"]["provider"] == "provider-a" for s in series), series
    assert world.prom.query('tollgate_llm_gen_ai_client_token_usage{upstream_model="gpt-4.1",token_type="input"}')
    assert 'upstream_model="gpt-4.1"' in world.stack.prometheus()


def test_tool_calls_by_agent_and_decision(world):
    got = world.prom.values("sum by (mcp_caller, mcp_tool, mcp_decision) (tollgate_mcp_calls)",
                            ("mcp_caller", "mcp_tool", "mcp_decision"))
    assert got == {k: float(v) for k, v in world.expected_mcp.items()}
    by_agent = world.prom.values("sum by (mcp_caller, mcp_decision) (tollgate_mcp_calls)", ("mcp_caller", "mcp_decision"))
    assert by_agent == {("alice", "allow"): 4.0, ("alice", "deny"): 2.0, ("bob", "allow"): 2.0}
    # The same as the audit records say, and what reached the MCP server.
    audit = Counter((r["identity"]["principal"], r["tool"], r["decision"]) for r in world.stack.audit_records()
                    if r["layer"] == "mcp" and r.get("method") == "tools/call")
    assert audit == world.expected_mcp
    upstream = httpx.get(f"http://127.0.0.1:{world.ports['mcp_demo']}/_calls", timeout=5).json()
    assert {t: n for t, n in upstream.items() if n} == dict(world.expected_upstream_tools)


def test_error_rate_by_provider(world):
    records = [r for r in world.stack.audit_records() if r["layer"] == "llm"]
    requests, errors = Counter(), Counter()
    for r in records:
        provider = r.get("provider", "none")
        requests[provider] += 1
        errors[provider] += 1 if r.get("error_type") else 0
    # Each round: one 503 from provider-a; provider-b answered everything.
    assert Counter(r.get("error_type") for r in records if r.get("provider") == "provider-a")["http_503"] == 2
    # A provider without errors has no error series: `or … * 0` answers 0 for it.
    requests_q = 'sum by (provider) (tollgate_llm_gen_ai_client_requests{job="stack"})'
    got = world.prom.values(f'(sum by (provider) (tollgate_llm_errors{{job="stack"}}) or {requests_q} * 0) / {requests_q}',
                            ("provider",))
    expected = {(p,): errors[p] / requests[p] for p in requests if errors[p]}
    expected.update({(p,): 0.0 for p in requests if not errors[p] and p != "none"})
    assert {k: v for k, v in got.items() if k in expected} == pytest.approx(expected)
    assert got[("provider-b",)] == 0.0 and got[("provider-a",)] > 0


def test_fallbacks_by_deployment(world):
    failures = world.prom.values("sum by (deployment) (tollgate_llm_deployment_failures)", ("deployment",))
    assert failures == {("openai-a_gpt-4o-mini",): 1.0}
    attempts = world.prom.values("sum by (deployment, status) (tollgate_llm_deployment_attempts)", ("deployment", "status"))
    assert attempts == {("openai-a_gpt-4o-mini", "503"): 1.0, ("openai-b_gpt-4o-mini", "200"): 1.0}
    [record] = [r for r in world.fallback.envoy.audit_records() if r["layer"] == "llm"]
    assert [(a["deployment"], a.get("status")) for a in record["attempts"]] == [
        ("openai-a/gpt-4o-mini", 503), ("openai-b/gpt-4o-mini", 200)]


def test_guardrail_hits_and_delegation_loops_refused(world):
    # One card in bob's request per round, blocked by bob-no-cards.
    hits = world.prom.values("sum by (guardrail_detector, guardrail_action, team) (tollgate_llm_guardrail_hits)",
                             ("guardrail_detector", "guardrail_action", "team"))
    assert hits == {("card", "block", "research"): 2.0}
    loops = world.prom.values('sum by (a2a_target) (tollgate_a2a_denied{a2a_reason="A2A_DELEGATION_LOOP"})', ("a2a_target",))
    assert loops == {("echo",): 2.0}
    hops = world.prom.values('sum by (a2a_target, a2a_state) (tollgate_a2a_calls{a2a_method="SendMessage"})',
                             ("a2a_target", "a2a_state"))
    assert hops == {("planner", "completed"): 2.0, ("echo", "completed"): 2.0, ("echo", "denied"): 2.0}


# --- the dashboard ---------------------------------------------------------------------------

def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, panel type, expr) of every target of every panel (rows included)."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                out.append((panel["title"], panel["type"], target["expr"]))
    walk(dashboard["panels"])
    return out


def test_the_dashboard_covers_the_questions():
    titles = " | ".join(t for t, _, _ in dashboard_targets()).lower()
    for topic in ("spend", "tokens", "duration", "first token", "error", "guardrail", "fallback", "mcp tool calls",
                  "a2a hops", "loops"):
        assert topic in titles, topic


def test_every_dashboard_panel_runs_and_has_data(world):
    now = time.time()
    for title, kind, expr in dashboard_targets():
        promql = expr
        for var, value in GRAFANA_VARS.items():
            promql = promql.replace(var, value)
        assert "$" not in promql, (title, promql)
        if kind == "timeseries":
            result = world.prom.query_range(promql, now - 120, now)
        else:
            result = world.prom.query(promql, now)
        assert result, f"panel {title!r} has no data: {promql}"
