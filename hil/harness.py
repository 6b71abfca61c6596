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

from clove.errors import CloveError, ConfigError
from clove.kernel.audit.files import read_journal
from clove.kernel.audit.verify import verify_journal
from clove.testing.kernel import KernelProcess, poll_for
from hil.assertions import Outcome, RunRecord, check
from hil.bench import Bench, FaultSpec
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "passed": self.passed,
            "assertions": [o.to_dict() for o in self.outcomes],
            "timeline": self.timeline,
            "latency": self.latency,
            "summary": self.summary,
            "wall_s": round(self.wall_s, 2),
            "errors": self.errors,
        }


#: Called about four times a second while the bench runs: (seconds into the run, kernel views).
LiveView = Callable[[float, dict[str, Any]], None]


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
    path = run_dir / "deployment.toml"
    path.write_text(_toml(raw))
    return path


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


def run_bench(bench: Bench, *, live: LiveView | None = None, keep_dir: bool = False) -> BenchReport:
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
        kernel = KernelProcess(config_file=str(config), base_dir=str(run_dir))
        kernel.start()
        kernel_pid = kernel.pid
        _wait_ready(kernel, bench)
        t0 = time.time()
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
            kernel.stop()
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
    )
    if not keep_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def _wait_ready(kernel: KernelProcess, bench: Bench) -> None:
    def ready() -> bool:
        with kernel.client() as c:
            devices = c.list_devices()
            agents = c.list_agents()
        return all(d["state"] == "ready" for d in devices) and all(a["state"] == "running" for a in agents)

    poll_for(ready, bench.ready_timeout, interval=0.05, message="every device ready and every agent running")


def _play(bench: Bench, sims: dict[str, Simulator], kernel: KernelProcess, t0: float, record: RunRecord, timeline: list[dict[str, Any]], live: LiveView | None) -> None:
    pending = list(bench.faults)
    next_view = 0.0
    with kernel.client() as c:
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
    with kernel.client() as c:
        record.agents = c.list_agents()
        record.devices = c.list_devices()
        record.interlocks = c.call("interlock.list")["interlocks"]
        for spec in bench.assertions:
            if spec.kind == "state_key":
                scope, key = spec.options["scope"], spec.options["key"]
                record.state[f"{scope}:{key}"] = c.fetch(key, scope=scope).get("exists", False)
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
