"""The guest's packages by name: host tools through the system's apt, the kernel through a
private apt configuration so the host's sources, lists and caches stay untouched.

The guest runs on the host's own root filesystem, so the tools the guest tests use (can-utils,
the gpiod tools, iproute2, busybox for the initramfs) are ordinary host packages. The kernel comes
from Debian's bookworm-backports (6.12: cgroup v2 with every controller, Landlock ABI 6), fetched
with ``apt-get download`` and unpacked with ``dpkg-deb -x``; nothing is installed into ``/boot``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

HOST_PACKAGES = {
    # command that proves the package is there -> the package
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "depmod": "kmod",
    "cansend": "can-utils",
    "gpiodetect": "gpiod",
    "ip": "iproute2",
    "gcc": "gcc",
    "make": "make",
}
SUITE = "bookworm-backports"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class FetchError(Exception):
    """A package could not be fetched; the message names it and the command that failed."""


def _run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise FetchError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout


def install_host_packages() -> list[str]:
    """Install the host packages that are missing; answers the ones installed."""
    missing = sorted({pkg for cmd, pkg in HOST_PACKAGES.items() if shutil.which(cmd) is None
                      and not Path("/usr/sbin", cmd).exists()})
    if not missing:
        return []
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    return missing


def private_apt(root: Path) -> dict[str, str]:
    """An environment whose ``APT_CONFIG`` points at a private apt tree under ``root``."""
    apt = root / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "state" / "status").touch()
    (apt / "etc" / "sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    settings = {
        "Dir::State": apt / "state",
        "Dir::State::status": apt / "state" / "status",
        "Dir::Cache": apt / "cache",
        "Dir::Etc::SourceList": apt / "etc" / "sources.list",
        "Dir::Etc::SourceParts": apt / "etc" / "sources.list.d",
        "Dir::Etc::Preferences": apt / "etc" / "preferences",
        "Dir::Etc::PreferencesParts": apt / "etc" / "preferences.d",
    }
    lines = [f'{key} "{value}";' for key, value in settings.items()]
    lines += ['APT::Architecture "amd64";', 'APT::Sandbox::User "root";']
    conf = apt / "apt.conf"
    conf.write_text("\n".join(lines) + "\n")
    return {**os.environ, "APT_CONFIG": str(conf)}


def kernel_version(env: dict[str, str]) -> str:
    """The versioned image ``linux-image-amd64`` points at, e.g. ``6.12.95+deb12-amd64``."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"], env=env)
    match = re.search(r"Depends: linux-image-(\S+-amd64)\b", out)
    if match is None:
        raise FetchError(f"cannot tell the kernel version from `apt-cache depends linux-image-amd64`: {out!r}")
    return match.group(1)


def kernel_packages(version: str) -> list[str]:
    """The image (with its modules), and what building an out-of-tree module needs."""
    base = version.removesuffix("-amd64")
    series = ".".join(version.split(".")[:2])
    return [
        f"linux-image-{version}",
        f"linux-headers-{version}",
        f"linux-headers-{base}-common",
        f"linux-kbuild-{base}",
        f"linux-source-{series}",
    ]


def fetch_kernel(root: Path) -> tuple[str, Path]:
    """Download and unpack the kernel packages into ``root``; answers (version, unpacked tree).

    Once unpacked, later calls reuse the tree without asking the registry (``make clean-vm``
    or removing the cache folder fetches afresh)."""
    tree = root / "tree"
    done = sorted(tree.glob(".unpacked-*"))
    if done:  # set up before: no registry needed
        return done[-1].name.removeprefix(".unpacked-"), tree
    env = private_apt(root)
    _run(["apt-get", "update", "-qq"], env=env)
    version = kernel_version(env)
    debs = root / "debs"
    debs.mkdir(exist_ok=True)
    stamp = tree / f".unpacked-{version}"
    wanted = kernel_packages(version)
    have = {p.name.split("_")[0] for p in debs.glob("*.deb")}
    todo = [pkg for pkg in wanted if pkg not in have]
    if todo:
        _run(["apt-get", "download", "-q", *todo], env=env, cwd=debs)
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        if deb.name.split("_")[0] in wanted:
            _run(["dpkg-deb", "-x", str(deb), str(tree)])
    _run(["depmod", "-b", str(tree), version])
    stamp.touch()
    return version, tree
