"""An idle kernel holds none of the optional subsystems' modules (docs/kernel-memory.md).

A real kernel boots with the test config and no optional table ([llm], [metrics] listen,
[fleet], devices, ...), serves an operator and one sandboxed agent (state, events, a spawn and a
kill), and stops. A ``sitecustomize`` on its ``PYTHONPATH`` (test-side only; the kernel's code
is unchanged) writes the kernel process's ``sys.modules`` when it exits, so modules imported
lazily on first use count too. Each name below costs the kernel memory (OpenSSL and urllib3
about 8 MiB, importlib.metadata about 4 MiB, the console's asyncio and rich several more) and
must be imported only where its section is configured or on first use.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import TEST_CONFIG, agent_script, read_report, requires_root

REPO = Path(__file__).resolve().parents[2]

#: Module names (and their submodules) an idle kernel must not import.
NOT_IN_AN_IDLE_KERNEL = (
    # the operator commands: `clove kernel` builds only its own parser
    "clove.cli.console",
    "clove.cli.top",
    "clove.cli.fleet",
    "clove.cli.hil",
    "clove.cli.mcp",
    "clove.cli.devices",
    "clove.cli.doctor",
    "clove.cli.replay",
    "clove.cli.postmortem",
    "rich",
    "asyncio",
    # the fleet link ([fleet] only), the egress proxy (its own process), Prometheus ([metrics] listen)
    "clove.fleet",
    "clove.kernel.services.fleet",
    "nats",
    "cryptography",
    "clove.egress",
    "clove.kernel.services.prometheus_exporter",
    "clove.kernel.services.prometheus_snapshot",
    "clove.kernel.services.prometheus_http",
    "prometheus_client",
    # the LLM endpoint and providers ([llm] only), HTTP (an agent's first http call)
    "clove.kernel.services.llmhttp",
    "h11",
    "clove.llm.openai",
    "clove.llm.scripted",
    "openai",
    "urllib3",
    "ssl",
    "http.client",
    "email",
    # plugin discovery (devices or LLM plugins configured)
    "importlib.metadata",
    # drivers, benches and plots
    "clove_driver_serial",
    "clove_driver_can",
    "clove_driver_gpio",
    "clove_driver_exchange",
    "can",
    "serial",
    "gpiod",
    "hil",
    "matplotlib",
    "numpy",
)

#: Written as sitecustomize.py; the variable is popped so the kernel's children never write.
SITECUSTOMIZE = """
import os
_out = os.environ.pop("CLOVE_TEST_MODULES_OUT", None)
if _out:
    import atexit, sys

    def _write_modules():
        with open(_out, "w") as f:
            f.write("\\n".join(sorted(sys.modules)))

    atexit.register(_write_modules)
"""


def forbidden_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == name or m.startswith(f"{name}.") for name in NOT_IN_AN_IDLE_KERNEL))


def mapped_files(pid: int) -> set[str]:
    return {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/" in line}


@requires_root
def test_an_idle_kernel_imports_no_optional_subsystem(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "modules.txt"
    pythonpath = os.pathsep.join(p for p in (str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    config = TEST_CONFIG.format(uid_base=random.randrange(300_000, 4_000_000, 1000), sandbox="")
    kernel = KernelProcess(config, env={"PYTHONPATH": pythonpath, "CLOVE_TEST_MODULES_OUT": str(out)})
    try:
        kernel.start()
        with kernel.client() as client:
            client.noop("idle")
            client.store("idle.key", {"v": 1})
            assert client.fetch("idle.key")["value"] == {"v": 1}
            client.kernel_info()
            ops = '[["store", "k", "v", "agent"], ["fetch", "k"], ["subscribe"]]'
            reply = client.spawn("idle-probe", agent_script("state_runner.py"), args=[ops, "stay"])
            assert reply["success"], reply
            report = read_report(kernel, "idle-probe")
            assert report["results"][1]["value"] == "v"
            # While it runs: no OpenSSL TLS module in the kernel's address space.
            maps = mapped_files(kernel.pid)
            assert not [f for f in maps if "/_ssl." in f or "/libssl.so" in f], sorted(maps)
            assert client.kill(name="idle-probe")
        assert kernel.stop() == 0, kernel.log()[-4000:]
        poll_for(out.exists, 10, message="the kernel's module list")
        modules = set(out.read_text().split())
    finally:
        kernel.cleanup()
    assert "clove.kernel.kernel" in modules  # the list is the kernel's, not a child's
    assert forbidden_in(modules) == []


def test_the_forbidden_list_catches_a_regression() -> None:
    """The matcher itself: a submodule of a listed name counts, a longer sibling name does not."""
    assert forbidden_in({"h11._connection", "sslib", "clove.cli.render", "rich"}) == ["h11._connection", "rich"]


@pytest.mark.parametrize("name", ["clove.cli.console", "urllib3", "h11", "importlib.metadata"])
def test_listed_modules_exist(name: str) -> None:
    """A renamed module would make its entry silently useless: each listed clove module and
    installed library must still be importable by that name (spot checks)."""
    import importlib.util

    assert importlib.util.find_spec(name) is not None
