"""The state store against a real SQLite file in tmp_path (scopes, TTL on an injected clock,
persistence, limits, quotas, prefix listing, crash safety), and the state service and syscalls
against a fake kernel (owner names, STATE_CHANGED routing, rate-limited purges)."""

from __future__ import annotations

import math
import shutil
import sqlite3
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clove.config import AgentConfig
from clove.errors import ConfigError, InvalidArguments, QuotaExceeded
from clove.kernel.audit.settings import AuditConfig
from clove.kernel.core.agents import Agent, AgentTable
from clove.kernel.core.channels import Caller
from clove.kernel.core.events import EventBus
from clove.kernel.core.sessions import OperatorSessions
from clove.kernel.services.state import OPERATOR_OWNER, StateService
from clove.kernel.services.statestore import MAX_KEY_CHARS, Removed, StateStore
from clove.kernel.syscalls.base import SyscallContext
from clove.kernel.syscalls.registry import SYSCALLS
from clove.policy import for_level


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db_path: Path, clock: Clock) -> Any:
    s = StateStore(db_path, clock=clock).open()
    yield s
    s.close()


# ---- scopes ----------------------------------------------------------------------------------


def test_global_is_shared_agent_is_private(store: StateStore) -> None:
    store.store("alice", "color", "red")
    store.store("alice", "secret", 1, scope="agent")
    assert store.fetch("bob", "color") == ("global", "red")
    assert store.fetch("alice", "secret") == ("agent", 1)
    assert store.fetch("bob", "secret") is None
    assert store.fetch(OPERATOR_OWNER, "secret") is None
    assert store.delete("bob", "secret") is None
    assert store.fetch("alice", "secret") == ("agent", 1)


def test_lookup_order_is_agent_then_session_then_global(store: StateStore) -> None:
    store.store("alice", "k", "g")
    store.store("alice", "k", "s", scope="session")
    store.store("alice", "k", "a", scope="agent")
    assert store.fetch("alice", "k") == ("agent", "a")
    assert store.fetch("bob", "k") == ("session", "s")
    assert store.fetch("alice", "k", "global") == ("global", "g")  # a shadowed key stays reachable
    assert store.delete("alice", "k") == Removed("agent", "alice", "k")  # one scope at a time
    assert store.fetch("alice", "k") == ("session", "s")
    assert store.delete("alice", "k", "global") == Removed("global", "", "k")
    assert store.fetch("alice", "k") == ("session", "s")
    assert store.delete("alice", "k") == Removed("session", "", "k")
    assert store.fetch("alice", "k") is None
    assert store.delete("alice", "k") is None


def test_values_round_trip_as_msgpack(store: StateStore) -> None:
    values = [
        None,
        True,
        0,
        -(2**63),
        2**64 - 1,
        1.5,
        "",
        "héllo ☃",
        b"\x00\xff",
        [1, [2, {"a": b"x"}]],
        {"n": None},
    ]
    for i, value in enumerate(values):
        store.store("alice", f"v{i}", value)
        assert store.fetch("alice", f"v{i}") == ("global", value)
        assert type(store.fetch("alice", f"v{i}")[1]) is type(value)  # bytes stay bytes
    store.store("alice", "t", (1, 2))
    assert store.fetch("alice", "t") == ("global", [1, 2])


def test_storing_again_replaces_value_and_ttl(store: StateStore, clock: Clock) -> None:
    store.store("alice", "k", 1, ttl=5)
    store.store("alice", "k", 2)
    clock.now += 10
    assert store.fetch("alice", "k") == ("global", 2)
    assert store.purge_expired() == []


# ---- TTL -------------------------------------------------------------------------------------


def test_expired_keys_vanish_at_once_and_are_purged(store: StateStore, clock: Clock) -> None:
    store.store("alice", "short", 1, ttl=2)
    store.store("alice", "mine", 2, scope="agent", ttl=0.5)
    store.store("alice", "sess", 3, scope="session", ttl=1)
    store.store("alice", "forever", 4)
    assert store.next_expiry == clock.now + 0.5
    assert store.purge_expired() == []
    clock.now += 1  # "mine" and "sess" are past their deadlines, not purged yet
    assert store.fetch("alice", "mine") is None
    assert store.fetch("alice", "sess") is None
    assert store.keys("alice") == (["forever", "short"], False)
    assert store.delete("alice", "mine") is None  # invisible: left for the purge to report
    assert store.usage("alice") == (4, store.usage("alice")[1])
    assert sorted(store.purge_expired(), key=lambda r: r.key) == [
        Removed("agent", "alice", "mine"),
        Removed("session", "", "sess"),
    ]
    assert store.next_expiry == clock.now + 1
    assert store.usage("alice")[0] == 2
    clock.now += 1
    assert store.purge_expired() == [Removed("global", "", "short")]
    assert store.next_expiry == math.inf
    assert store.fetch("alice", "forever") == ("global", 4)


def test_a_deadline_is_wall_clock_and_survives_reopening(db_path: Path, clock: Clock) -> None:
    first = StateStore(db_path, clock=clock).open()
    first.store("alice", "k", 1, scope="agent", ttl=60)
    first.close()
    clock.now += 30
    second = StateStore(db_path, clock=clock).open()
    assert second.fetch("alice", "k") == ("agent", 1)
    assert second.next_expiry == clock.now + 30
    clock.now += 31
    assert second.fetch("alice", "k") is None
    assert second.purge_expired() == [Removed("agent", "alice", "k")]
    second.close()


def test_purge_works_in_batches(store: StateStore, clock: Clock) -> None:
    for i in range(7):
        store.store("alice", f"k{i}", i, ttl=1 + i / 100)
    clock.now += 2
    assert [r.key for r in store.purge_expired(limit=5)] == ["k0", "k1", "k2", "k3", "k4"]
    assert store.next_expiry <= clock.now
    assert [r.key for r in store.purge_expired(limit=5)] == ["k5", "k6"]
    assert store.usage("alice") == (0, 0)


# ---- limits and quotas -----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "x" * (MAX_KEY_CHARS + 1), "a\x00b", 7, None, b"key", "\udc80"])
def test_bad_keys_are_refused(store: StateStore, key: Any) -> None:
    with pytest.raises(InvalidArguments) as err:
        store.store("alice", key, 1)
    assert err.value.details["argument"] == "key"
    with pytest.raises(InvalidArguments):
        store.fetch("alice", key)


def test_longest_key_and_unicode_keys_are_fine(store: StateStore) -> None:
    for key in ("x" * MAX_KEY_CHARS, "ключ/☃", "\U0010ffff"):
        store.store("alice", key, 1)
        assert store.fetch("alice", key) == ("global", 1)


@pytest.mark.parametrize("ttl", [0, -1, 0.0, math.nan, math.inf, True, "5"])
def test_bad_ttls_are_refused(store: StateStore, ttl: Any) -> None:
    with pytest.raises(InvalidArguments) as err:
        store.store("alice", "k", 1, ttl=ttl)
    assert err.value.details == {"argument": "ttl"}


def test_bad_scopes_are_refused(store: StateStore) -> None:
    for call in (
        lambda: store.store("alice", "k", 1, scope="planet"),
        lambda: store.fetch("alice", "k", "Global"),
        lambda: store.delete("alice", "k", ""),
        lambda: store.keys("alice", "", "agents"),
    ):
        with pytest.raises(InvalidArguments) as err:
            call()
        assert err.value.code == "proto.invalid_args"
        assert err.value.details == {"argument": "scope", "scopes": ["global", "agent", "session"]}


def test_values_above_the_limit_and_unencodable_values_are_refused(db_path: Path) -> None:
    store = StateStore(db_path, max_value_bytes=100).open()
    store.store("alice", "k", b"x" * 98)  # 2 bytes of msgpack header: 100 exactly
    with pytest.raises(QuotaExceeded) as err:
        store.store("alice", "k", b"x" * 99)
    assert err.value.code == "quota.exceeded"
    assert err.value.details == {"size": 101, "limit": 100}
    assert store.fetch("alice", "k") == ("global", b"x" * 98)  # unchanged
    with pytest.raises(InvalidArguments):
        store.store("alice", "k", object())
    store.close()


def test_key_quota_is_per_owner_and_freed_by_deletes(db_path: Path) -> None:
    store = StateStore(db_path, max_keys=3).open()
    store.store("alice", "a", 1)
    store.store("alice", "b", 1, scope="agent")
    store.store("alice", "c", 1, scope="session")
    store.store("alice", "a", 2)  # replacing one's own key costs no key
    with pytest.raises(QuotaExceeded) as err:
        store.store("alice", "d", 1)
    assert err.value.details == {"keys": 3, "limit": 3, "owner": "alice"}
    store.store("bob", "d", 1)  # bob has his own quota
    store.delete("alice", "c")
    store.store("alice", "d", 1, scope="agent")
    store.close()


def test_byte_quota_charges_the_last_writer(db_path: Path) -> None:
    store = StateStore(db_path, max_bytes=250).open()
    store.store("alice", "k", b"x" * 98)  # 100 bytes encoded
    store.store("alice", "j", b"x" * 98)
    with pytest.raises(QuotaExceeded) as err:
        store.store("alice", "i", b"x" * 98)
    assert err.value.details["bytes"] == 200
    assert err.value.details["limit"] == 250
    store.store("bob", "k", 1)  # bob overwrites alice's key: it now counts against bob
    assert store.usage("alice") == (1, 100)
    assert store.usage("bob") == (1, 1)
    store.store("alice", "i", b"x" * 98)
    store.close()
    reopened = StateStore(db_path, max_bytes=250).open()  # usage is rebuilt from the file
    assert reopened.usage("alice") == (2, 200)
    assert reopened.usage("bob") == (1, 1)
    reopened.close()


def test_a_full_disk_is_a_quota_error_and_changes_nothing(store: StateStore) -> None:
    store.store("alice", "k", 1)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk is full"
    with pytest.raises(QuotaExceeded, match="disk .* is full"):
        store.store("alice", "big", b"x" * 200_000)
    assert store.fetch("alice", "big") is None
    assert store.usage("alice") == (1, 1)
    store.store("alice", "k", 2)  # the store carries on
    assert store.fetch("alice", "k") == ("global", 2)


# ---- listing ---------------------------------------------------------------------------------


def test_keys_lists_every_visible_scope_once_and_sorted(store: StateStore) -> None:
    store.store("alice", "cfg/b", 1)
    store.store("alice", "cfg/a", 1, scope="agent")
    store.store("alice", "cfg/b", 1, scope="session")  # same name in two scopes: listed once
    store.store("bob", "cfg/private", 1, scope="agent")
    store.store("alice", "other", 1)
    assert store.keys("alice", "cfg/") == (["cfg/a", "cfg/b"], False)
    assert store.keys("bob", "cfg/") == (["cfg/b", "cfg/private"], False)
    assert store.keys("alice") == (["cfg/a", "cfg/b", "other"], False)
    assert store.keys("alice", "", "agent") == (["cfg/a"], False)
    assert store.keys("alice", "", "session") == (["cfg/b"], False)
    assert store.keys("alice", "nothing") == ([], False)


def test_prefix_bounds_are_exact(store: StateStore) -> None:
    for key in (
        "a",
        "a\U0010ffff",
        "a\U0010ffffz",
        "ab",
        "b",
        "a" + "\U0010ffff" * (MAX_KEY_CHARS - 1),
        "é",
        "éa",
    ):
        store.store("alice", key, 1)
    assert store.keys("alice", "a")[0] == sorted(k for k in store.keys("alice")[0] if k.startswith("a"))
    assert len(store.keys("alice", "a")[0]) == 5
    assert store.keys("alice", "a\U0010ffff")[0] == ["a\U0010ffff", "a\U0010ffffz", "a" + "\U0010ffff" * 255]
    assert store.keys("alice", "é")[0] == ["é", "éa"]
    with pytest.raises(InvalidArguments) as err:
        store.keys("alice", "p" * (MAX_KEY_CHARS + 1))
    assert err.value.details["argument"] == "prefix"


def test_listing_is_capped(db_path: Path) -> None:
    store = StateStore(db_path, max_list=3).open()
    for i in range(5):
        store.store("alice", f"k{i}", i)
    assert store.keys("alice") == (["k0", "k1", "k2"], True)
    assert store.keys("alice", "k4") == (["k4"], False)
    store.close()


def test_hot_path_queries_use_indexes(store: StateStore) -> None:
    """No full scans: every request-path statement is a search on an index."""
    db = store.db
    live = "(expires_at IS NULL OR expires_at > ?)"
    in_range = f"owner = ? AND key >= ? AND key < ? AND {live}"
    statements = [
        (f"SELECT value FROM main.kv WHERE owner = ? AND key = ? AND {live}", ("", "k", 0)),
        ("SELECT writer, size FROM mem.kv WHERE owner = ? AND key = ?", ("", "k")),
        (
            f"SELECT key FROM main.kv WHERE {in_range} UNION SELECT key FROM mem.kv WHERE {in_range}"
            " ORDER BY key LIMIT ?",
            ("", "a", "b", 0, "", "a", "b", 0, 10),
        ),
        (
            "SELECT rowid, owner, key, writer, size FROM main.kv WHERE expires_at <= ?"
            " ORDER BY expires_at LIMIT ?",
            (0, 5),
        ),
        ("SELECT min(expires_at) FROM main.kv", ()),
    ]
    for sql, params in statements:
        steps = [str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
        assert any("INDEX" in step for step in steps), (sql, steps)
        assert not any(step.startswith("SCAN") for step in steps), (sql, steps)


# ---- persistence and crash safety ------------------------------------------------------------


def test_global_and_agent_scopes_persist_session_does_not(db_path: Path) -> None:
    first = StateStore(db_path).open()
    first.store("alice", "g", {"v": 1})
    first.store("alice", "a", b"\x01", scope="agent")
    first.store(OPERATOR_OWNER, "o", "op", scope="agent")
    first.store("alice", "s", 3, scope="session")
    first.close()
    first.close()  # twice is fine
    second = StateStore(db_path).open()
    assert second.fetch("alice", "g") == ("global", {"v": 1})
    assert second.fetch("alice", "a") == ("agent", b"\x01")
    assert second.fetch(OPERATOR_OWNER, "o") == ("agent", "op")
    assert second.fetch("alice", "s") is None
    second.close()


def test_committed_writes_are_on_disk_without_a_close(db_path: Path, tmp_path: Path) -> None:
    """What a crash leaves: copy the files while the writer is still open, then open the copy."""
    writer = StateStore(db_path).open()
    writer.store("alice", "g", 1)
    writer.store("alice", "a", 2, scope="agent")
    writer.delete("alice", "g")
    writer.store("alice", "g2", 3, ttl=3600)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(f"{db_path}{suffix}", crashed / f"state.db{suffix}")
    recovered = StateStore(crashed / "state.db").open()
    assert recovered.fetch("alice", "a") == ("agent", 2)
    assert recovered.fetch("alice", "g") is None
    assert recovered.fetch("alice", "g2") == ("global", 3)
    assert recovered.usage("alice") == (2, 2)
    recovered.close()
    writer.close()


def test_one_store_per_file_at_a_time(db_path: Path, store: StateStore) -> None:
    store.store("alice", "k", 1)
    with pytest.raises(ConfigError, match="database is locked"):
        StateStore(db_path).open()
    store.close()
    StateStore(db_path).open().close()


def test_file_is_private_and_in_wal_mode(db_path: Path, store: StateStore) -> None:
    store.store("alice", "k", 1)
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{db_path}-wal").stat().st_mode) == 0o600
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.db.execute("PRAGMA locking_mode").fetchone()[0] == "exclusive"
    assert not Path(f"{db_path}-shm").exists()  # the WAL index is in the kernel's memory


def test_a_file_that_is_not_a_database_is_moved_aside(db_path: Path) -> None:
    db_path.write_bytes(b"this is not sqlite" * 100)
    store = StateStore(db_path).open()
    store.store("alice", "k", 1)
    assert store.fetch("alice", "k") == ("global", 1)
    store.close()
    aside = [p.name for p in db_path.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert Path(db_path.parent / aside[0]).read_bytes().startswith(b"this is not sqlite")


def test_a_newer_schema_is_refused_untouched(db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(ConfigError, match="newer"):
        StateStore(db_path).open()
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    db.close()


def test_an_unopenable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open"):
        StateStore(tmp_path / "missing" / "state.db").open()


# ---- the service and syscalls on a fake kernel -----------------------------------------------


class FakeJournal:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def append(self, category: str, event_type: str, **kw: Any) -> None:
        self.records.append((getattr(category, "value", category), event_type, kw))


class FakeKernel:
    def __init__(self, store: StateStore, clock: Clock) -> None:
        self.events = EventBus(clock=clock)
        self.sessions = OperatorSessions(iter(range(100, 200)).__next__)
        self.supervisor = SimpleNamespace(table=AgentTable(max_exited=10))
        self.audit_config = AuditConfig()
        self.journal = FakeJournal()
        self.mono = Clock(0.0)
        self.state = StateService(self, store, clock=self.mono)  # type: ignore[arg-type]

    def agent(self, agent_id: int, name: str) -> Agent:
        agent = Agent(agent_id, AgentConfig(name=name, script="/x.py"), None)
        self.supervisor.table.add(agent)
        return agent

    def ctx(self, agent: Agent | None = None, session_id: int | None = None) -> SyscallContext:
        caller = Caller("agent", agent_id=agent.id) if agent else Caller("operator", session_id=session_id)
        perms = agent.permissions if agent else for_level("unrestricted")
        return SyscallContext(self, caller, agent, perms)  # type: ignore[arg-type]

    def call(self, ctx: SyscallContext, name: str, **body: Any) -> Any:
        syscall = SYSCALLS[name]
        ctx.perms.require(syscall.right, name)
        return syscall.execute(ctx, syscall.parse(body))


@pytest.fixture
def kernel(store: StateStore, clock: Clock) -> FakeKernel:
    return FakeKernel(store, clock)


def _seen(kernel: FakeKernel, principal: int) -> list[tuple[str, str, str, int | None]]:
    return [
        (e["data"]["key"], e["data"]["scope"], e["data"]["action"], e["data"]["by"])
        for e in kernel.events.poll(principal, 100)
    ]


def test_syscalls_are_registered_with_rights_and_category() -> None:
    rights = {
        name: (SYSCALLS[name].right, SYSCALLS[name].category)
        for name in SYSCALLS
        if name.startswith("state.")
    }
    assert rights == {
        "state.store": ("state.write", "STATE_STORE"),
        "state.fetch": ("state.read", "STATE_STORE"),
        "state.delete": ("state.write", "STATE_STORE"),
        "state.keys": ("state.read", "STATE_STORE"),
    }


def test_reply_shapes(kernel: FakeKernel) -> None:
    alice = kernel.ctx(kernel.agent(1, "alice"))
    assert kernel.call(alice, "state.store", key="k", value=[1]) == {
        "success": True,
        "key": "k",
        "scope": "global",
    }
    assert kernel.call(alice, "state.fetch", key="k") == {
        "success": True,
        "exists": True,
        "value": [1],
        "scope": "global",
    }
    assert kernel.call(alice, "state.fetch", key="nope") == {
        "success": True,
        "exists": False,
        "value": None,
        "scope": None,
    }
    assert kernel.call(alice, "state.keys") == {
        "success": True,
        "keys": ["k"],
        "count": 1,
        "truncated": False,
    }
    assert kernel.call(alice, "state.delete", key="k") == {
        "success": True,
        "deleted": True,
        "scope": "global",
    }
    assert kernel.call(alice, "state.delete", key="k") == {"success": True, "deleted": False, "scope": None}
    with pytest.raises(InvalidArguments, match="missing argument 'value'"):
        kernel.call(alice, "state.store", key="k")


def test_private_scope_is_keyed_by_agent_name_and_operators_share_one(kernel: FakeKernel) -> None:
    first = kernel.agent(1, "keeper")
    kernel.call(kernel.ctx(first), "state.store", key="k", value=1, scope="agent")
    kernel.supervisor.table.remove(first)
    again = kernel.agent(7, "keeper")  # another id, same name: same private scope
    assert kernel.call(kernel.ctx(again), "state.fetch", key="k")["value"] == 1
    assert kernel.call(kernel.ctx(kernel.agent(2, "other")), "state.fetch", key="k")["exists"] is False
    kernel.call(kernel.ctx(session_id=100), "state.store", key="op", value=2, scope="agent")
    assert kernel.call(kernel.ctx(session_id=101), "state.fetch", key="op")["scope"] == "agent"
    assert kernel.state.store.fetch(OPERATOR_OWNER, "op") == ("agent", 2)


def test_state_changed_reaches_only_those_who_may_see_the_key(kernel: FakeKernel, clock: Clock) -> None:
    alice, bob = kernel.agent(1, "alice"), kernel.agent(2, "bob")
    op_a = kernel.sessions.open(b"a", None)
    op_b = kernel.sessions.open(b"b", None)
    for principal in (alice.id, bob.id, op_a.id, op_b.id):
        kernel.events.subscribe(principal, ["STATE_CHANGED"])
    kernel.call(kernel.ctx(alice), "state.store", key="shared", value=1)
    kernel.call(kernel.ctx(alice), "state.store", key="mine", value=1, scope="agent")
    kernel.call(kernel.ctx(session_id=op_a.id), "state.store", key="ops", value=1, scope="agent")
    kernel.call(kernel.ctx(bob), "state.store", key="temp", value=1, scope="session", ttl=1)
    kernel.call(kernel.ctx(bob), "state.fetch", key="shared")  # reads are not announced
    kernel.call(kernel.ctx(bob), "state.delete", key="shared")
    clock.now += 2
    kernel.state.housekeeping()
    shared = [
        ("shared", "global", "store", 1),
        ("temp", "session", "store", 2),
        ("shared", "global", "delete", 2),
    ]
    expired = [("temp", "session", "expire", None)]
    assert _seen(kernel, alice.id) == [shared[0], ("mine", "agent", "store", 1), *shared[1:], *expired]
    assert _seen(kernel, bob.id) == [*shared, *expired]
    ops = [shared[0], ("ops", "agent", "store", op_a.id), *shared[1:], *expired]
    assert _seen(kernel, op_a.id) == ops
    assert _seen(kernel, op_b.id) == ops


def test_expiry_of_a_private_key_reaches_its_owner_only_while_live(kernel: FakeKernel, clock: Clock) -> None:
    alice = kernel.agent(1, "alice")
    kernel.events.subscribe(alice.id, ["STATE_CHANGED"])
    kernel.events.subscribe(99, ["*"])
    kernel.call(kernel.ctx(alice), "state.store", key="k", value=1, scope="agent", ttl=1)
    kernel.events.poll(alice.id, 10)
    clock.now += 2
    kernel.state.housekeeping()
    event = kernel.events.poll(alice.id, 10)[0]
    assert event["data"] == {"key": "k", "scope": "agent", "action": "expire", "by": None}
    assert event["source_agent_id"] is None
    assert not [e for e in kernel.events.poll(99, 10) if e["type"] == "STATE_CHANGED"]
    assert kernel.journal.records[-1][:2] == ("STATE_STORE", "state.expired")
    assert kernel.journal.records[-1][2]["details"] == {"count": 1, "keys": ["agent:k"]}


def test_housekeeping_purges_at_most_once_a_second(kernel: FakeKernel, clock: Clock) -> None:
    alice = kernel.ctx(kernel.agent(1, "alice"))
    kernel.call(alice, "state.store", key="a", value=1, ttl=1)
    kernel.state.housekeeping()  # nothing due yet; the next look is a second away
    clock.now += 5
    kernel.state.housekeeping()
    assert kernel.state.store.usage("alice") == (1, 1)  # rate-limited: not purged yet
    kernel.mono.now += 1.0
    kernel.state.housekeeping()
    assert kernel.state.store.usage("alice") == (0, 0)


def test_readonly_agents_may_read_but_not_write(kernel: FakeKernel) -> None:
    from clove.errors import PermissionDenied

    agent = kernel.agent(1, "ro")
    agent.permissions = for_level("readonly")
    ctx = kernel.ctx(agent)
    assert kernel.call(ctx, "state.fetch", key="k")["exists"] is False
    assert kernel.call(ctx, "state.keys")["count"] == 0
    for call, body in (("state.store", {"key": "k", "value": 1}), ("state.delete", {"key": "k"})):
        with pytest.raises(PermissionDenied, match="state.write"):
            kernel.call(ctx, call, **body)
