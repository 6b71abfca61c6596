"""Which relays, environment and network switch an agent's spawn spec gets from its config, and
what its isolation report then says (the sandbox's side is tests/integration/test_sandbox_relays.py)."""

from __future__ import annotations

from typing import Any

import pytest

from clove.config import AgentConfig, SandboxSection
from clove.kernel.core.agents import Agent
from clove.kernel.supervision.launchspec import build_spawn_spec, network_report
from clove.policy import for_level
from clove.sandbox.relays import EGRESS_PORT, LLM_KEY_PLACEHOLDER, LLM_PORT, Relay
from clove.sandbox.spec import SpawnSpec

ENDPOINT = "ipc:///state/agents/4/ipc/kernel.sock"


def agent(level: str = "standard", **spec: Any) -> Agent:
    config = AgentConfig(name="a", script="/srv/a.py", **spec)
    return Agent(id=4, spec=config, uid=300_004, permissions=for_level(level, work_dir="/w"))


def launch(a: Agent, *, llm: bool = False) -> SpawnSpec:
    return build_spawn_spec(
        a, endpoint=ENDPOINT, work="/w", sandbox=SandboxSection(), cgroup_attach=(), rlimits=[], interpreter=[], llm_gateway=llm
    )


def test_network_true_is_an_own_namespace_with_the_egress_relay_and_proxy_variables() -> None:
    spec = launch(agent(network=True))
    assert spec.network is False and spec.relayed and spec.relay_ports == (EGRESS_PORT,)
    assert spec.relays == (Relay(EGRESS_PORT, "/state/agents/4/ipc/egress.sock"),)
    assert spec.env["HTTPS_PROXY"] == spec.env["http_proxy"] == "http://127.0.0.1:3128"
    assert spec.env["no_proxy"] == "127.0.0.1,localhost" and "OPENAI_BASE_URL" not in spec.env


def test_the_llm_relay_needs_the_gateway_and_the_right_and_yields_to_the_operators_env() -> None:
    both = launch(agent(network=True), llm=True)
    assert [r.port for r in both.relays] == [EGRESS_PORT, LLM_PORT]
    assert both.env["OPENAI_BASE_URL"] == "http://127.0.0.1:8199/v1" and both.env["OPENAI_API_KEY"] == LLM_KEY_PLACEHOLDER
    assert launch(agent(), llm=False).relays == ()
    assert launch(agent("readonly"), llm=True).relays == ()  # no llm right
    own = launch(agent(env={"OPENAI_API_KEY": "mine", "HTTP_PROXY": "http://x:1"}), llm=True)
    assert own.env["OPENAI_API_KEY"] == "mine" and own.env["OPENAI_BASE_URL"].endswith(":8199/v1")
    assert "HTTP_PROXY" not in launch(agent(), llm=True).env


@pytest.mark.parametrize(
    ("spec", "network"),
    [({"network": True, "network_full": True}, True), ({"network": True, "sandboxed": False}, True), ({"sandboxed": False}, False)],
)
def test_full_and_unsandboxed_agents_get_no_relays(spec: dict[str, Any], network: bool) -> None:
    launched = launch(agent(**spec), llm=True)
    assert launched.network is network
    assert not launched.relayed and launched.relay_ports == ()
    assert "HTTP_PROXY" not in launched.env


def test_the_isolation_report_says_what_the_sandbox_did() -> None:
    own = {"namespaces": ["mount", "uts", "ipc", "pid", "net"]}
    assert network_report(agent(network=True), {**own, "relays": [EGRESS_PORT]}) == {"network": "proxy", "relays": [EGRESS_PORT]}
    assert network_report(agent(), {**own, "relays": [LLM_PORT]}) == {"network": "none", "relays": [LLM_PORT]}
    failed = network_report(agent(network=True), {**own, "relays": []})
    assert failed["network"] == "none" and "not up" in failed["network_note"]
    assert network_report(agent(network=True, network_full=True), {"namespaces": ["mount"]}) == {"network": "full", "relays": []}
    loose = network_report(agent(network=True, sandboxed=False), {})
    assert loose["network"] == "host" and "no egress proxy" in loose["network_note"]
