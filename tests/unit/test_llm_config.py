"""The ``[llm]`` table: parsed into frozen dataclasses, each mistake named by file, table and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from clove.config import LlmAgentSettings, load_config
from clove.errors import ConfigError
from clove.llm.openai import OpenAIOptions
from clove.llm.scripted import ScriptedOptions

FULL = """
[llm]
plugins = ["openai", "scripted"]
default_provider = "local"
record = true
max_timeout = 300
max_retries = 2
retry_backoff = 0.25
retry_backoff_max = 8
max_tokens = 512
max_queue = 64
period = 3600
warn_at = 0.9

[llm.defaults]
weight = 1
budget = 100000
period_budget = 20000
rpm = 30
tpm = 40000

[llm.agents.planner]
weight = 3
budget = 500000

[llm.providers.local]
kind = "openai"
model = "llama3"
models = ["qwen2"]
concurrency = 2
rpm = 600
tpm = 100000
timeout = 90
base_url = "http://127.0.0.1:11434/v1"
max_tokens_field = "max_tokens"

[llm.providers.demo]
kind = "scripted"
model = "scripted-1"
latency = 0.1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kernel.toml"
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    return err.value.message


def test_no_llm_table_means_no_gateway(tmp_path):
    assert load_config(write(tmp_path, "[kernel]\nlog_level = 'info'\n")).llm is None
    assert load_config(None).llm is None


def test_a_full_llm_table(tmp_path):
    llm = load_config(write(tmp_path, FULL)).llm
    assert llm is not None
    assert (llm.plugins, llm.default_provider, llm.record, llm.max_timeout, llm.max_retries) == (("openai", "scripted"), "local", True, 300.0, 2)
    assert (llm.retry_backoff, llm.retry_backoff_max, llm.max_tokens, llm.max_queue, llm.period, llm.warn_at) == (0.25, 8.0, 512, 64, 3600.0, 0.9)
    assert llm.defaults == LlmAgentSettings(weight=1.0, budget=100000, period_budget=20000, rpm=30, tpm=40000)
    # an agent's table overrides the defaults key by key
    assert llm.agent("planner") == LlmAgentSettings(weight=3.0, budget=500000, period_budget=20000, rpm=30, tpm=40000)
    assert llm.agent("anyone") is llm.defaults
    local, demo = llm.providers
    assert (local.name, local.kind, local.model, local.models, local.concurrency, local.rpm, local.tpm, local.timeout) == (
        "local", "openai", "llama3", ("qwen2",), 2, 600, 100000, 90.0
    )
    assert local.options == OpenAIOptions(base_url="http://127.0.0.1:11434/v1")
    assert demo.options == ScriptedOptions(latency=0.1) and demo.concurrency == 4


def test_the_first_provider_is_the_default(tmp_path):
    llm = load_config(write(tmp_path, '[llm]\nplugins = ["scripted"]\n[llm.providers.only]\nkind = "scripted"\nmodel = "s"\n')).llm
    assert llm is not None and llm.default_provider == "only" and llm.defaults == LlmAgentSettings()


MINIMAL = '[llm]\nplugins = ["scripted"]\n[llm.providers.p]\nkind = "scripted"\nmodel = "s"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[llm]\nplugins = ["scripted"]\n', "[llm].providers: at least one [llm.providers.NAME] table is needed"),
        ('[llm]\nplugins = ["nosuch"]\n[llm.providers.p]\nkind = "x"\nmodel = "m"\n',
         "[llm].plugins: LLM provider plugin 'nosuch' is not installed"),
        ('[llm]\nplugins = "scripted"\n', "[llm].plugins: expected array"),
        ('[llm]\n[llm.providers.p]\nkind = "scripted"\nmodel = "m"\n',
         "[llm.providers.p].kind: 'scripted' is not registered by an allowlisted plugin ([llm].plugins; registered: none)"),
        ('[llm]\nplugins = ["scripted"]\n[llm.providers.p]\nmodel = "m"\n', "[llm.providers.p].kind: required"),
        ('[llm]\nplugins = ["scripted"]\n[llm.providers.p]\nkind = "scripted"\n', "[llm.providers.p].model: required"),
        (MINIMAL + "concurrency = 0\n", "[llm.providers.p].concurrency: must be positive, got 0"),
        (MINIMAL + "latency = 'slow'\n", "[llm.providers.p].latency: expected number, got string 'slow'"),
        (MINIMAL + "base_url = 'http://x'\n", "[llm.providers.p].base_url: unknown key (known: completion_tokens, image_tokens"),
        (MINIMAL + "models = [1]\n", "[llm.providers.p].models: expected an array of model names"),
        (MINIMAL + "[llm.providers.'bad name']\nkind = 'scripted'\nmodel = 's'\n", "[llm.providers.bad name]: provider names are 1-63"),
        (MINIMAL.replace("[llm]\n", "[llm]\ndefault_provider = 'q'\n"), "[llm].default_provider: no provider named 'q' (providers: p)"),
        (MINIMAL.replace("[llm]\n", "[llm]\nwarn_at = 1.5\n"), "[llm].warn_at: a fraction of the budget, in (0, 1]"),
        (MINIMAL.replace("[llm]\n", "[llm]\nretries = 1\n"), "[llm].retries: unknown key (known: "),
        (MINIMAL + "[llm.defaults]\nbudget = -1\n", "[llm.defaults].budget: must be >= 0, got -1"),
        (MINIMAL + "[llm.defaults]\nweight = 0\n", "[llm.defaults].weight: must be positive, got 0.0"),
        (MINIMAL + "[llm.agents.x]\nbudgett = 5\n", "[llm.agents.x].budgett: unknown key (known: budget, period_budget, rpm, tpm, weight)"),
        (MINIMAL + "[llm.agents.x]\nrpm = 1.5\n", "[llm.agents.x].rpm: expected int, got float 1.5"),
    ],
)
def test_mistakes_name_file_table_and_key(tmp_path, text, message):
    got = error(tmp_path, text)
    assert got.startswith(str(tmp_path / "kernel.toml") + ": ")
    assert message in got, got


def test_llm_is_a_known_table(tmp_path):
    message = error(tmp_path, "[llms]\n")
    assert "[llms]: unknown table (known: " in message
    known = message.split("(known: ")[1].rstrip(")").split(", ")
    assert "llm" in known and known == sorted(known)
