"""A work dir with a hard size bound: an ext4 filesystem in a sparse image file beside the work
dir (``<state_dir>/agents/<id>/work.img``), attached to a loop device and mounted over the work
dir *inside the agent's own mount namespace*.

Why this and not something else (``[limits] workdir_bytes``):

* A **quota** (ext4/xfs project quotas) needs the state dir's filesystem to be made and mounted
  with project quotas (``-O project,quota``, ``prjquota``): an operator's decision about the whole
  disk, rarely true on a board, never something the kernel can switch on by itself.
* A **tmpfs** with ``size=`` bounds bytes but lives in RAM and is gone when the agent's mount
  namespace goes, i.e. at every restart: the work dir is meant to persist across incarnations.
* **RLIMIT_FSIZE** caps one file's size, not the total: not a bound on the directory.
* A **loop-mounted ext4 image** is a real bound (``ENOSPC`` at the image's size), persists with
  the agent's record (restarts reuse it; ``agent.remove`` deletes it with the agent's dir), costs
  disk only for what is written (the image is sparse), and needs only what nearly every Linux
  board has: the loop driver (``/dev/loop-control``), ext4 and ``mkfs.ext4`` (e2fsprogs).

The mount lives only in the agent's mount namespace (and the commands ``exec`` runs there): the
host never sees it, so nothing is left mounted when the agent or the kernel dies. The loop
device is attached with ``LO_FLAGS_AUTOCLEAR`` and detaches itself when the namespace's last
process is gone. The kernel reaches the agent's files through ``/proc/<pid>/root``
(:mod:`clove.kernel.services.files`), which shows the mount.

Two processes share the work. The zygote's child C, still in the host's namespaces, makes the
image once per agent (:func:`create`; ``mkfs`` in the agent's pid namespace would take a pid
there) and attaches it to a loop device (:func:`attach`): the loop device holds the image open
for writing, and had that open happened in the agent's mount namespace, its root mount could
not be made read-only (``EBUSY``). G, the namespace's init and C's child, mounts the device
(:func:`mount`) while it builds the agent's mount view. Without loop devices, ext4 or
``mkfs.ext4`` (:func:`unsupported` says which), the work dir is the plain directory and the
isolation report says it is not bounded.

The host sees the work dir as an empty mount point: while the agent runs, its files are at
``/proc/<pid>/root<work dir>``; otherwise ``mount -o loop,ro work.img /mnt`` shows them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import functools
import os
import shutil
import subprocess
import time
from typing import Final

from clove.sandbox import linux

#: Where ``mkfs.ext4`` is looked for (``sbin`` is often missing from a service's ``PATH``).
MKFS_DIRS: Final = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
#: How long C waits for an image to be released by a previous incarnation's loop device.
RELEASE_WAIT_S: Final = 5.0

_LOOP_CTL_GET_FREE: Final = 0x4C82
_LOOP_SET_FD: Final = 0x4C00
_LOOP_CLR_FD: Final = 0x4C01
_LOOP_SET_STATUS64: Final = 0x4C04
_LOOP_GET_STATUS64: Final = 0x4C05
_LOOP_CONFIGURE: Final = 0x4C0A  # Linux 5.8+
_LO_FLAGS_AUTOCLEAR: Final = 4

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_uint8 * 64),
        ("lo_crypt_name", ctypes.c_uint8 * 64),
        ("lo_encrypt_key", ctypes.c_uint8 * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class _LoopConfig(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32), ("info", _LoopInfo64), ("reserved", ctypes.c_uint64 * 8)]


def image_for(work: str) -> str:
    """The image file of the work dir ``work`` (beside it, out of the agent's sight)."""
    return work.rstrip("/") + ".img"


def find_mkfs() -> str | None:
    for directory in (*MKFS_DIRS, *os.environ.get("PATH", "").split(os.pathsep)):
        path = os.path.join(directory, "mkfs.ext4")
        if directory and os.access(path, os.X_OK):
            return path
    return shutil.which("mkfs.ext4")


@functools.cache
def unsupported() -> str | None:
    """Why a size-bounded work dir cannot be made on this machine, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "the kernel is not root"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control)"
    if find_mkfs() is None:
        return "no mkfs.ext4 (e2fsprogs)"
    try:
        with open("/proc/filesystems") as f:
            if "ext4" not in f.read().split():
                return "no ext4 in this kernel"
    except OSError as err:
        return f"cannot read /proc/filesystems: {err.strerror}"
    return None


def create(image: str, size: int, uid: int) -> bool:
    """Make the image (sparse, ``size`` bytes, an empty ext4 whose root belongs to ``uid``) unless
    it exists; returns whether it made one. Written under another name and renamed, so a crash
    never leaves a half-made image behind.

    :raises OSError: the file or ``mkfs.ext4`` failed (the message carries mkfs's own words).
    """
    if os.path.exists(image):
        return False
    mkfs = find_mkfs()
    if mkfs is None:
        raise OSError(errno.ENOENT, "mkfs.ext4 not found")
    partial = image + ".new"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    # -m 0: no blocks reserved for root (the agent is never root); lazy_*_init: the image is a
    # fresh sparse file that already reads as zeros, so nothing needs writing (400 KiB on disk
    # for 256 MiB, about 3 ms); -b 4096: ordinary pages, not the 1 KiB blocks of a "small" fs.
    argv = [mkfs, "-q", "-F", "-b", "4096", "-m", "0", "-L", "clove-work",
            "-E", f"root_owner={uid}:{uid},lazy_itable_init=1,lazy_journal_init=1,nodiscard", partial]  # fmt: skip
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        os.unlink(partial)
        raise OSError(errno.EIO, f"mkfs.ext4 failed: {err}") from None
    if done.returncode != 0:
        os.unlink(partial)
        words = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise OSError(errno.EIO, f"mkfs.ext4 of {size} bytes failed: {words[-1] if words else done.returncode}")
    os.rename(partial, image)
    return True


def _ioctl(fd: int, request: int, arg: object) -> None:
    if _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), arg) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _holders(image: str) -> list[str]:
    """The loop devices whose backing file is ``image`` (by device and inode)."""
    st = os.stat(image)
    found = []
    try:
        names = [n for n in os.listdir("/sys/block") if n.startswith("loop")]
    except OSError:
        return []
    for name in names:
        if not os.path.exists(f"/sys/block/{name}/loop/backing_file"):
            continue  # not attached
        try:
            fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            info = _LoopInfo64()
            _ioctl(fd, _LOOP_GET_STATUS64, ctypes.byref(info))
        except OSError:
            continue  # detached meanwhile
        finally:
            os.close(fd)
        dev = info.lo_device  # the kernel's new_encode_dev()
        major, minor = (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)
        if info.lo_inode == st.st_ino and (major, minor) == (os.major(st.st_dev), os.minor(st.st_dev)):
            found.append(f"/dev/{name}")
    return found


def _wait_released(image: str) -> None:
    """Wait until no loop device holds ``image``: mounting one ext4 through two devices at once
    would corrupt it. A previous incarnation's mount goes with its namespace's last process,
    which normally happened before its end was reported (a command that ``exec`` still runs
    there can hold it a little longer)."""
    deadline = time.monotonic() + RELEASE_WAIT_S
    while True:
        holders = _holders(image)
        if not holders:
            return
        if time.monotonic() > deadline:
            raise OSError(errno.EBUSY, f"work dir image {image} is still attached to {', '.join(holders)}")
        time.sleep(0.01)


def attach(image: str, *, fresh: bool = False) -> tuple[int, str]:
    """Attach ``image`` to a free loop device that detaches itself once unmounted and closed;
    returns the device's fd (close it once mounted) and path. Waits first until no other loop
    device holds the image, unless it is ``fresh`` (just made: nothing can hold it, and the
    check reads every attached loop device, which costs a spawn time with many agents).

    :raises OSError: the image is still held, or no loop device could be attached.
    """
    if not fresh:
        _wait_released(image)
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(32):  # another process may take the free device between the two calls
            ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
            try:
                number = fcntl.ioctl(ctl, _LOOP_CTL_GET_FREE)
            finally:
                os.close(ctl)
            path = f"/dev/loop{number}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                config = _LoopConfig(fd=backing)
                config.info.lo_flags = _LO_FLAGS_AUTOCLEAR
                try:
                    _ioctl(fd, _LOOP_CONFIGURE, ctypes.byref(config))
                except OSError as err:
                    if err.errno not in (errno.EINVAL, errno.ENOTTY):
                        raise
                    _ioctl(fd, _LOOP_SET_FD, ctypes.c_ulong(backing))  # before Linux 5.8
                    try:
                        _ioctl(fd, _LOOP_SET_STATUS64, ctypes.byref(config.info))
                    except OSError:
                        _ioctl(fd, _LOOP_CLR_FD, ctypes.c_ulong(0))
                        raise
            except OSError as err:
                os.close(fd)
                if err.errno == errno.EBUSY:
                    continue
                raise OSError(err.errno, f"attaching {image} to {path}: {err.strerror}") from None
            return fd, path
        raise OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(backing)


def mount(fd: int, device: str, target: str, uid: int) -> None:
    """Mount the attached loop ``device`` (its fd from :func:`attach`, closed here) over
    ``target`` in the caller's (private) mount namespace, owned by ``uid`` and private to it
    (0700), nosuid and nodev.

    :raises OSError: the mount failed.
    """
    try:
        linux.mount(device, target, "ext4", linux.MS_NOSUID | linux.MS_NODEV, "errors=remount-ro")
    finally:
        os.close(fd)  # the mount holds the device now; unmounted, it detaches itself
    own(target, uid)


def own(target: str, uid: int) -> None:
    """Give the mounted work filesystem at ``target`` to ``uid``, private to it (0700); a spare
    mounts a fresh image ahead of time and hands it over this way once claimed."""
    os.chown(target, uid, uid)
    os.chmod(target, 0o700)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(target, "lost+found"))  # e2fsck makes it again if it ever needs it
