"""Provider plugins: discovery through pluggy and the entry-point group, the allowlist, the typed
registry, the hookspec, the option parser, and the provider contract. A fresh PluginManager per
test, never a global one."""

from __future__ import annotations

import gc
import inspect
import time
import types
from dataclasses import dataclass, field
from typing import Any

import pluggy
import pytest

from clove.errors import ConfigError, OperationTimeout, UpstreamError
from clove.llm import hookspecs
from clove.llm.errors import LlmUnavailable, ProviderError, RateLimited, ServerError
from clove.llm.options import OptionError, describe, parse_options
from clove.llm.provider import MESSAGE_OVERHEAD, REPLY_OVERHEAD, Provider
from clove.llm.registry import (
    ENTRY_POINT_GROUP,
    ProviderRegistry,
    get_plugin_manager,
    hookimpl,
    installed_plugins,
    load_registry,
)
from clove.llm.scripted import ScriptedOptions, ScriptedProvider
from clove.llm.types import ChatRequest, ChatResponse, Image


@pytest.fixture
def pm() -> pluggy.PluginManager:
    return get_plugin_manager()


class Echo(Provider):
    def _complete(self, request: ChatRequest, deadline: float) -> ChatResponse:
        return ChatResponse(content=request.prompt, model=request.model, prompt_tokens=1, completion_tokens=1)


def request(prompt: str = "hello world", **kw: Any) -> ChatRequest:
    return ChatRequest(prompt=prompt, model="m", max_tokens=kw.pop("max_tokens", 100), **kw)


# ---- discovery -------------------------------------------------------------------------------------


def test_hook_clove_register_llm_providers(pm):
    plugin = types.SimpleNamespace(clove_register_llm_providers=hookimpl(lambda registry: registry.add("echo", Echo)))
    pm.register(plugin, name="echo-plugin")
    registry = load_registry([], pm=pm)
    assert registry.kinds() == ["echo"] and registry.get("echo") is Echo and "echo" in registry


def test_hookspec_is_documented_and_keyword_only_by_name():
    spec = hookspecs.clove_register_llm_providers
    assert list(inspect.signature(spec).parameters) == ["registry"]
    assert spec.__name__.startswith("clove_")
    assert ":param registry:" in (spec.__doc__ or "") and "versionadded" in (spec.__doc__ or "")


def test_our_providers_are_entry_points_like_any_third_partys():
    assert {"openai", "scripted"} <= set(installed_plugins())
    assert ENTRY_POINT_GROUP == "clove.llm_providers"


def test_only_allowlisted_plugins_load(pm):
    registry = load_registry(["scripted"], pm=pm)
    assert pm.has_plugin("scripted") and not pm.has_plugin("openai")
    assert registry.kinds() == ["scripted"] and registry.get("scripted") is ScriptedProvider
    assert load_registry([], pm=get_plugin_manager()).kinds() == []


def test_an_allowlisted_plugin_that_is_not_installed_is_a_config_error(pm):
    with pytest.raises(ConfigError, match=r"plugin 'nosuch' is not installed \(entry point group clove.llm_providers; installed: .*openai.*scripted"):
        load_registry(["nosuch"], pm=pm)


def test_a_hook_without_a_spec_is_refused(pm):
    plugin = types.SimpleNamespace(clove_register_llm_provider=hookimpl(lambda registry: None))  # a typo
    pm.register(plugin, name="typo")
    with pytest.raises(ConfigError, match="typo"):
        load_registry([], pm=pm)


def test_two_plugins_claiming_one_kind_are_refused(pm):
    class Other(Echo):
        pass

    pm.register(types.SimpleNamespace(clove_register_llm_providers=hookimpl(lambda registry: registry.add("x", Echo))), name="a")
    pm.register(types.SimpleNamespace(clove_register_llm_providers=hookimpl(lambda registry: registry.add("x", Other))), name="b")
    with pytest.raises(ConfigError, match="registered twice"):
        load_registry([], pm=pm)


def test_the_registry_is_typed():
    registry = ProviderRegistry()
    with pytest.raises(ValueError, match="not a clove.llm.Provider"):
        registry.add("x", object)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        registry.add("", Echo)
    registry.add("x", Echo)
    registry.add("x", Echo)  # the same class again is fine
    with pytest.raises(KeyError):
        registry.get("y")


# ---- options -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Opts:
    url: str = field(metadata={"help": "where"})
    n: int = 3
    ratio: float = 0.5
    on: bool = False
    names: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    maybe: int | None = None

    def __post_init__(self) -> None:
        if self.n > 10:
            raise OptionError("n", "must be at most 10")


def test_options_parse_and_convert():
    o = parse_options(Opts, {"url": "u", "n": 4, "ratio": 1, "on": True, "names": ["a", "b"], "headers": {"X": "y"}, "maybe": None})
    assert o == Opts(url="u", n=4, ratio=1.0, on=True, names=("a", "b"), headers={"X": "y"})
    assert describe(Opts)[0] == ("url", "string", "(required)", "where")


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({}, "url", "required"),
        ({"url": "u", "zz": 1}, "zz", "unknown key (known: headers, maybe, n, names, on, ratio, url)"),
        ({"url": 5}, "url", "expected string, got int 5"),
        ({"url": "u", "n": True}, "n", "expected int, got bool True"),
        ({"url": "u", "ratio": "x"}, "ratio", "expected number"),
        ({"url": "u", "names": [1]}, "names", "expected string"),
        ({"url": "u", "headers": {"a": 1}}, "headers", "expected string"),
        ({"url": "u", "maybe": "x"}, "maybe", "expected int"),
        ({"url": "u", "n": 11}, "n", "must be at most 10"),
    ],
)
def test_option_errors_name_the_key(table, key, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_options(Opts, table)
    assert err.value.key == key


# ---- the provider contract -----------------------------------------------------------------------------


def test_complete_is_a_template_that_checks_what_it_returns():
    with Echo(None, name="e") as echo:
        assert echo.complete(request(), time.monotonic() + 5).content == "hello world"
        with pytest.raises(OperationTimeout):
            echo.complete(request(), time.monotonic() - 1)
    with pytest.raises(LlmUnavailable, match="closed"):
        echo.complete(request(), time.monotonic() + 5)
    echo.close()  # twice is fine

    class Liar(Provider):
        def _complete(self, request: ChatRequest, deadline: float) -> Any:
            return ChatResponse(content="", model="m", prompt_tokens=-1)

    class Wrong(Provider):
        def _complete(self, request: ChatRequest, deadline: float) -> Any:
            return {"content": "x"}

    for cls in (Liar, Wrong):
        with cls(None, name="x") as p, pytest.raises(UpstreamError):
            p.complete(request(), time.monotonic() + 5)


def test_the_default_prompt_bound_covers_bytes_overheads_and_images():
    echo = Echo(None, name="e")
    echo.image_tokens = 1000
    assert echo.max_prompt_tokens(request("héllo")) == 6 + MESSAGE_OVERHEAD + REPLY_OVERHEAD
    with_all = request("ab", system_instruction="sys", image=Image(b"x"))
    assert echo.max_prompt_tokens(with_all) == 5 + 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD + 1000
    echo.close()


def test_a_provider_never_closed_warns():
    def leak() -> None:
        Echo(None, name="leaky")
        gc.collect()

    with pytest.warns(ResourceWarning, match="leaky"):
        leak()


# ---- the scripted provider -------------------------------------------------------------------------------


def test_scripted_is_deterministic_and_counts_words():
    with ScriptedProvider(ScriptedOptions(), name="s") as p:
        r = p.complete(request("two words", system_instruction="be kind"), time.monotonic() + 5)
        assert r == ChatResponse(content="scripted reply to: two words", model="m", prompt_tokens=2 + 2 + 8, completion_tokens=5, finish_reason="stop")
        assert p.max_prompt_tokens(request("two words", system_instruction="be kind")) == r.prompt_tokens
        cut = p.complete(request("a b c d e", max_tokens=3), time.monotonic() + 5)
        assert (cut.content, cut.completion_tokens, cut.finish_reason) == ("scripted reply to:", 3, "length")


def test_scripted_rules_replies_errors_and_counts():
    rules = (
        {"match": "weather", "reply": "sunny"},
        {"match": "flaky", "error": "server_error", "times": 2},
        {"match": "busy", "error": "rate_limited", "retry_after": 1.5},
        {"match": "gone", "error": "unreachable"},
        {"match": "bad", "error": "bad_request"},
    )
    with ScriptedProvider(ScriptedOptions(rules=rules, completion_tokens=7), name="s") as p:
        assert p.complete(request("the weather?"), time.monotonic() + 5).content == "sunny sunny sunny sunny sunny sunny sunny"
        for _ in range(2):
            with pytest.raises(ServerError):
                p.complete(request("flaky"), time.monotonic() + 5)
        assert p.complete(request("flaky"), time.monotonic() + 5).completion_tokens == 7
        with pytest.raises(RateLimited) as busy:
            p.complete(request("busy"), time.monotonic() + 5)
        assert busy.value.retry_after == 1.5 and busy.value.details == {"status": 429, "retry_after": 1.5}
        with pytest.raises(UpstreamError) as gone:
            p.complete(request("gone"), time.monotonic() + 5)
        assert not isinstance(gone.value, ProviderError)
        with pytest.raises(ProviderError) as bad:
            p.complete(request("bad"), time.monotonic() + 5)
        assert bad.value.status == 400 and not bad.value.retryable


def test_scripted_latency_respects_the_deadline():
    with ScriptedProvider(ScriptedOptions(latency=5.0), name="slow") as p:
        started = time.monotonic()
        with pytest.raises(OperationTimeout):
            p.complete(request(), time.monotonic() + 0.2)
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (({"reply": "x"},), "needs match"),
        (({"match": "a"},), "exactly one of reply or error"),
        (({"match": "a", "reply": "x", "error": "server_error"},), "exactly one"),
        (({"match": "a", "error": "boom"},), "must be one of"),
        (({"match": "a", "error": "rate_limited", "times": 0},), "positive"),
        (({"match": "a", "reply": "x", "when": 1},), "unknown"),
    ],
)
def test_scripted_rules_are_checked_at_load(rules, message):
    with pytest.raises(OptionError, match=message):
        parse_options(ScriptedOptions, {"rules": [dict(r) for r in rules]})
