"""Opcode-style names of the original Clove SDK, mapped to Clove's syscall names. The wire
carries the names; these exist so code written against ``SyscallOp`` keeps reading well."""

from __future__ import annotations

import enum


class SyscallOp(str, enum.Enum):
    SYS_NOOP = "noop"
    SYS_HELLO = "hello"
    SYS_EXIT = "exit"
    SYS_SPAWN = "agent.spawn"
    SYS_KILL = "agent.kill"
    SYS_PAUSE = "agent.pause"
    SYS_RESUME = "agent.resume"
    SYS_LIST = "agent.list"
    SYS_SEND = "ipc.send"
    SYS_RECV = "ipc.recv"
    SYS_BROADCAST = "ipc.broadcast"
    SYS_REGISTER = "ipc.register"
    SYS_STORE = "state.store"
    SYS_FETCH = "state.fetch"
    SYS_DELETE = "state.delete"
    SYS_KEYS = "state.keys"
    SYS_SUBSCRIBE = "events.subscribe"
    SYS_UNSUBSCRIBE = "events.unsubscribe"
    SYS_POLL_EVENTS = "events.poll"
    SYS_EMIT = "events.emit"
    SYS_READ = "fs.read"
    SYS_WRITE = "fs.write"
    SYS_EXEC = "exec"
    SYS_HTTP = "http"
    SYS_POLL_ASYNC = "async.poll"
    SYS_GET_PERMS = "permissions.get"
    SYS_SET_PERMS = "permissions.set"
    SYS_METRICS_SYSTEM = "metrics.system"
    SYS_METRICS_AGENT = "metrics.agent"
    SYS_METRICS_ALL_AGENTS = "metrics.agents"
    SYS_METRICS_CGROUP = "metrics.cgroup"
    SYS_GET_AUDIT_LOG = "audit.query"
    SYS_SET_AUDIT_CONFIG = "audit.config"
