"""A tiny initramfs: static busybox, the five modules that reach the host's root, and ``/init``.

``/init`` mounts the host's ``/`` (virtio-9p tag ``hostroot``, read-only) under a tmpfs overlay,
copies the second stage (:mod:`hil.vm.stage2`) into it and ``switch_root``s there (inside a plain
``chroot`` the guest could not create user namespaces). The archive is the kernel's "newc" cpio
format, written here so no ``cpio`` binary is needed; modules are stored decompressed because
busybox ``insmod`` reads only plain ELF.
"""

from __future__ import annotations

import gzip
import io
import lzma
import stat
from pathlib import Path

# What mounting the host's root needs, in load order (the image has virtio-pci built in).
ROOT_MODULES = ("fs/netfs/netfs", "net/9p/9pnet", "net/9p/9pnet_virtio", "fs/9p/9p", "fs/overlayfs/overlay")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {{ echo "clove-guest: $*"; echo b > /proc/sysrq-trigger; }}
{insmods}
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "cannot mount the host root"
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/upper /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/upper,workdir=/upper/work /newroot || fail "no overlay"
cp /stage2 /newroot/clove-guest-stage2
umount /proc /sys /dev
exec switch_root /newroot /bin/sh /clove-guest-stage2
"""


class CpioWriter:
    """The "newc" cpio format (``070701``): each entry a 110-byte ASCII header, name, data."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        self._out.write(header + encoded)
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


def _module_bytes(modules: Path, rel: str) -> bytes:
    for suffix, opener in ((".ko", None), (".ko.xz", lzma.decompress)):
        path = modules / "kernel" / (rel + suffix)
        if path.exists():
            raw = path.read_bytes()
            return opener(raw) if opener else raw
    raise FileNotFoundError(f"module {rel} not found under {modules}")


def build(modules: Path, stage2: str, busybox: Path, out: Path) -> Path:
    """Write the gzip'd initramfs to ``out`` from the unpacked ``/lib/modules/<version>``."""
    cpio = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "modules"):
        cpio.directory(d)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    names = []
    for rel in ROOT_MODULES:
        name = rel.rsplit("/", 1)[1] + ".ko"
        cpio.file(f"modules/{name}", _module_bytes(modules, rel))
        names.append(name)
    insmods = "\n".join(f"insmod /modules/{n} || fail 'insmod {n}'" for n in names)
    cpio.file("init", INIT.format(insmods=insmods).encode(), 0o755)
    cpio.file("stage2", stage2.encode(), 0o755)
    out.write_bytes(gzip.compress(cpio.finish(), compresslevel=6))
    return out
