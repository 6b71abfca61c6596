"""Permissions: a level (a named bundle of rights) plus fine-grained grants, per caller.

Levels, from most to least powerful::

    unrestricted  every right, every path, command, domain and method (operators by default)
    standard      sessions, messaging, events, state, files in its work dir and /tmp, exec inside
                  its own sandbox, metrics; HTTP only to granted domains (the default for agents)
    sandboxed     standard without exec and HTTP
    readonly      sessions, messaging, events, reading state and files, metrics
    minimal       sessions and messaging only

A syscall names the right it needs (``Syscall.right``); the dispatcher checks it before the
handler runs, and handlers check paths, commands and URLs with ``check_*``. Every refusal raises
:class:`PermissionDenied` (``perm.denied``); the dispatcher journals it under SECURITY and emits
SYSCALL_BLOCKED. Paths are agent-view paths after symlinks and ``..`` are resolved; ``{work}``
in a pattern stands for the agent's work dir. Patterns are shell globs where ``**`` also crosses
``/`` and ``dir/**`` matches ``dir`` itself.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlsplit

from clove.errors import InvalidArguments, PermissionDenied

LEVELS: Final = ("unrestricted", "standard", "sandboxed", "readonly", "minimal")
ALL_RIGHTS: Final = frozenset(
    {
        "session", "agents.read", "agents.spawn", "agents.logs", "audit", "admin", "ipc", "events",
        "state.read", "state.write", "fs.read", "fs.write", "exec", "http", "metrics",
        "permissions.read", "permissions.write", "llm", "devices",
    }
)  # fmt: skip
WORK: Final = "{work}"  # in a path pattern: the caller's work dir
HTTP_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_LEVEL_RIGHTS: Final = {
    "unrestricted": ALL_RIGHTS,
    "standard": frozenset(
        {"session", "agents.read", "ipc", "events", "state.read", "state.write", "fs.read", "fs.write",
         "exec", "http", "metrics", "permissions.read", "llm", "devices"}
    ),  # fmt: skip
    "sandboxed": frozenset(
        {"session", "agents.read", "ipc", "events", "state.read", "state.write", "fs.read", "fs.write",
         "metrics", "permissions.read", "llm", "devices"}
    ),  # fmt: skip
    "readonly": frozenset({"session", "agents.read", "ipc", "events", "state.read", "fs.read", "metrics", "permissions.read", "devices"}),
    "minimal": frozenset({"session", "ipc", "permissions.read"}),
}
_SPAWN_RIGHTS: Final = frozenset({"agents.spawn", "agents.logs"})
_GRANT_KEYS: Final = (
    "read_paths", "write_paths", "exec_allow", "exec_deny", "http_domains", "http_methods",
    "can_spawn", "max_children", "can_detach", "llm_tokens",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Permissions:
    """What one caller may do. Immutable: changing permissions builds a new value."""

    level: str
    rights: frozenset[str]
    read_paths: tuple[str, ...] = ()
    write_paths: tuple[str, ...] = ()
    exec_allow: tuple[str, ...] = ()
    exec_deny: tuple[str, ...] = ()
    http_domains: tuple[str, ...] = ()
    http_methods: tuple[str, ...] = ()
    can_spawn: bool = False
    max_children: int = 0
    #: May spawn children that outlive it (``detached``); others die with their parent.
    can_detach: bool = False
    llm_tokens: int | None = None
    work_dir: str = field(default="/", compare=False)

    # ---- checks ----------------------------------------------------------------------------------

    def has(self, right: str) -> bool:
        """A right of the level, or one the spawn grant brings: managing (and reading the logs
        of) one's own children."""
        return right in self.rights or (self.can_spawn and right in _SPAWN_RIGHTS)

    def require(self, right: str, call: str) -> None:
        if not self.has(right):
            raise PermissionDenied(
                f"{call} needs the '{right}' right, which level '{self.level}' does not have",
                details={"call": call, "right": right, "level": self.level},
            )

    def _allows(self, patterns: tuple[str, ...], path: str) -> bool:
        """Whether a pattern matches ``path``, ``{work}`` standing for this caller's work dir.

        A ``{work}/...`` pattern is matched as the work dir (a literal prefix) followed by the
        rest of the pattern, so its compiled form is one for every agent: substituting the
        work dir first made a new regex per agent, kept in the process-wide caches (about
        4 KiB per spawn, up to their bounds: a kernel that grew for hours under churn).
        """
        work = self.work_dir.rstrip("/") or "/"
        plain_work = work != "/" and not any(ch in work for ch in "*?")
        norm = posixpath.normpath(path)
        for pattern in patterns:
            tail = pattern[len(WORK) :]
            if plain_work and pattern.startswith(WORK) and WORK not in tail:
                if norm.startswith(work) and _glob_tail_regex(tail).match(norm, len(work)):
                    return True
            elif path_matches(pattern.replace(WORK, work), path):
                return True
        return False

    def check_read(self, path: str) -> None:
        """:param path: absolute, already resolved (no symlinks, no ``..``)."""
        if not self._allows(self.read_paths + self.write_paths, path):
            raise PermissionDenied(f"reading {path} is not granted", details={"path": path, "access": "read"})

    def check_write(self, path: str) -> None:
        if not self._allows(self.write_paths, path):
            raise PermissionDenied(f"writing {path} is not granted", details={"path": path, "access": "write"})

    def check_exec(self, program: str) -> None:
        """``program`` is the command's first word (a name or a path)."""
        name = posixpath.basename(program)
        denied = any(fnmatch.fnmatchcase(program, p) or fnmatch.fnmatchcase(name, p) for p in self.exec_deny)
        allowed = any(fnmatch.fnmatchcase(program, p) or fnmatch.fnmatchcase(name, p) for p in self.exec_allow)
        if denied or not allowed:
            raise PermissionDenied(f"running {program!r} is not granted", details={"program": program})

    def check_http(self, url: str, method: str) -> None:
        host = (urlsplit(url).hostname or "").lower()
        if method.upper() not in self.http_methods:
            raise PermissionDenied(f"HTTP {method.upper()} is not granted", details={"method": method.upper()})
        if not any(domain_matches(d, host) for d in self.http_domains):
            raise PermissionDenied(f"HTTP to {host or url!r} is not granted", details={"domain": host})

    def check_spawn(self, children: int) -> None:
        if not self.can_spawn:
            raise PermissionDenied("spawning agents is not granted", details={"right": "can_spawn"})
        if children >= self.max_children:
            raise PermissionDenied(
                f"at most {self.max_children} children are granted", details={"max_children": self.max_children}
            )

    def check_detach(self) -> None:
        if not self.can_detach:
            raise PermissionDenied("spawning detached children (that outlive their parent) is not granted", details={"right": "can_detach"})

    # ---- composition -----------------------------------------------------------------------------

    def within(self, other: Permissions) -> bool:
        """True when everything ``self`` allows, ``other`` allows too (a grant cannot exceed
        its granter). Conservative: a pattern it cannot prove covered makes this False.
        ``{work}`` is compared as written: each agent's own work dir."""
        return (
            self.rights <= other.rights
            and all(_covered(p, other.read_paths + other.write_paths) for p in self.read_paths)
            and all(_covered(p, other.write_paths) for p in self.write_paths)
            and all(_covered(p, other.exec_allow) for p in self.exec_allow)
            and set(other.exec_deny) <= set(self.exec_deny)
            and all(any(domain_covered(d, o) for o in other.http_domains) for d in self.http_domains)
            and set(self.http_methods) <= set(other.http_methods)
            and (not self.can_spawn or other.can_spawn)
            and self.max_children <= other.max_children
            and (not self.can_detach or other.can_detach)
            and (other.llm_tokens is None or (self.llm_tokens is not None and self.llm_tokens <= other.llm_tokens))
        )

    def with_grants(self, grants: dict[str, Any]) -> Permissions:
        """A copy with some grants replaced (``set_permissions(permissions=...)``).

        :raises InvalidArguments: unknown key or wrong type.
        """
        return replace(self, **parse_grants(grants))

    def to_wire(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "rights": sorted(self.rights),
            "read_paths": list(self.read_paths),
            "write_paths": list(self.write_paths),
            "exec_allow": list(self.exec_allow),
            "exec_deny": list(self.exec_deny),
            "http_domains": list(self.http_domains),
            "http_methods": list(self.http_methods),
            "can_spawn": self.can_spawn,
            "max_children": self.max_children,
            "can_detach": self.can_detach,
            "llm_tokens": self.llm_tokens,
        }


def for_level(level: str, *, work_dir: str = "/") -> Permissions:
    """The permissions a level gives, with its default grants.

    :raises InvalidArguments: unknown level.
    """
    if level not in _LEVEL_RIGHTS:
        raise InvalidArguments(f"unknown permission level {level!r}; levels are {', '.join(LEVELS)}", details={"levels": list(LEVELS)})
    rights = _LEVEL_RIGHTS[level]
    if level == "unrestricted":
        return Permissions(
            level=level, rights=rights, read_paths=("/**",), write_paths=("/**",), exec_allow=("*",),
            http_domains=("*",), http_methods=HTTP_METHODS, can_spawn=True, max_children=1_000_000, can_detach=True,
            work_dir=work_dir,
        )  # fmt: skip
    own = ("{work}/**", "/tmp/**")
    return Permissions(
        level=level,
        rights=rights,
        read_paths=own if "fs.read" in rights else (),
        write_paths=own if "fs.write" in rights else (),
        exec_allow=("*",) if "exec" in rights else (),
        http_methods=("GET", "HEAD") if "http" in rights else (),
        work_dir=work_dir,
    )


def parse_grants(grants: dict[str, Any]) -> dict[str, Any]:
    """Validate a grants map from the wire or a config table into :class:`Permissions` fields."""
    out: dict[str, Any] = {}
    for key, value in grants.items():
        if key not in _GRANT_KEYS:
            raise InvalidArguments(f"unknown permission {key!r}; known: {', '.join(_GRANT_KEYS)}", details={"permission": key})
        if key in ("can_spawn", "can_detach"):
            if not isinstance(value, bool):
                raise InvalidArguments(f"permission {key!r} must be a bool")
        elif key in ("max_children", "llm_tokens"):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidArguments(f"permission {key!r} must be a non-negative int")
            if key == "max_children" and value is None:
                raise InvalidArguments("permission 'max_children' must be a non-negative int")
        else:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise InvalidArguments(f"permission {key!r} must be a list of non-empty strings")
            if key in ("read_paths", "write_paths") and not all(v.startswith(("/", "{work}")) for v in value):
                raise InvalidArguments(f"permission {key!r} takes absolute path patterns (or {{work}}/...)")
            if key == "http_methods":
                value = [v.upper() for v in value]
                bad = [v for v in value if v not in HTTP_METHODS]
                if bad:
                    raise InvalidArguments(f"unknown HTTP method {bad[0]!r}")
            value = tuple(value)
        out[key] = value
    return out


# ---- pattern helpers -----------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("/**"):
        base = pattern[:-3] or "/"
        return re.compile(_translate(base) + r"(?:/.*)?\Z" if base != "/" else r"/.*\Z|/\Z")
    return re.compile(_translate(pattern) + r"\Z")


@lru_cache(maxsize=256)
def _glob_tail_regex(tail: str) -> re.Pattern[str]:
    """What follows ``{work}`` in a pattern, matched from the end of the work dir: the same
    regex :func:`_glob_regex` builds after the work dir's literal characters."""
    if tail.endswith("/**"):
        return re.compile(_translate(tail[:-3]) + r"(?:/.*)?\Z")
    return re.compile(_translate(tail) + r"\Z")


def _translate(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def path_matches(pattern: str, path: str) -> bool:
    """``/tmp/**`` matches ``/tmp`` and everything below it; ``*`` stays within one component."""
    return bool(_glob_regex(pattern).match(posixpath.normpath(path)))


def _literal_prefix(pattern: str) -> str:
    cut = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=len(pattern))
    return pattern[:cut]


def _covered(pattern: str, others: tuple[str, ...]) -> bool:
    """Whether everything ``pattern`` matches is matched by one of ``others`` (conservative)."""
    for other in others:
        if other == pattern or other in ("*", "/**"):
            return True
        if other.endswith("/**") and "*" not in other[:-3] and "?" not in other[:-3]:
            base = other[:-3]
            prefix = _literal_prefix(pattern)
            if prefix == base or prefix.startswith(base.rstrip("/") + "/"):
                return True
        if not any(ch in pattern for ch in "*?[") and (path_matches(other, pattern) or fnmatch.fnmatchcase(pattern, other)):
            return True
    return False


def domain_matches(pattern: str, host: str) -> bool:
    """``example.com`` matches only itself; ``*.example.com`` its subdomains; ``*`` anything."""
    pattern = pattern.lower()
    if pattern == "*":
        return bool(host)
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def domain_covered(pattern: str, other: str) -> bool:
    other = other.lower()
    pattern = pattern.lower()
    if other == "*" or other == pattern:
        return True
    return other.startswith("*.") and pattern.endswith(other[1:])
