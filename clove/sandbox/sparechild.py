"""A spare: an agent's process tree made ahead of time, as far as it can go without knowing the
agent. The zygote's side is :mod:`clove.sandbox.spares`, the kernel's (how many, when)
:mod:`clove.kernel.supervision.spares`.

What a spawn would otherwise pay before the agent's code runs, and the spare pays instead:

* joining a fresh cgroup: the first cgroup v1 attach after an idle spell waits for an RCU grace
  period (~10 ms);
* the work dir's image: ``mkfs.ext4`` (5 to 20 ms), its loop device (~3 ms), the ext4 mount
  (~7 ms);
* new uts, ipc, pid and net namespaces (~1 ms, most of it the net namespace), the fork of G.

::

    zygote
     └─ C   setsid; join the spare's cgroup; make and attach an empty image (owned by root);
         │  unshare uts, ipc, pid and net; fork G; say "ready" and wait for a claim on ``ctl``
         └─ G   pid 1 of the new pid namespace: its own mount namespace (private), the image
                mounted on the staging dir; wait for the claim from C

A claim hands C the spec and the log pipe. C, still in the host's mount namespace, links the
staged image to the agent's image path, passes everything on to G, reports G and exits: from
here the tree is the one :func:`~clove.sandbox.children.run_c` makes. G moves the work mount over
the agent's work dir and gives it to the agent's uid, rejoins the host's network if the agent has
the host's (``network = "full"``; a proxied agent keeps the spare's own namespace), and goes on
as any G (:func:`~clove.sandbox.children.run_g`): the agent's view, its relays, A. A
restart (the agent's image exists) or another image size drops the staged image, and C makes or
attaches the agent's own, as a fresh C would.

Nothing of an agent is in a spare before its claim: the uid, the limits (the kernel writes them
into the spare's cgroup at the claim), the script, the exposures and hidden paths, the hostname,
Landlock and seccomp all come with the spec, and each spare serves one spawn. A spare that fails
before its claim exits; the claim then finds no spare there and the zygote forks anew.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import select
import signal
import socket
from typing import NoReturn

import msgpack

from clove.sandbox import confine, linux, workdir
from clove.sandbox.children import fail, run_g, write_status
from clove.sandbox.spec import SpawnSpec, StagedImage

MAX_SPEC = 1 << 20
#: C's namespaces (the mount namespace is G's own: C stays in the host's to attach images).
_NAMESPACES = linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID | linux.CLONE_NEWNET
_ENTERED = ("mount", "uts", "ipc", "pid", "net")  # in the order unshare_namespaces reports them
_STAGED, _BARE = b"staged", b"bare"
#: What C tells the zygote on ``ctl`` once the spare is made.
READY = b"ready"
#: A spare is made at this nice value, so that on a busy board the spawns being started (and
#: the agents running) come first; the zygote puts the whole tree back to 0 when it is claimed
#: (:meth:`clove.sandbox.spares.Spares.take`), and G makes sure of it for itself and A.
NICE = 10


def run_spare(ctl: socket.socket, attach: tuple[str, ...], stage: StagedImage, status_w: int) -> NoReturn:
    """C of a spare (see the module docstring). Exits at EOF on ``ctl`` (dropped, or the
    zygote is gone) and when G is gone."""
    try:
        linux.set_parent_death_signal(signal.SIGKILL)  # dies with the zygote
        os.setsid()  # the tree's process group and session, as in run_c
        os.setpriority(os.PRIO_PROCESS, 0, NICE)  # G and mkfs inherit it; a claim undoes it
        confine.join_cgroups(attach)
    except BaseException as err:
        fail(status_w, "cgroup", err)
    device = _stage_image(stage)
    step = "namespaces"
    try:
        host_net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)  # for agents with network
        linux.unshare(_NAMESPACES)
        to_g, from_c = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        step = "fork"  # fails when a claim wrote a pids limit the spare is already at
        g = os.fork()
    except BaseException as err:
        stage.discard()
        fail(status_w, step, err)
    if g == 0:
        ctl.close()
        to_g.close()
        _run_g(from_c, stage, device, host_net, status_w)
    from_c.close()
    os.close(host_net)
    if device is not None:
        os.close(device[0])  # G holds it until its mount does
    _wait_for_claim(ctl, to_g, stage, g, status_w)


def _stage_image(stage: StagedImage) -> tuple[int, str] | None:
    """Make and attach the empty image (owned by root until claimed, see ``workdir.own``);
    ``None`` when there is none to make or it failed (the claim then makes the agent's own, and
    reports why if that fails too)."""
    if stage.path is None or stage.size <= 0:
        return None
    try:
        if stage.template is None or not _copy_template(stage.template, stage.path, stage.size):
            workdir.create(stage.path, stage.size, 0)
        return workdir.attach(stage.path, fresh=True)
    except OSError:
        stage.discard()
        return None


def _copy_template(template: str, image: str, size: int) -> bool:
    """Copy the empty image ``template`` (made once, by whichever spare needs it first) to
    ``image``, its data extents only: about 400 KiB for 256 MiB, well under a millisecond where
    ``mkfs.ext4`` takes 5 to 20. False when that cannot be done here (the caller runs mkfs)."""
    partial = image + ".new"
    try:
        if not os.path.exists(template):
            # Made under a name of this process's own, then renamed: two spares making it at
            # once never write the same file, and the last rename wins with a whole image.
            mine = f"{template}.{os.getpid()}"
            workdir.create(mine, size, 0)
            os.rename(mine, template)
        src = os.open(template, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _copy_extents(src, dst)
                os.ftruncate(dst, os.fstat(src).st_size)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        os.rename(partial, image)
    except OSError:
        for path in (partial, f"{template}.{os.getpid()}", f"{template}.{os.getpid()}.new"):
            with contextlib.suppress(OSError):
                os.unlink(path)
        return False
    return True


def _copy_extents(src: int, dst: int) -> None:
    offset, end_of_file = 0, os.fstat(src).st_size
    while offset < end_of_file:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:
                return  # only a hole is left
            raise
        end = os.lseek(src, start, os.SEEK_HOLE)
        while start < end:
            copied = os.copy_file_range(src, dst, end - start, start, start)
            if copied <= 0:
                raise OSError(errno.EIO, "copy_file_range copied nothing")
            start += copied
        offset = end


def _wait_for_claim(ctl: socket.socket, to_g: socket.socket, stage: StagedImage, g: int, status_w: int) -> NoReturn:
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    poller.register(to_g, select.POLLIN)
    staged: bool | None = None
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if to_g.fileno() in ready:
            if staged is None:
                staged = _g_report(to_g)  # G's one message; None: G is gone
                if staged is not None:
                    with contextlib.suppress(OSError):
                        ctl.send(READY)  # the zygote tells the kernel, which makes the next one
            elif _g_gone(to_g):
                staged = None
            if staged is None:  # so is the spare; a claim already sent here fails with this
                stage.discard()
                fail(status_w, "spare", OSError("the spare's init is gone"))
        if ctl.fileno() in ready:
            break
    claim = _receive(ctl, max_fds=1)
    if claim is None:  # dropped, or the zygote is gone: G reads EOF and exits too
        stage.discard()
        os._exit(0)
    ctl.close()
    if staged is None:
        staged = _g_report(to_g)  # claimed before G was ready: it is nearly
    data, fds = claim
    if staged is None or len(fds) != 1:
        fail(status_w, "spare", OSError("the spare's init is gone" if staged is None else "no log fd with the spec"))
    _hand_over(data, fds[0], to_g, stage, staged, g, status_w)


def _g_gone(to_g: socket.socket) -> bool:
    """Whether G's socket reads EOF (G sends one report only)."""
    try:
        return not to_g.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True


def _g_report(to_g: socket.socket) -> bool | None:
    try:
        report = to_g.recv(16)
    except OSError:
        return None
    return None if not report else report == _STAGED


def _hand_over(data: bytes, log_fd: int, to_g: socket.socket, stage: StagedImage, staged: bool, g: int, status_w: int) -> NoReturn:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # claimed: a spawn waits (the zygote may have done it)
        spec = SpawnSpec.from_wire(msgpack.unpackb(data, raw=False))
        if not spec.namespaces:
            raise OSError("a spare starts sandboxed agents only")
        how, device, fds = _place_work(spec, stage, staged)
    except BaseException as err:
        fail(status_w, "workdir", err)
    message = msgpack.packb({"spec": data, "work": how, "device": device}, use_bin_type=True)
    try:
        to_g.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [log_fd, *fds]))])
    except OSError as err:
        fail(status_w, "spare", err)
    write_status(status_w, {"g": g})
    os._exit(0)


def _place_work(spec: SpawnSpec, stage: StagedImage, staged: bool) -> tuple[str, str, list[int]]:
    """Where the agent's work dir comes from: ``staged`` (the spare's image, now linked at the
    agent's image path), ``attached`` (the agent's own image on a loop device: its fd and
    device) or ``none`` (no bounded work dir for this agent)."""
    wanted = spec.workdir_image is not None and bool(spec.workdir_bytes) and spec.uid is not None
    if staged and wanted and stage.path is not None and spec.workdir_bytes == stage.size:
        try:
            os.link(stage.path, str(spec.workdir_image))  # never over an existing image (a restart)
        except OSError:
            pass
        else:
            stage.discard()
            return "staged", "", []
    stage.discard()
    if wanted:
        confine.make_work_image(spec)
        attached = confine.work_mount_of(spec)
        if attached is not None:
            return "attached", attached[1], [attached[0]]
    return "none", "", []


def _run_g(from_c: socket.socket, stage: StagedImage, device: tuple[int, str] | None, host_net: int, status_w: int) -> NoReturn:
    """G of a spare: its mount namespace and the staged mount, then wait for the claim."""
    try:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    except BaseException:
        os._exit(1)  # no spare: C reads EOF
    staged = False
    if device is not None:
        try:
            workdir.mount(device[0], device[1], stage.mount, 0)
            staged = True
        except OSError:
            pass
    try:
        from_c.send(_STAGED if staged else _BARE)
    except OSError:
        os._exit(1)
    claim = _receive(from_c, max_fds=2)
    if claim is None:
        os._exit(0)  # dropped: the namespaces and the staged mount go with this process
    data, fds = claim
    step = "spare"
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # the agent runs at the ordinary priority
        message = msgpack.unpackb(data, raw=False)
        spec = SpawnSpec.from_wire(msgpack.unpackb(message["spec"], raw=False))
        entered = list(_ENTERED)
        step = "namespaces"
        if spec.network:
            linux.setns(host_net, linux.CLONE_NEWNET)
            entered.remove("net")
        os.close(host_net)
        step = "workdir"
        work_mount: tuple[int, str, str, int] | None = None
        if message["work"] == "staged" and spec.uid is not None:
            linux.mount(stage.mount, spec.cwd, None, linux.MS_MOVE)
            workdir.own(spec.cwd, spec.uid)
        else:
            if staged:
                linux.umount(stage.mount, linux.MNT_DETACH)
            if message["work"] == "attached":
                if len(fds) != 2 or spec.uid is None:
                    raise OSError("no loop device came with the spec")
                work_mount = (fds[1], str(message["device"]), spec.cwd, spec.uid)
        from_c.close()
    except BaseException as err:
        fail(status_w, step, err)
    run_g(spec, fds[0], status_w, entered, work_mount)


def _receive(sock: socket.socket, *, max_fds: int) -> tuple[bytes, list[int]] | None:
    """One message and the fds it carries; ``None`` at EOF."""
    fds = array.array("i")
    for _ in range(2):
        try:
            data, ancdata, _, _ = sock.recvmsg(MAX_SPEC, socket.CMSG_SPACE(max_fds * fds.itemsize))
            break
        except ConnectionResetError:
            # The zygote sent the claim and closed its end with our "ready" still unread: Linux
            # reports that as ECONNRESET once, before the claim that is still queued here.
            continue
        except OSError:
            return None
    else:
        return None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    return data, list(fds)
