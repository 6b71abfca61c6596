"""``clove llm``: the table, token counts in and out, and the argument parsing."""

from __future__ import annotations

import argparse

import pytest

from clove.cli import render
from clove.cli.main import _tokens, _weight, build_parser


def row(**kw):
    base = {"agent_id": 3, "name": "worker", "weight": 1.0, "used": 850, "budget": 1000, "reserved": 120,
            "period_budget": None, "period_used": None, "queued": 4, "in_flight": 2, "requests": 20, "failed": 1,
            "cancelled": 0, "queue_wait_ms": {"n": 20, "p50": 1.25, "p95": 40.0, "p99": 120.5, "max": 130.0}}  # fmt: skip
    return {**base, **kw}


def test_the_llm_table():
    stats = {
        "enabled": True,
        "default_provider": "local",
        "providers": [{"name": "local", "kind": "openai", "model": "llama3", "state": "up", "error": None, "in_flight": 2,
                       "concurrency": 4, "queued": 4, "completed": 19, "failed": 1, "retries": 3, "tokens": 123456}],  # fmt: skip
        "agents": [row(), row(agent_id=None, name="operator-9", budget=None, used=12, reserved=0,
                             period_budget=5000, period_used=4000, queue_wait_ms={"n": 0})],  # fmt: skip
    }
    text = render.llm_table(stats)
    lines = text.splitlines()
    assert lines[0].split() == ["PROVIDER", "KIND", "MODEL", "STATE", "IN-FLIGHT", "QUEUED", "DONE", "FAILED", "RETRIES", "TOKENS"]
    assert lines[1].split() == ["local", "*", "openai", "llama3", "up", "2/4", "4", "19", "1", "3", "123.5k"]
    worker = next(line for line in lines if "worker" in line)
    assert "850/1000 (85%)" in worker and "1.2/40/120" in worker  # waits p50/p95/p99 in ms
    operator = next(line for line in lines if "operator-9" in line)
    assert operator.split()[:5] == ["-", "operator-9", "1", "12", "4000/5000"]


def test_disabled_and_empty():
    assert render.llm_table({"enabled": False, "reason": "no [llm] table"}) == "LLM gateway disabled: no [llm] table"
    assert render.llm_table({"enabled": True, "providers": [], "agents": []}) == "no agents"


@pytest.mark.parametrize(("n", "text"), [(None, "∞"), (0, "0"), (9999, "9999"), (12345, "12.3k"), (4_500_000, "4.5M")])
def test_human_tokens(n, text):
    assert render.human_tokens(n) == text


@pytest.mark.parametrize(("text", "n"), [("5000", 5000), ("50k", 50_000), ("2M", 2_000_000), ("1_000", 1000), ("1.5k", 1500)])
def test_token_arguments(text, n):
    assert _tokens(text) == n


@pytest.mark.parametrize("text", ["-5", "lots", "1e99", "nan"])
def test_bad_token_arguments(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _tokens(text)


def test_weights_and_the_parser():
    assert _weight("2.5") == 2.5
    for bad in ("0", "-1", "x", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            _weight(bad)
    args = build_parser().parse_args(["llm", "worker", "--tokens", "10k", "--reset", "weight", "--reset", "period_tokens"])
    assert (args.name, args.tokens, args.reset, args.weight) == ("worker", 10_000, ["weight", "period_tokens"], None)
    assert build_parser().parse_args(["llm"]).name is None
