"""Run a bench: start the simulators, wire them into the deployment, boot a kernel with it,
play the fault plan on schedule, then check the assertions and write a report.

``run_bench(bench)`` returns a :class:`BenchReport`; ``clove hil run FILE`` prints it (``--json``
for CI) and exits 0 only if every assertion passed. Nothing outlives a run: the kernel (with its
agents, driver hosts and cgroups), the simulators, their threads, ptys and sockets are stopped
and removed whatever happens.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clove.config.model import SandboxSection, SupervisorSection
from clove.errors import CloveError, ConfigError
from clove.kernel.audit.files import read_journal
from clove.kernel.audit.verify import verify_journal
from clove.testing.kernel import KernelProcess, poll_for
from clove_sdk import CloveClient
from hil.assertions import Outcome, RunRecord, check
from hil.bench import Bench, FaultSpec
from hil.report.sources import REPORT_STATE_KEYS
from hil.sims import Simulator, build_simulators

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(slots=True)
class BenchReport:
    bench: str
    passed: bool
    outcomes: list[Outcome]
    timeline: list[dict[str, Any]]
    latency: dict[str, Any]
    summary: dict[str, Any]
    wall_s: float
    run_dir: str = ""
    errors: list[str] = field(default_factory=list)
    kernel_pid: int | None = None  # to check nothing of it outlived the run
    time_scale: float = 1.0  # the bench's times and limits were multiplied by it
    record: RunRecord | None = None  # what the run left, for the HTML report's plots (hil/report)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "passed": self.passed,
            "assertions": [o.to_dict() for o in self.outcomes],
            "timeline": self.timeline,
            "latency": self.latency,
            "summary": self.summary,
            "wall_s": round(self.wall_s, 2),
            "time_scale": self.time_scale,
            "errors": self.errors,
        }


#: Called about four times a second while the bench runs: (seconds into the run, kernel views).
LiveView = Callable[[float, dict[str, Any]], None]

#: The kernel's own times for its children, with their defaults, stretched with the bench by
#: its time_scale: what it waits for (a sandbox or the zygote coming up, a tree's SIGTERM grace, a
#: host's reply and heartbeat) and what it paces restarts by (backoffs, the run that counts as
#: stable, an agent's restart window). Rates, quotas and counts stay as written.
KERNEL_TIMES = {
    "sandbox": {"start_timeout": SandboxSection().start_timeout, "kill_grace": SandboxSection().kill_grace},
    "supervisor": {"backoff_initial": SupervisorSection().backoff_initial, "backoff_max": SupervisorSection().backoff_max, "stable_after": SupervisorSection().stable_after},
}
#: A device's, as clove.config.devices defaults them (heartbeat_timeout's follows call_timeout).
DEVICE_TIMES = {"call_timeout": 2.0, "backoff_initial": 0.2, "backoff_max": 10.0}
#: An agent's with a restart policy, as clove.config.loader defaults it.
AGENT_TIMES = {"restart_window": 300.0}


def wire_deployment(bench: Bench, sims: dict[str, Simulator], run_dir: Path) -> Path:
    """The deployment config with each wired device pointed at its simulator, and relative
    paths made absolute (the copy lives in the run dir). Written as TOML; returns its path."""
    raw = tomllib.loads(bench.deployment.read_text())
    base = bench.deployment.parent
    devices = raw.get("devices", {})
    for device, sim in bench.devices.items():
        if device not in devices:
            raise ConfigError(f"{bench.path}: [sims.{sim}].wire: the deployment {bench.deployment} has no device {device!r}")
        devices[device].update(sims[sim].wiring())
    for agent in raw.get("agents", {}).values():
        for key in ("script", "working_dir", "interpreter"):
            value = agent.get(key)
            if isinstance(value, str) and (key != "interpreter" or "/" in value):
                agent[key] = str((base / value).resolve())
    raw.setdefault("kernel", {}).pop("socket", None)
    raw["kernel"].pop("state_dir", None)
    if bench.time_scale != 1:
        _stretch_kernel_times(raw, bench.time_scale)
    path = run_dir / "deployment.toml"
    path.write_text(_toml(raw))
    return path


def _stretch_kernel_times(raw: dict[str, Any], scale: float) -> None:
    """On a machine ``scale`` times slower the kernel's times for its children stretch as the
    bench's do (:data:`KERNEL_TIMES`)."""

    def stretch(table: dict[str, Any], defaults: dict[str, float]) -> None:
        for key, default in defaults.items():
            table[key] = float(table.get(key, default)) * scale

    for section, defaults in KERNEL_TIMES.items():
        stretch(raw.setdefault(section, {}), defaults)
    for device in raw.get("devices", {}).values():
        beat = float(device.get("heartbeat_timeout", max(5.0, float(device.get("call_timeout", DEVICE_TIMES["call_timeout"])) + 1.0)))
        stretch(device, DEVICE_TIMES)
        device["heartbeat_timeout"] = beat * scale
    for agent in raw.get("agents", {}).values():
        if "restart" in agent:
            stretch(agent, AGENT_TIMES)


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for config tables (scalars, arrays, inline tables, nested tables)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict) and not _inline(value):
            tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        out += f"\n[{name}]\n" + _toml(value, name)
    return out


def _inline(table: dict[str, Any]) -> bool:
    return all(not isinstance(v, dict) or _inline(v) for v in table.values()) and any(True for _ in table) and len(table) <= 8 and not any(isinstance(v, dict) for v in table.values())


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else '"' + key.replace('"', '\\"') + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def run_bench(bench: Bench, *, live: LiveView | None = None, keep_dir: bool = False, kernel_cgroup: str | os.PathLike[str] | None = None) -> BenchReport:
    """:param kernel_cgroup: start the kernel in this (v2) cgroup, as a service manager would: under
        cgroup v2 it needs one of its own, which the caller's cgroup is not."""
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="clvhil"))
    os.chmod(run_dir, 0o755)
    sims = build_simulators(bench, run_dir)
    record = RunRecord()
    timeline: list[dict[str, Any]] = []
    errors: list[str] = []
    kernel: KernelProcess | None = None
    kernel_pid: int | None = None
    try:
        for sim in sims.values():
            sim.start()
        config = wire_deployment(bench, sims, run_dir)
        kernel = KernelProcess(config_file=str(config), base_dir=str(run_dir), cgroup=kernel_cgroup)
        kernel.start(timeout=20.0 * bench.time_scale)
        kernel_pid = kernel.pid
        _wait_ready(kernel, bench)
        with _client(kernel, bench) as c:  # what start-up cost is not the run's: its clock starts now
            record.device_restarts_at_start = {d["name"]: int(d.get("restarts", 0)) for d in c.list_devices()}
        t0 = record.t0 = time.time()
        for sim in sims.values():
            sim.mark_start(t0)
        _play(bench, sims, kernel, t0, record, timeline, live)
        _collect(bench, kernel, sims, record)
    except (CloveError, TimeoutError, OSError) as err:
        errors.append(f"{type(err).__name__}: {getattr(err, 'message', err)}")
        if kernel is not None:
            errors.append("kernel log tail:\n" + kernel.log()[-3000:])
    finally:
        if kernel is not None:
            kernel.stop(timeout=20.0 * bench.time_scale)
            _verify_journal(kernel, record)
        for sim in reversed(list(sims.values())):
            sim.stop()
        if kernel is not None:
            kernel.cleanup()
    outcomes = [check(spec, record) for spec in bench.assertions] if not errors else []
    report = BenchReport(
        bench=bench.name,
        passed=not errors and all(o.passed for o in outcomes),
        outcomes=outcomes,
        timeline=timeline,
        latency=_latency(record),
        summary=_summary(record),
        wall_s=time.monotonic() - started,
        run_dir=str(run_dir) if keep_dir else "",
        errors=errors,
        kernel_pid=kernel_pid,
        record=record,
        time_scale=bench.time_scale,
    )
    if not keep_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def _client(kernel: KernelProcess, bench: Bench) -> CloveClient:
    """A client whose wait for a reply stretches with the bench (a starved kernel answers late)."""
    return kernel.client(timeout=10.0 * bench.time_scale)


def _wait_ready(kernel: KernelProcess, bench: Bench) -> None:
    def up(agent: dict[str, Any]) -> bool:
        # Running, or between runs under its restart policy: on a slow machine a leak spends most
        # of its time in backoff, and waiting for a moment when it runs too could take for ever.
        return agent["state"] == "running" or (agent["state"] in ("backoff", "starting") and int(agent.get("restarts", 0)) > 0)

    def ready() -> bool:
        with _client(kernel, bench) as c:
            devices = c.list_devices()
            agents = c.list_agents()
        return all(d["state"] == "ready" for d in devices) and all(up(a) for a in agents)

    poll_for(ready, bench.ready_timeout, interval=0.05, message="every device ready and every agent up (running or restarting by policy)")


def _play(bench: Bench, sims: dict[str, Simulator], kernel: KernelProcess, t0: float, record: RunRecord, timeline: list[dict[str, Any]], live: LiveView | None) -> None:
    pending = list(bench.faults)
    next_view = next_sample = 0.0
    with _client(kernel, bench) as c:
        while True:
            now = time.time()
            elapsed = now - t0
            while pending and pending[0].at <= elapsed:
                fault = pending.pop(0)
                effect = _apply(fault, sims, c)
                record.faults[fault.name] = effect
                timeline.append({"t": round(effect - t0, 3), "fault": fault.name, "kind": fault.kind, **{k: v for k, v in fault.options.items() if v is not None}})
            for sim in sims.values():
                for note in sim.expired(now):
                    timeline.append({"t": round(time.time() - t0, 3), "fault": note, "kind": "ended"})
            if now >= next_sample:  # the report's series: 10 Hz is smooth enough for a plot
                for sim in sims.values():
                    sim.sample(now)
                next_sample = now + 0.1
            if elapsed >= bench.duration:
                return
            if live is not None and now >= next_view:
                live(elapsed, {"devices": c.list_devices(), "agents": c.list_agents(), "interlocks": c.call("interlock.list")["interlocks"], "timeline": timeline})
                next_view = now + 0.25
            wait = min(0.05, pending[0].at - elapsed if pending else 0.05, bench.duration - elapsed)
            time.sleep(max(0.001, wait))  # the schedule's own clock: faults land within ~1 ms of their time


def _apply(fault: FaultSpec, sims: dict[str, Simulator], client: Any) -> float:
    """Apply one fault; the time it took effect (the simulator's own timestamp when it has one)."""
    if fault.sim is not None:
        return sims[fault.sim].apply(fault)
    now = time.time()
    if fault.kind == "kill_driver_host":
        client.call("device.restart", device=fault.options["device"])
    elif fault.kind == "kill_agent":
        row = next((a for a in client.list_agents() if a["name"] == fault.options["agent"]), None)
        if row is not None and row.get("pid"):
            os.kill(int(row["pid"]), 9)
    elif fault.kind == "release_interlock":
        client.call("interlock.release", name=fault.options["interlock"])
    elif fault.kind == "trading_state":
        client.call("device.call", device=fault.options["device"], op="set_state", args={"state": fault.options["state"], "reason": "bench fault plan"})
    return now


def _collect(bench: Bench, kernel: KernelProcess, sims: dict[str, Simulator], record: RunRecord) -> None:
    with _client(kernel, bench) as c:
        record.agents = c.list_agents()
        record.devices = c.list_devices()
        record.interlocks = c.call("interlock.list")["interlocks"]
        for spec in bench.assertions:
            if spec.kind == "state_key":
                scope, key = spec.options["scope"], spec.options["key"]
                record.state[f"{scope}:{key}"] = c.fetch(key, scope=scope).get("exists", False)
        for scope, key in REPORT_STATE_KEYS:
            record.state_values[f"{scope}:{key}"] = c.fetch(key, scope=scope).get("value")
        for agent in record.agents:
            record.logs[agent["name"]] = c.call("agent.logs", name=agent["name"], offset=0, max_bytes=1 << 20)["data"].decode(errors="replace")
    for sim in sims.values():
        sim.collect(record)


def _verify_journal(kernel: KernelProcess, record: RunRecord) -> None:
    path = Path(kernel.state_dir) / "journal.jsonl"
    try:
        result = verify_journal(path)
        record.journal = list(read_journal(path))
    except OSError as err:
        record.journal_problem = f"cannot read {path}: {err}"
        return
    record.journal_ok = result.ok
    record.journal_problem = result.reason


def _latency(record: RunRecord) -> dict[str, Any]:
    calls = sorted(int(r["duration_us"]) for r in record.journal if r.get("syscall") == "device.call" and r.get("code") == "ok" and r.get("duration_us") is not None)
    interlocks = [
        {"name": r["details"].get("name"), "actions": {a["action"]: a.get("latency_ms") for a in r["details"].get("actions", [])}}
        for r in record.journal
        if r.get("event_type") == "interlock.completed"
    ]

    def pct(p: float) -> float | None:
        return round(calls[min(len(calls) - 1, int(p * len(calls)))] / 1000, 3) if calls else None

    return {"device_call_ms": {"count": len(calls), "p50": pct(0.5), "p99": pct(0.99), "max": calls[-1] / 1000 if calls else None}, "interlocks": interlocks}


def _summary(record: RunRecord) -> dict[str, Any]:
    denied = [r for r in record.journal if r.get("decision") == "denied"]
    return {
        "denied": len(denied),
        "denied_by_agent": {name: sum(1 for r in denied if r.get("agent_name") == name) for name in sorted({str(r.get("agent_name")) for r in denied})},
        "restarts": {a["name"]: a.get("restarts", 0) for a in record.agents},
        "oom_kills": sum(1 for r in record.journal if r.get("event_type") == "agent.exited" and (r.get("details") or {}).get("reason") == "oom_killed"),
        "throttled_periods": {a["name"]: (a.get("stats") or {}).get("nr_throttled", 0) for a in record.agents if (a.get("stats") or {}).get("nr_throttled")},
        "device_restarts": {d["name"]: d.get("restarts", 0) for d in record.devices},
        "journal_records": len(record.journal),
        "journal_verified": record.journal_ok,
    }
