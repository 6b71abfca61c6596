"""The kernel's LLM service without a kernel: the real loop and worker pool, scripted and fake
providers, a list for the journal. Also the syscalls' argument checks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.config import LlmSection, load_config
from clove.errors import CloveError, InvalidArguments, OperationTimeout
from clove.kernel.core.loop import Loop
from clove.kernel.services.llm import NOT_CONFIGURED, LlmService
from clove.kernel.services.llmrequests import Thinker
from clove.kernel.syscalls.llm import Think, ThinkCall, build_request
from clove.llm.accounts import ProviderSlot, build_slots
from clove.llm.errors import LlmQuotaExceeded, LlmUnavailable
from clove.llm.provider import Provider
from clove.llm.types import ChatRequest, ChatResponse
from clove.policy import for_level

BASE = """
[llm]
plugins = ["scripted"]
{llm}
[llm.providers.main]
kind = "scripted"
model = "main-model"
models = ["alias"]
concurrency = {concurrency}
{main}
[llm.providers.second]
kind = "scripted"
model = "second-model"
reply = "second says hi"
"""


def settings(tmp_path: Path, *, llm: str = "", main: str = "", concurrency: int = 2, extra: str = "") -> LlmSection:
    path = tmp_path / "k.toml"
    path.write_text(BASE.format(llm=llm, main=main, concurrency=concurrency) + extra)
    section = load_config(path).llm
    assert section is not None
    return section


class Harness:
    def __init__(self, section: LlmSection | None, tmp_path: Path, slots: list[ProviderSlot] | None = None) -> None:
        self.loop = Loop(tick=0.01)
        self.records: list[tuple[str, str, int | None, dict[str, Any]]] = []
        self.warnings: list[dict[str, Any]] = []
        if slots is None:
            slots = build_slots(section, now=self.loop.clock()) if section is not None else []
        self.service = LlmService(
            loop=self.loop, settings=section, slots=slots,
            record=lambda event, code, agent_id, us, details: self.records.append((event, code, agent_id, details)),
            warn=lambda account, figures: self.warnings.append({"name": account.name, **figures}),
            recording_path=tmp_path / "llm" / "recording.jsonl",
        )  # fmt: skip

    def caller(self, principal: int = 7, *, tokens: int | None = None, operator: bool = False, name: str = "worker") -> Thinker:
        perms = for_level("unrestricted" if operator else "standard")
        if tokens is not None:
            perms = perms.with_grants({"llm_tokens": tokens})
        return Thinker(principal, name, None if operator else principal, perms, operator)

    def think(self, prompt: str, caller: Thinker | None = None, *, model: str | None = None, max_tokens: int = 50, timeout: float = 10.0) -> Outcome:
        slot, chosen = self.service.route(model)
        request = ChatRequest(prompt=prompt, model=chosen, max_tokens=max_tokens)
        outcome = Outcome()
        self.service.submit(caller or self.caller(), request, slot, timeout=timeout, extra={}).bind(outcome.set)
        return outcome

    def run_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            self.loop.run_once()

    def close(self) -> None:
        self.service.close()


class Outcome:
    def __init__(self) -> None:
        self.value: Any = None
        self.error: CloveError | None = None
        self.done = False
        self.at = 0.0

    def set(self, value: Any, error: CloveError | None) -> None:
        self.value, self.error, self.done, self.at = value, error, True, time.monotonic()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(section: LlmSection | None = None, slots: list[ProviderSlot] | None = None, **kw: Any) -> Harness:
        h = Harness(section if section is not None or slots is not None else settings(tmp_path, **kw), tmp_path, slots)
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()


# ---- the happy path and routing ------------------------------------------------------------------------


def test_think_is_performed_and_journaled_without_the_prompt(make):
    h = make()
    out = h.think("what is up")
    h.run_until(lambda: out.done)
    assert out.error is None
    reply = out.value
    assert reply["success"] and reply["content"] == "scripted reply to: what is up" and reply["provider"] == "main"
    assert (reply["prompt_tokens"], reply["completion_tokens"], reply["tokens"]) == (7, 6, 13)
    assert reply["attempts"] == 1 and reply["queue_wait_ms"] >= 0 and reply["latency_ms"] >= 0
    (event, code, agent_id, details) = h.records[-1]
    assert (event, code, agent_id, details["outcome"], details["tokens"]) == ("llm.request", "ok", 7, "ok", 13)
    assert "prompt" not in details and "answer" not in details and "what is up" not in json.dumps(details)


def test_recording_keeps_prompts_and_answers(make, tmp_path):
    h = make(llm="record = true")
    out = h.think("remember " + "x" * 3000)
    h.run_until(lambda: out.done)
    details = h.records[-1][3]
    assert details["prompt"].startswith("remember") and details["answer"].startswith("scripted reply")
    assert len(details["prompt_sha256"]) == 64 and len(details["answer_sha256"]) == 64
    line = json.loads((tmp_path / "llm" / "recording.jsonl").read_text().splitlines()[-1])
    assert line["prompt"] == "remember " + "x" * 3000 and line["answer"] == out.value["content"]  # whole, for replay
    assert (tmp_path / "llm" / "recording.jsonl").stat().st_mode & 0o777 == 0o600


def test_routing_by_model(make):
    h = make()
    assert h.service.route(None)[1] == "main-model"
    assert h.service.route("alias")[0].name == "main"
    assert h.service.route("second-model")[0].name == "second"
    with pytest.raises(LlmUnavailable, match=r"no LLM provider offers the model 'gpt-9' \(offered: alias, main-model, second-model\)"):
        h.service.route("gpt-9")
    out = h.think("hi", model="second-model")
    h.run_until(lambda: out.done)
    assert out.value["content"] == "second says hi" and out.value["model"] == "second-model"


def test_without_config_think_is_unavailable(make):
    h = make(None, slots=[])
    with pytest.raises(LlmUnavailable, match=r"no \[llm\] table") as err:
        h.service.route(None)
    assert err.value.message == NOT_CONFIGURED
    assert h.service.describe()["enabled"] is False


# ---- limits from config, grants and overrides ------------------------------------------------------------


def test_limits_come_from_config_then_the_grant_then_overrides(make, tmp_path):
    h = make(settings(tmp_path, extra="[llm.defaults]\nbudget = 1000\nrpm = 60\n[llm.agents.vip]\nweight = 4\nperiod_budget = 500\n"))
    worker = h.service.limits_for(h.caller(1))
    assert (worker.weight, worker.budget, worker.rpm, worker.period_budget) == (1.0, 1000, 60, None)
    vip = h.service.limits_for(h.caller(2, name="vip", tokens=50))
    assert (vip.weight, vip.budget, vip.period_budget, vip.rpm) == (4.0, 50, 500, 60)  # the grant wins
    h.service.overrides[2] = {"weight": 2.0, "period_budget": 10}
    assert (h.service.limits_for(h.caller(2, name="vip")).weight, h.service.limits_for(h.caller(2, name="vip")).period_budget) == (2.0, 10)
    operator = h.service.limits_for(h.caller(3, operator=True))
    assert (operator.budget, operator.rpm, operator.period_budget) == (None, None, None)


def test_budget_refusal_and_warning(make):
    h = make()
    caller = h.caller(tokens=40)
    with pytest.raises(LlmQuotaExceeded) as err:
        h.think("too big", caller, max_tokens=100)
    assert err.value.details["kind"] == "lifetime" and err.value.details["remaining"] == 40
    for _ in range(3):  # 6 prompt + 8 answer reserved, 6 + 5 billed
        out = h.think("a b", caller, max_tokens=8)
        h.run_until(lambda out=out: out.done)
        assert out.value["tokens"] == 11
    figures = h.service.figures(caller)
    assert (figures["used"], figures["budget_left"], figures["reserved"]) == (33, 7, 0)
    assert h.warnings == [{"name": "worker", "budget_kind": "lifetime", "used": 33, "budget": 40}]
    with pytest.raises(LlmQuotaExceeded):
        h.think("a b", caller, max_tokens=8)


# ---- deadlines -----------------------------------------------------------------------------------------------


def test_a_queued_request_times_out_at_its_deadline(make):
    h = make(main="latency = 0.6", concurrency=1)
    first = h.think("first", timeout=5)
    second = h.think("second", timeout=0.2)
    started = time.monotonic()
    h.run_until(lambda: second.done and first.done)
    assert isinstance(second.error, OperationTimeout) and second.at - started < 0.5
    assert "waited" in second.error.message and first.error is None
    outcomes = [(d["outcome"], d["dispatched_at"]) for _, _, _, d in h.records]
    assert ("timeout", None) in outcomes


class Stubborn(Provider):
    """Ignores its deadline: answers after ``delay`` seconds whatever happens."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.release = threading.Event()
        super().__init__(None, name="stubborn", concurrency=2)

    def _complete(self, request: ChatRequest, deadline: float) -> ChatResponse:
        self.release.wait(self.delay)
        return ChatResponse(content="late", model=request.model, prompt_tokens=3, completion_tokens=4)


def stub_slot(provider: Provider, concurrency: int = 2) -> list[ProviderSlot]:
    return [ProviderSlot(name="main", kind="stub", model="main-model", models=(), concurrency=concurrency, timeout=60.0, provider=provider)]


def test_a_stuck_provider_gets_a_timeout_answer_and_is_billed_when_it_returns(make, tmp_path):
    stubborn = Stubborn(1.2)
    h = make(settings(tmp_path), slots=stub_slot(stubborn))
    out = h.think("hello", timeout=0.3)
    started = time.monotonic()
    h.run_until(lambda: out.done)
    assert isinstance(out.error, OperationTimeout) and 0.6 < out.at - started < 1.1  # deadline + grace
    h.run_until(lambda: bool(h.records), timeout=5)
    details = h.records[-1][3]
    assert details["outcome"] == "timeout" and details["tokens"] == 7
    assert h.service.gateway.accounts[7].budget.used == 7


class Buggy(Provider):
    def _complete(self, request: ChatRequest, deadline: float) -> ChatResponse:
        raise ValueError("plugin bug")


def test_a_plugin_bug_is_a_clear_error_not_a_crash(make, tmp_path, caplog):
    h = make(settings(tmp_path), slots=stub_slot(Buggy(None, name="main")))
    out = h.think("hello")
    h.run_until(lambda: out.done)
    assert isinstance(out.error, LlmUnavailable) and "failed inside its plugin (ValueError)" in out.error.message
    assert "plugin bug" in caplog.text


def test_a_provider_that_fails_to_start_is_reported_not_fatal(make, tmp_path, monkeypatch):
    monkeypatch.delenv("CLOVE_TEST_ABSENT_KEY", raising=False)
    path = tmp_path / "o.toml"
    path.write_text('[llm]\nplugins = ["openai"]\n[llm.providers.cloud]\nkind = "openai"\nmodel = "gpt"\n'
                    'base_url = "https://example.invalid/v1"\napi_key_env = "CLOVE_TEST_ABSENT_KEY"\n')  # fmt: skip
    h = make(load_config(path).llm)
    slot = h.service.gateway.providers["cloud"]
    assert slot.provider is None and "CLOVE_TEST_ABSENT_KEY" in (slot.error or "")
    with pytest.raises(LlmUnavailable, match="CLOVE_TEST_ABSENT_KEY"):
        h.think("hi")
    assert h.service.describe()["providers"][0]["state"] == "unavailable"


# ---- callers going away ---------------------------------------------------------------------------------------


def test_cancel_drops_queued_unbilled_and_running_without_a_reply(make):
    h = make(main="latency = 0.4", concurrency=1)
    outs = [h.think(f"job {i}") for i in range(4)]
    h.run_until(lambda: len(h.service.gateway.running) == 1)
    assert h.service.cancel(7, forget=True) == 4
    cancelled = [d for _, _, _, d in h.records if d["outcome"] == "cancelled"]
    assert len(cancelled) == 3 and all(d["tokens"] == 0 and d["dispatched_at"] is None for d in cancelled)
    h.run_until(lambda: len(h.records) == 4, timeout=5)
    running = h.records[-1][3]
    assert running["outcome"] == "cancelled" and running["tokens"] > 0
    assert not any(o.done for o in outs)  # nobody is answered
    assert h.service.held() == {"llm_accounts": 0, "llm_pending": 0, "llm_overrides": 0}  # forgotten once its last call returned


# ---- the syscall's argument checks --------------------------------------------------------------------------------


def test_think_keeps_prompts_out_of_the_syscall_record():
    body = {"prompt": "secret plans", "system_instruction": "be evil", "image": b"\x00" * 10, "max_tokens": 5}
    req = Think().parse(body)
    assert req.prompt == "secret plans" and req.image == b"\x00" * 10
    assert body == {"prompt": "<12 chars>", "system_instruction": "<7 chars>", "image": "<10 bytes>", "max_tokens": 5}
    refused = {"prompt": "secret plans", "bogus": 1}
    with pytest.raises(InvalidArguments, match="bogus"):
        Think().parse(refused)
    assert refused == {"prompt": "<12 chars>", "bogus": 1}  # a refused call is journaled too


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (ThinkCall(prompt=""), "prompt"),
        (ThinkCall(prompt="x", thinking_level="extreme"), "thinking_level"),
        (ThinkCall(prompt="x", temperature=2.5), "temperature"),
        (ThinkCall(prompt="x", temperature=float("nan")), "temperature"),
        (ThinkCall(prompt="x", max_tokens=0), "max_tokens"),
        (ThinkCall(prompt="x", image=b"x", image_mime_type="image/bmp"), "image_mime_type"),
        (ThinkCall(prompt="x", image="not base64!"), "image"),
        (ThinkCall(prompt="x", request_id="r" * 129), "request_id"),
    ],
)
def test_bad_think_arguments(call, argument):
    with pytest.raises(InvalidArguments) as err:
        build_request(call, model="m", default_max_tokens=100)
    assert err.value.details["argument"] == argument


def test_think_arguments_become_a_request():
    r = build_request(ThinkCall(prompt="", image="aGk=", image_mime_type="image/png", temperature=1, thinking_level="low"), model="m", default_max_tokens=77)
    assert (r.image.data, r.image.mime_type, r.temperature, r.max_tokens, r.thinking_level) == (b"hi", "image/png", 1.0, 77, "low")  # type: ignore[union-attr]
