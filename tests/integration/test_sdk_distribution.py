"""``pip install clove-sdk``: the SDK is its own distribution, and an agent whose environment holds
only it runs sandboxed under a kernel whose own venv is elsewhere.

Both wheels are built (isolated builds, as a user's are), ``clove-sdk`` alone goes into a fresh
venv, and a real kernel from the project venv runs an agent with ``interpreter`` set to that
venv's python. The wire protocol's version is checked from both ends: the kernel refuses an
envelope of another version naming the SDK release it needs, and the SDK refuses a reply of
another version at once (not after a timeout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zipfile
from email.parser import Parser
from pathlib import Path

import msgpack
import pytest
import zmq

import clove.errors
import clove.wire
import clove_sdk
from clove.kernel.supervision.launchspec import agent_interpreter_paths
from clove.testing.kernel import KernelProcess, poll_for
from clove.testing.sdkvenv import CHECKOUT, BuildUnavailable, SdkDist, cached_dist, default_cache
from clove_sdk import CloveClient, wire
from clove_sdk.errors import VersionMismatch
from clove_sdk.version import PROTOCOL_VERSION, SDK_REQUIREMENT
from tests.conftest import requires_root

pytestmark = pytest.mark.integration

AGENT = """\
import json, sys
import clove_sdk
from clove_sdk import CloveClient
try:
    import clove  # must not be there: the agent's venv holds only clove-sdk
    has_clove = True
except ImportError:
    has_clove = False
with CloveClient(timeout=20) as c:
    hello = c.hello()
    echoed = c.call("echo", msg="through the kernel")
    c.call("noop", msg="second syscall")
print("REPORT " + json.dumps({
    "exe": sys.executable, "prefix": sys.prefix, "sdk": clove_sdk.__version__, "sdk_file": clove_sdk.__file__,
    "has_clove": has_clove, "agent_id": hello["agent_id"], "protocol": hello["protocol"], "echoed": echoed,
}), flush=True)
"""


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> SdkDist:
    """Both wheels and an SDK-only venv: built from a snapshot of the checkout, or taken from the
    cache (``$CLOVE_SDK_DIST_CACHE``, default ``~/.cache/clove-sdk-dist``; empty: no cache) when
    it holds them for these very sources."""
    try:
        return cached_dist(default_cache(), tmp_path_factory.mktemp("dist"))
    except BuildUnavailable as err:
        pytest.skip(f"no package index to fetch the build backend or pyzmq and msgpack from: {err}")


@pytest.fixture(scope="module")
def wheels(dist: SdkDist) -> dict[str, Path]:
    return {"sdk": dist.sdk_wheel, "clove": dist.clove_wheel}


@pytest.fixture(scope="module")
def agent_python(dist: SdkDist) -> Path:
    return dist.python


def metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]], str]:
    """The wheel's file names, its METADATA headers (each a list) and its entry_points.txt."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode() if f"{dist_info}/entry_points.txt" in names else ""
    headers: dict[str, list[str]] = {}
    for key, value in message.items():
        headers.setdefault(key, []).append(value)
    return names, headers, entry_points


def run_in(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd="/")


# ---- the two wheels --------------------------------------------------------------------------


def test_sdk_wheel_holds_exactly_the_package(wheels: dict[str, Path]) -> None:
    names, headers, entry_points = metadata(wheels["sdk"])
    assert wheels["sdk"].name == f"clove_sdk-{clove_sdk.__version__}-py3-none-any.whl"
    package = {n for n in names if not n.startswith("clove_sdk-")}
    # Every module and subpackage of the source directory, and nothing else (not its pyproject).
    sources = {
        "clove_sdk/" + str(p.relative_to(CHECKOUT / "clove_sdk"))
        for p in (CHECKOUT / "clove_sdk").rglob("*.py")
        if not {"build", "__pycache__"} & set(p.relative_to(CHECKOUT / "clove_sdk").parts)
    }
    assert package == sources | {"clove_sdk/py.typed"}
    assert headers["Name"] == ["clove-sdk"]
    requires = sorted(headers["Requires-Dist"])
    assert [r for r in requires if "extra ==" not in r] == ["msgpack>=1.0", "pyzmq>=25"]
    assert sorted(headers["Provides-Extra"]) == ["can", "mcp", "openai", "serial"]
    assert "clove = clove_sdk.can_interface:CloveBus" in entry_points


def test_sdk_version_is_the_protocol_version(wheels: dict[str, Path]) -> None:
    _, headers, _ = metadata(wheels["sdk"])
    assert headers["Version"] == [clove_sdk.__version__]
    assert int(clove_sdk.__version__.split(".")[0]) == PROTOCOL_VERSION == clove_sdk.PROTOCOL_VERSION
    assert f"CLOVE{PROTOCOL_VERSION}".encode() == wire.PROTOCOL


def test_clove_wheel_leaves_the_sdk_out_and_depends_on_it(wheels: dict[str, Path]) -> None:
    names, headers, entry_points = metadata(wheels["clove"])
    assert not [n for n in names if n.startswith("clove_sdk/")]
    assert "clove/kernel/main.py" in names
    (sdk_requirement,) = [r for r in headers["Requires-Dist"] if r.startswith("clove-sdk")]
    # The kernel accepts exactly the SDK releases that speak its protocol.
    assert set(sdk_requirement.removeprefix("clove-sdk").split(",")) == set(
        SDK_REQUIREMENT.removeprefix("clove-sdk").split(",")
    )
    assert "clove_sdk.can_interface" not in entry_points, "the SDK's can.interface entry point belongs to clove-sdk"


def test_the_kernel_and_the_sdk_share_one_definition() -> None:
    assert clove.errors.CloveError is clove_sdk.errors.CloveError
    assert clove.wire.decode_request is wire.decode_request
    assert clove.errors.__all__ == clove_sdk.errors.__all__


# ---- an agent venv with only clove-sdk -------------------------------------------------------


def test_agent_venv_has_the_sdk_and_not_clove(agent_python: Path) -> None:
    sdk = run_in(agent_python, "import clove_sdk, clove_sdk.wire, clove_sdk.errors; print(clove_sdk.__version__)")
    assert sdk.returncode == 0, sdk.stderr
    assert sdk.stdout.strip() == clove_sdk.__version__
    kernel = run_in(agent_python, "import clove")
    assert kernel.returncode != 0
    assert "ModuleNotFoundError: No module named 'clove'" in kernel.stderr
    installed = run_in(
        agent_python, "import importlib.metadata as m, json; print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"
    )
    assert json.loads(installed.stdout) == ["clove-sdk", "msgpack", "pyzmq"], "the SDK and its two dependencies, nothing else"


def test_a_venv_interpreter_brings_its_venv_into_the_sandbox(tmp_path: Path) -> None:
    base = Path(os.path.realpath(sys.executable))
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(base)
    plain = agent_interpreter_paths(str(venv / "bin" / "python"))
    (venv / "pyvenv.cfg").write_text(f"home = {base.parent}\n")
    assert plain == [str(base.parent.parent)], "not a venv: only the installation it resolves to"
    assert agent_interpreter_paths(str(venv / "bin" / "python")) == [str(base.parent.parent), str(venv)]


@requires_root
def test_sandboxed_agent_runs_from_an_sdk_only_venv(kernel: KernelProcess, agent_python: Path, tmp_path: Path) -> None:
    script = tmp_path / "agent" / "sdk_agent.py"  # tmp_path itself is 0700: the agent's uid could not enter it
    script.parent.mkdir(mode=0o755)
    script.write_text(AGENT)
    with kernel.client() as c:
        spawned = c.spawn("sdk-only", str(script), interpreter=str(agent_python))
    assert spawned["success"], spawned
    assert {"mount", "pid", "net"} <= set(spawned["isolation"]["namespaces"]), spawned["isolation"]

    def finished() -> dict | None:
        (row,) = [a for a in kernel.call("agent.list")["agents"] if a["name"] == "sdk-only"]
        return row if row["state"] not in ("starting", "running") else None

    row = poll_for(finished, 60, message="the agent to exit")
    logs = kernel.call("agent.logs", name="sdk-only", offset=0, max_bytes=1 << 20)["data"].decode()
    assert (row["exit_reason"], row["exit_code"]) == ("exited", 0), logs
    (line,) = [ln for ln in logs.splitlines() if ln.startswith("REPORT ")]
    report = json.loads(line.removeprefix("REPORT "))
    venv = str(agent_python.parent.parent)
    sdk_file = report.pop("sdk_file")
    assert sdk_file.startswith(f"{venv}/lib/") and sdk_file.endswith("/site-packages/clove_sdk/__init__.py")
    assert "through the kernel" in json.dumps(report.pop("echoed"))
    assert report == {
        "exe": str(agent_python), "prefix": venv, "sdk": clove_sdk.__version__, "has_clove": False,
        "agent_id": spawned["id"], "protocol": wire.PROTOCOL.decode(),
    }  # fmt: skip


# ---- the protocol version, from both ends ----------------------------------------------------


def test_kernel_refuses_another_protocol_version_naming_the_sdk(kernel: KernelProcess) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    try:
        sock.connect(f"ipc://{kernel.socket}")
        sock.send_multipart([b"CLOVE2", wire.KIND_REQUEST, msgpack.packb({"id": 1, "call": "hello", "body": {}})])
        frames = sock.recv_multipart()
    finally:
        sock.close()
    assert frames[:2] == [wire.PROTOCOL, wire.KIND_REPLY]
    reply = wire.decode_reply(frames)
    assert isinstance(reply.error, VersionMismatch)
    assert reply.error.details == {"got": "CLOVE2", "supported": "CLOVE1", "sdk": SDK_REQUIREMENT}
    assert SDK_REQUIREMENT in reply.error.message
    hello = kernel.call("hello")  # the kernel carries on, and says which SDK releases it accepts
    assert (hello["protocol"], hello["sdk"]) == ("CLOVE1", SDK_REQUIREMENT)


def test_sdk_refuses_a_reply_of_another_version_at_once(tmp_path: Path) -> None:
    """A kernel that speaks CLOVE2 (a stand-in ROUTER in a thread): the client raises
    VersionMismatch naming both versions on the first reply, not KernelUnavailable after its
    timeout."""
    endpoint = f"ipc://{tmp_path}/future.sock"
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.RCVTIMEO, 30_000)
    router.bind(endpoint)

    def answer_in_clove2() -> None:
        for _ in range(2):  # hello, then the client's session.close
            routing, _, _, payload = router.recv_multipart()
            reply = {"id": msgpack.unpackb(payload)["id"], "ok": True, "result": None}
            router.send_multipart([routing, b"CLOVE2", wire.KIND_REPLY, msgpack.packb(reply)])

    stand_in = threading.Thread(target=answer_in_clove2)
    stand_in.start()
    try:
        with CloveClient(endpoint, timeout=30) as client, pytest.raises(VersionMismatch) as info:
            client.call("hello")
    finally:
        stand_in.join()
        router.close()
    assert info.value.details == {"got": "CLOVE2", "supported": "CLOVE1", "sdk": clove_sdk.__version__}
    assert "the kernel speaks CLOVE2" in info.value.message and f"clove-sdk {clove_sdk.__version__}" in info.value.message
