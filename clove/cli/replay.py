"""``clove replay`` and ``clove record``: deterministic replay of a recorded agent, and the
recording switch of a running kernel (docs/recording.md).

``clove replay RECORDING --agent NAME`` starts a private kernel of its own (own socket, state dir
and uid range, no devices, no LLM, no network for the agent), replays the agent there and
reports: exit status 0 when the replay ran to the end with no divergence, 1 otherwise. With
``--socket`` the replay runs inside that running kernel instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from clove.cli import render
from clove.errors import CloveError, KernelUnavailable
from clove.kernel.services.recording.format import load_entries, select_agents

POLL_S = 0.05
PRIVATE_KERNEL = """[kernel]
log_level = "warning"
[sandbox]
uid_base = {uid_base}
"""


def _env_pairs(items: list[str] | None, error: type[Exception]) -> dict[str, str]:
    env = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise error(f"replay: --env expects KEY=VALUE, got {item!r}")
        env[key] = value
    return env


@contextmanager
def _private_kernel(timeout: float) -> Iterator[Any]:
    """A kernel for this replay only: nothing configured, its own uid range, removed after."""
    from clove.testing.kernel import KernelProcess  # the private-paths kernel runner

    kernel = KernelProcess(PRIVATE_KERNEL.format(uid_base=random.randrange(5_000_000, 60_000_000, 1000)))
    try:
        try:
            kernel.start(timeout=timeout)
        except (RuntimeError, TimeoutError) as err:
            raise CloveError(f"replay: the replay kernel did not start: {str(err)[-2000:]}") from None
        with kernel.client(timeout=timeout) as client:
            yield client
    finally:
        kernel.cleanup()


def cmd_replay(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    source = os.path.abspath(args.recording)
    try:
        parts = select_agents(load_entries(source), args.agent)  # refuse here, before any kernel starts
    except CloveError as err:
        raise error(f"replay: {err.message}") from None
    body: dict[str, Any] = {"path": source, "agent": args.agent, "speed": args.speed, "mode": "agents"}
    env = _env_pairs(args.env, error)
    if env:
        body["env"] = env
    if args.arg is not None:
        body["args"] = list(args.arg)
    session = client(args) if args.socket else _private_kernel(args.timeout)
    with session as c:
        try:
            c.call("replay.start", **body)
        except CloveError as err:
            if isinstance(err, KernelUnavailable):
                raise
            raise error(f"replay: {err.message}") from None
        status = _wait(c, args.max_seconds)
        status["output"] = {a["name"]: _output(c, a["agent_id"]) for a in status["agents"]}
    status["recording"] = source
    status["total_recorded"] = sum(len(p.calls) for p in parts)
    emit(args, status, lambda: replay_report(status))
    return 0 if status["state"] == "COMPLETED" else 1


def _wait(c: Any, max_seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + max_seconds
    while True:
        status: dict[str, Any] = c.call("replay.status")
        if status["state"] != "REPLAYING":
            return status
        if time.monotonic() > deadline:
            status["state"] = "TIMEOUT"
            status["error"] = f"the replay had not ended after {max_seconds:g} s"
            return status
        time.sleep(POLL_S)


def _output(c: Any, agent_id: int) -> str:
    try:
        data = c.call("agent.logs", agent_id=agent_id, offset=0, max_bytes=1 << 20)["data"]
    except CloveError:
        return ""
    return bytes(data).decode("utf-8", "replace")


def _args_text(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 2000 else text[:2000] + "…"


def replay_report(status: dict[str, Any]) -> str:
    """The human report: outcome, progress, timing, the first divergence, the agent's output."""
    progress = status["progress"]
    lines = [f"replay of {', '.join(a['name'] for a in status['agents']) or '-'} from {status.get('recording')} ({status['speed']} speed)"]
    timing = f"in {status['elapsed']:.2f} s"
    if status.get("recorded_elapsed"):
        timing += f" (recorded: {status['recorded_elapsed']:.2f} s, {status['recorded_elapsed'] / max(status['elapsed'], 1e-6):.1f}x)"
    lines.append(f"{status['state']}: {progress['replayed']}/{progress['total']} syscalls answered from the recording {timing}")
    for agent in status["agents"]:
        end = agent.get("recorded_end")
        if agent.get("ran_past_end"):
            lines.append(f"  {agent['name']}: ran past the end of the recording (it stopped while the agent ran); stopped there")
        elif end:
            lines.append(
                f"  {agent['name']}: replayed to the end of the recording, where the recorded run ended by signal "
                f"{end['signal']} ({end['signal_name']}, {end['reason']}); stopped there"
            )
        else:
            lines.append(f"  {agent['name']}: exit {_exit_text(agent['exit'])}; recorded {_exit_text(agent['recorded_exit'])}")
    d = status.get("divergence")
    if d:
        lines.append(f"first divergence: {d['agent']}, syscall #{d['index']}: {d['reason']}")
        for label in ("recorded", "actual"):
            side = d.get(label)
            if side is None:
                lines.append(f"  {label + ':':9} (nothing)")
            elif "call" in side:
                lines.append(f"  {label + ':':9} {side['call']} {_args_text(side['body'])}")
            else:
                lines.append(f"  {label + ':':9} {_args_text(side)}")
        if d.get("hint"):
            lines.append(f"  hint: {d['hint']}")
    if status.get("error"):
        lines.append(f"error: {status['error']}")
    for name, text in status.get("output", {}).items():
        lines.append(f"--- output of {name} ---")
        lines.append(text.rstrip("\n"))
    return "\n".join(lines)


def _exit_text(exit_info: dict[str, Any] | None) -> str:
    if not exit_info:
        return "unknown"
    if exit_info.get("reason") == "exited":
        return f"code {exit_info.get('exit_code')}"
    return f"{exit_info.get('reason')}" + (f" (signal {exit_info['signal']})" if exit_info.get("signal") else "")


# ---- clove record ------------------------------------------------------------------------------


def cmd_record(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    with client(args) as c:
        try:
            if args.action == "start":
                body: dict[str, Any] = {k: v for k, v in (("include_think", args.think), ("include_http", args.http), ("include_exec", args.exec_), ("max_entries", args.max_entries)) if v is not None}
                if args.agent:
                    body["filter_agents"] = list(args.agent)
                status = c.call("record.start", **body)
            elif args.action == "stop":
                status = c.call("record.stop")
            else:
                status = c.call("record.status", export=bool(args.export))
        except CloveError as err:
            if isinstance(err, KernelUnavailable):
                raise
            raise error(f"record {args.action}: {err.message}") from None
    if args.action == "status" and args.export:
        with open(args.export, "w", encoding="utf-8") as out:
            out.write(status.pop("recording"))
    emit(args, status, lambda: recording_summary(status) + (f"\nexported to {args.export}" if args.action == "status" and args.export else ""))
    return 0


def recording_summary(status: dict[str, Any]) -> str:
    if not status.get("recording_id"):
        return f"{status['state']}: nothing recorded yet"
    agents = ", ".join(status["agents"]) or "none yet"
    return (
        f"{status['state']}: recording {status['recording_id']}, {status['entry_count']} entries in memory "
        f"({status['recorded']} recorded, {status['dropped']} no longer in memory), "
        f"{render.human_bytes(status['bytes'])} in {status['path']}; agents: {agents}"
    )


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], bind: Callable[[Any], Any]) -> None:
    r = common(sub.add_parser("replay", help="replay a recorded agent against its recording; report the first divergence"))
    r.add_argument("recording", help="a recording file (JSONL or exported JSON), a recording directory, or a post-mortem bundle")
    r.add_argument("--agent", help="the agent to replay (default: every agent recorded from its start)")
    r.add_argument("--speed", choices=["full", "recorded"], default="full", help="answer at once, or after each reply's recorded duration")
    r.add_argument("--env", action="append", metavar="KEY=VALUE", help="change the agent's environment (repeatable)")
    r.add_argument("--arg", action="append", metavar="ARG", help="replace the agent's arguments (repeatable, in order)")
    r.add_argument("--max-seconds", type=float, default=600.0, help="give up after this long (default 600)")
    r.set_defaults(func=bind(cmd_replay))

    rec = common(sub.add_parser("record", help="start, stop or show syscall recording"))
    rec.add_argument("action", choices=["start", "stop", "status"])
    rec.add_argument("--agent", action="append", metavar="NAME", help="start: record only these agents (repeatable; default: all)")
    rec.add_argument("--think", action=argparse.BooleanOptionalAction, default=None, help="start: record llm.think calls")
    rec.add_argument("--http", action=argparse.BooleanOptionalAction, default=None, help="start: record http calls")
    rec.add_argument("--exec", dest="exec_", action=argparse.BooleanOptionalAction, default=None, help="start: record exec calls")
    rec.add_argument("--max-entries", type=int, help="start: entries kept in memory for export")
    rec.add_argument("--export", metavar="FILE", help="status: write the recording (JSON) to FILE")
    rec.set_defaults(func=bind(cmd_record))
