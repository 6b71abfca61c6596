"""Tries the ways out of a sandbox that seccomp must close (new namespaces through clone and
clone3, socket families beyond the allowlist) and the ordinary things that must keep working
(fork, threads, subprocess, Unix sockets); reports one JSON line, then waits.

argv[1]: "net" when the agent was given network (the networked checks run then).
Syscall numbers are those of x86_64 and aarch64.
"""
import ctypes
import errno
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
AF_VSOCK = 40
NETLINK_AUDIT = 9
NR = {"x86_64": {"clone": 56, "clone3": 435, "socket": 41}, "aarch64": {"clone": 220, "clone3": 435, "socket": 198}}[platform.machine()]

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
networked = sys.argv[1:] == ["net"]
report = {"network": networked}


def attempt(key, fn):
    try:
        report[key] = {"ok": True, "value": fn()}
    except OSError as err:
        report[key] = {"ok": False, "errno": err.errno, "error": f"{type(err).__name__}: {err}"}
    except Exception as err:  # the point is to record what failed
        report[key] = {"ok": False, "errno": None, "error": f"{type(err).__name__}: {err}"}


def check(ret):
    if ret < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return ret


def reap(pid):
    if pid == 0:
        os._exit(0)  # a child that should never have been: leave at once
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def raw_clone(flags):
    """clone(2) with no stack: fork-like, the child returns 0 on a copy of this stack."""
    ret = libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_ulong(flags | signal.SIGCHLD), None, None, None, ctypes.c_ulong(0))
    if ret == 0:
        os._exit(0)
    return reap(check(ret))


class CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]  # fmt: skip


def raw_clone3(flags):
    args = CloneArgs(flags=flags, exit_signal=signal.SIGCHLD)
    ret = libc.syscall(ctypes.c_long(NR["clone3"]), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if ret == 0:
        os._exit(0)
    return reap(check(ret))


def raw_socket(family, kind):
    os.close(check(libc.syscall(ctypes.c_long(NR["socket"]), ctypes.c_long(family), ctypes.c_long(kind), ctypes.c_long(0))))
    return True


def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def thread():
    out = []
    workers = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return sorted(out)


def sock(family, kind=socket.SOCK_STREAM, proto=0):
    socket.socket(family, kind, proto).close()
    return True


# Before any client exists: a fork-like raw clone must not copy libzmq's threads' state.
attempt("clone_newuser", lambda: raw_clone(CLONE_NEWUSER))
attempt("clone_newuser_newns", lambda: raw_clone(CLONE_NEWUSER | CLONE_NEWNS))
attempt("clone_newnet", lambda: raw_clone(CLONE_NEWNET))
attempt("clone_plain", lambda: raw_clone(0))
attempt("clone3", lambda: raw_clone3(CLONE_NEWUSER))
attempt("fork", fork)
attempt("thread", thread)
attempt("subprocess", lambda: subprocess.run(["true"], check=True).returncode)
attempt("unix", lambda: sock(socket.AF_UNIX))
attempt("socketpair", lambda: [s.close() for s in socket.socketpair()] and True)
attempt("socketpair_inet", lambda: [s.close() for s in socket.socketpair(socket.AF_INET)] and True)
attempt("vsock", lambda: sock(AF_VSOCK))
attempt("vsock_high_bits", lambda: raw_socket((1 << 32) | AF_VSOCK, socket.SOCK_STREAM))
attempt("packet", lambda: sock(socket.AF_PACKET, socket.SOCK_DGRAM))
attempt("inet", lambda: sock(socket.AF_INET))
attempt("inet6", lambda: sock(socket.AF_INET6))
attempt("netlink_route", lambda: sock(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE))
attempt("netlink_audit", lambda: sock(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT))
if networked:
    "localhost".encode("idna")  # the codec getaddrinfo needs, imported before it is timed
    attempt("if_nameindex", lambda: [name for _, name in socket.if_nameindex()])
    attempt("getaddrinfo", lambda: len(socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)))
report["errnos"] = {"EPERM": errno.EPERM, "ENOSYS": errno.ENOSYS}
print("REPORT " + json.dumps(report), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
