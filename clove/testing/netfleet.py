"""Boards in their own network namespaces, for fleet tests (docs/fleet.md, "Tests and figures").

A :class:`NetFabric` is a Linux bridge in the root namespace with an address the hub
(``nats-server``) listens on, and, per board, a network namespace joined to the bridge by a veth
pair::

    root namespace                         namespace clv<pid>x<n>-board-a
    bridge clv<pid>x<n>b 10.A.B.1/24  ──   veth clv<pid>x<n>h0 ═══ clv<pid>x<n>n0 10.A.B.10/24
          (nats-server listens here)  ──   veth clv<pid>x<n>h1 ═══ ...

:meth:`NetFabric.cut` sets a board's bridge-side veth down (its cable pulled), :meth:`restore`
brings it back. :meth:`NetFabric.run_in` runs a function in a thread that has entered the
board's network namespace (``setns``), so whatever that function starts (``clove kernel``, and
so its fleet link) lives there, while the filesystem stays shared: the kernel's control
socket is a Unix socket path the test reaches as usual. ``ip netns exec`` is not used because
it also remounts ``/sys`` in a private mount namespace, which hides the cgroup hierarchies the
kernel's sandbox needs.

Every name carries the creating process's pid and a counter (interface names are at most 15
characters), so runs side by side never collide, and :meth:`NetFabric.close` removes what it
made, also after a failure. A fabric left behind by a process that died before its cleanup
(a test run killed outright) is removed by the next fabric created on the machine.
"""

from __future__ import annotations

import ctypes
import ipaddress
import itertools
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar, final

from clove.sandbox.cgroupfs import is_pid_alive
from clove.testing import syspackages

__all__ = ["BoardNet", "NetFabric", "unavailable"]

T = TypeVar("T")

CLONE_NEWNET: Final = 0x40000000
NETNS_DIR: Final = "/run/netns"
#: Names this module makes: ``clv<pid>x<n>`` then ``b`` (bridge), ``h<i>`` / ``n<i>`` (veth ends)
#: or ``-<board>`` (a namespace).
_OURS: Final = re.compile(r"^clv(\d+)x(\d+)(?:b|h\d+|n\d+|-.+)$")
_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ip = syspackages.which("ip") or "ip"
    done = subprocess.run([ip, *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why boards cannot have namespaces here (a sentence to skip with), or ``None``."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    missing = syspackages.ensure({"ip": "iproute2"})  # installed where missing, as make fleet-setup does
    if missing is not None:
        return f"no ip command: {missing}"
    probe = f"clv{os.getpid()}x{next(_counter)}-probe"
    try:
        done = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"ip netns cannot run: {err}"
    if done.returncode != 0:
        return f"ip netns add fails here: {done.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@final
@dataclass(frozen=True, slots=True)
class BoardNet:
    """One board's place: its namespace, the veth ends and its address."""

    board: str
    netns: str
    host_veth: str  # in the root namespace, a port of the bridge: what :meth:`NetFabric.cut` downs
    ns_veth: str
    address: str


@final
class NetFabric:
    """A bridge and a namespace per board; a context manager that removes all of it on exit.

    :raises RuntimeError: from :meth:`create` or :meth:`add_board` when an ``ip`` command fails
        (what was made so far is still removed by :meth:`close`).
    """

    def __init__(self) -> None:
        self.tag = f"clv{os.getpid()}x{next(_counter)}"
        self.bridge = f"{self.tag}b"
        self.network: ipaddress.IPv4Network | None = None
        self.boards: dict[str, BoardNet] = {}
        self._made_bridge = False

    @property
    def hub_address(self) -> str:
        """The bridge's address: where the hub listens and every board reaches it."""
        if self.network is None:
            raise RuntimeError("the fabric is not created yet")
        return str(self.network.network_address + 1)

    def __enter__(self) -> NetFabric:
        try:
            return self.create()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> NetFabric:
        sweep_stale()
        self.network = _free_network()
        self._made_bridge = True  # from here on close() tries to delete it
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.hub_address}/{self.network.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_board(self, board: str) -> BoardNet:
        """A namespace for ``board`` on the bridge, its link up, its address assigned."""
        if self.network is None:
            raise RuntimeError("create() the fabric first")
        index = len(self.boards)
        net = BoardNet(
            board, f"{self.tag}-{board}", f"{self.tag}h{index}", f"{self.tag}n{index}", str(self.network.network_address + 10 + index)
        )
        self.boards[board] = net  # recorded first, so close() removes a half-made one
        _ip("netns", "add", net.netns)
        _ip("link", "add", net.host_veth, "type", "veth", "peer", "name", net.ns_veth)
        _ip("link", "set", net.ns_veth, "netns", net.netns)
        _ip("link", "set", net.host_veth, "master", self.bridge)
        _ip("link", "set", net.host_veth, "up")
        inside = ("netns", "exec", net.netns, syspackages.which("ip") or "ip")
        _ip(*inside, "addr", "add", f"{net.address}/{self.network.prefixlen}", "dev", net.ns_veth)
        _ip(*inside, "link", "set", net.ns_veth, "up")
        _ip(*inside, "link", "set", "lo", "up")
        return net

    def cut(self, board: str) -> None:
        """Pull the board's cable: its bridge-side veth goes down (the board sees no carrier)."""
        _ip("link", "set", self.boards[board].host_veth, "down")

    def restore(self, board: str) -> None:
        _ip("link", "set", self.boards[board].host_veth, "up")

    def run_in(self, board: str, body: Callable[[], T]) -> T:
        """``body()`` in a thread inside ``board``'s network namespace; processes it starts stay
        there. Its result, or its exception, comes back to the caller."""
        path = os.path.join(NETNS_DIR, self.boards[board].netns)
        outcome: list[T] = []
        failure: list[BaseException] = []

        def enter_and_run() -> None:
            try:
                _enter_netns(path)  # this thread only: network namespaces are per task
                outcome.append(body())
            except BaseException as err:  # handed to the caller's thread
                failure.append(err)

        thread = threading.Thread(target=enter_and_run, name=f"netns-{board}")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        return outcome[0]

    def pids(self, board: str) -> list[int]:
        """The processes in ``board``'s namespace (all of them descend from what we started)."""
        done = _ip("netns", "pids", self.boards[board].netns, check=False)
        return [int(p) for p in done.stdout.split() if p.isdigit()]

    def close(self) -> list[str]:
        """End what is still running in the namespaces (by pid), remove the veths, namespaces
        and bridge; the names that could not be removed (normally none)."""
        for board in list(self.boards):
            for pid in self.pids(board):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for net in self.boards.values():
            _ip("link", "del", net.host_veth, check=False)  # takes its peer with it
            _ip("netns", "del", net.netns, check=False)
        if self._made_bridge:
            _ip("link", "del", self.bridge, check=False)
        self.boards.clear()
        left = self.leftovers()
        self._made_bridge = False
        return left

    def leftovers(self) -> list[str]:
        """Namespaces and links of this fabric that exist (after :meth:`close`: none)."""
        return [name for name in _our_names() if name.startswith(self.tag) and name[len(self.tag)] in "bhn-"]


def _enter_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _our_names() -> list[str]:
    names = []
    done = _ip("-o", "link", "show", check=False)
    for line in done.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    try:
        names.extend(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        pass
    return [name for name in names if _OURS.match(name)]


def sweep_stale() -> list[str]:
    """Remove fabrics whose creating process is gone (a run killed before its cleanup)."""
    removed = []
    for name in _our_names():
        match = _OURS.match(name)
        if match is None or is_pid_alive(int(match.group(1))):
            continue
        if "-" in name:
            _ip("netns", "del", name, check=False)
        else:
            _ip("link", "del", name, check=False)
        removed.append(name)
    return removed


def _free_network() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no address or route on this machine overlaps."""
    taken: list[ipaddress.IPv4Network] = []
    for args in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
        for word in _ip(*args, check=False).stdout.split():
            try:
                net = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if isinstance(net, ipaddress.IPv4Network):
                taken.append(net)
    space = ipaddress.IPv4Network("10.200.0.0/13")
    start = (os.getpid() * 7 + next(_counter)) % 2048
    for step in range(2048):
        candidate = ipaddress.IPv4Network((int(space.network_address) + (((start + step) % 2048) << 8), 24))
        if not any(candidate.overlaps(net) for net in taken if net.prefixlen > 0):
            return candidate
    raise RuntimeError("no free /24 in 10.200.0.0/13 for the test fabric")
