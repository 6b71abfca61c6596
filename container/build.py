"""Build the Clove container image locally: no image registry, Debian packages only.

1. A minimal Debian bookworm root made with ``debootstrap --variant=minbase`` from the same apt
   mirror this machine uses, packed into a tarball cached outside the checkout and imported with
   ``podman import`` as ``localhost/clove-base:<key>``.
2. Wheels for clove and clove-sdk built with ``pip wheel`` from a copy of the checkout (so the
   shared working tree gets no ``build/`` or egg-info), their dependencies from pip's configured
   registries.
3. ``podman build --network=none`` of ``container/Containerfile`` on that base: the build itself
   reaches no network; it installs only the wheels in its context.

Podman runs with a private ``storage.conf``/``containers.conf`` (vfs storage, runc, cgroupfs)
under the cache dir, chosen through ``CONTAINERS_STORAGE_CONF``/``CONTAINERS_CONF``, so the
host's podman setup is neither used nor changed. The image carries a label with the hash of its
inputs; a build whose inputs have not changed reuses the image.

Usage: ``python container/build.py [--print-env] [--force]``. Prints the image reference on
stdout. Exit status 2 means the tools are missing and cannot be installed (the reason on stderr).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTAINER_DIR = REPO / "container"
SUITE = "bookworm"
#: What Clove needs on top of minbase: Python with venv (pip comes from ensurepip's wheel),
#: libseccomp for the seccomp filter, e2fsprogs for the size-capped agent work dirs.
BASE_PACKAGES = ("python3", "python3-venv", "libseccomp2", "e2fsprogs")
IMAGE = "localhost/clove"
INPUTS_LABEL = "org.clove.inputs"
#: What goes into the image, relative to the checkout: hashed for the cache label and copied.
SOURCES = ("pyproject.toml", "README.md", "clove", "hil", "clove_sdk", "examples/agents", "container")
#: Left out of the base tarball: nothing in the image reads them (about 45 MB of 176).
TRIMMED = ("usr/share/locale", "usr/share/doc", "usr/share/man", "usr/share/info")
SKIP_PARTS = {"__pycache__", ".mypy_cache", ".ruff_cache", "build", "dist"}


class BuildError(Exception):
    """A build step failed; the message says which and why."""


def cache_dir() -> Path:
    return Path(os.environ.get("CLOVE_IMAGE_CACHE") or Path.home() / ".cache" / "clove-image")


def log(msg: str) -> None:
    print(f"[clove-image] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, env: dict[str, str] | None = None, quiet: bool = True) -> str:
    """Run ``cmd``; on failure raise with the tail of its output."""
    proc = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    if proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-3000:]
        raise BuildError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{tail}")
    return proc.stdout or ""


# ---- tools --------------------------------------------------------------------------------------


#: (command, Debian package). runc, not podman's default crun: crun refuses a hybrid cgroup
#: layout (v1 controllers plus a cgroup2 mount that holds one), which boards like the
#: development machine have ("cgroups in hybrid mode not supported").
TOOLS = (("debootstrap", "debootstrap"), ("podman", "podman"), ("runc", "runc"))


def ensure_tools() -> None:
    """Install Debian's debootstrap, podman and runc where missing (root only)."""
    missing = [pkg for cmd, pkg in TOOLS if not shutil.which(cmd)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise BuildError(f"needs {', '.join(missing)}: install them as root (apt-get install {' '.join(missing)})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        run(["apt-get", "update"], env=env)
        run(install, env=env)


def podman_env(cache: Path) -> dict[str, str]:
    """Environment that points podman at private config and storage under ``cache``."""
    conf = cache / "podman"
    for sub in ("storage", "run", "tmp", "volumes", "static"):
        (conf / sub).mkdir(parents=True, exist_ok=True)
    cgroup_manager = "systemd" if Path("/run/systemd/system").is_dir() else "cgroupfs"
    (conf / "storage.conf").write_text(
        '[storage]\ndriver = "vfs"\n'
        f'graphroot = "{conf / "storage"}"\nrunroot = "{conf / "run"}"\n'
    )
    (conf / "containers.conf").write_text(
        "[engine]\n"
        'runtime = "runc"\n'
        f'cgroup_manager = "{cgroup_manager}"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{conf / "events.log"}"\n'
        f'tmp_dir = "{conf / "tmp"}"\n'
        f'volume_path = "{conf / "volumes"}"\n'
        f'static_dir = "{conf / "static"}"\n'
        "[containers]\n"
        f"default_ulimits = {ulimits()}\n"
        "[network]\n"
        f'network_config_dir = "{conf / "networks"}"\n'
    )
    # No registries at all: every image here is built locally, and nothing may be pulled.
    (conf / "registries.conf").write_text("unqualified-search-registries = []\n")
    return dict(
        os.environ,
        CONTAINERS_STORAGE_CONF=str(conf / "storage.conf"),
        CONTAINERS_CONF=str(conf / "containers.conf"),
        CONTAINERS_REGISTRIES_CONF=str(conf / "registries.conf"),
    )


def ulimits() -> str:
    """This process's nofile/nproc limits as containers.conf's ``default_ulimits``.

    Rootful podman otherwise asks for nofile=1048576, which fails ("error setting rlimit type 7")
    where the hard limit is lower and cannot be raised, as in a sandboxed CI host. nproc is capped
    at 32768: podman drops its own monitor (conmon) to that where it cannot raise it (measured),
    and a container cannot be given more than conmon has.
    """
    pairs = {"nofile": (resource.RLIMIT_NOFILE, None), "nproc": (resource.RLIMIT_NPROC, 32768)}
    values = []
    for name, (which, cap) in pairs.items():
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            hard = min(hard, cap) if cap else hard
            values.append(f'"{name}={min(soft, hard)}:{hard}"')
    return "[" + ", ".join(values) + "]"


# ---- base rootfs --------------------------------------------------------------------------------


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (``$CLOVE_IMAGE_MIRROR`` overrides)."""
    if os.environ.get("CLOVE_IMAGE_MIRROR"):
        return os.environ["CLOVE_IMAGE_MIRROR"]
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.is_file() and path.suffix in ("", ".list", ".sources"):
            texts.append(path.read_text(errors="replace"))
    for text in texts:
        # deb822 ("URIs: ...") and one-line ("deb URI suite ...") formats alike.
        for uri in re.findall(r"^\s*URIs:\s*(\S+)", text, re.M) + re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if "security" not in uri and "debian" in uri:
                return str(uri)
    return "http://deb.debian.org/debian"


def base_key(mirror: str) -> str:
    spec = f"{SUITE} minbase {mirror} {' '.join(BASE_PACKAGES)} {' '.join(TRIMMED)} root=0755"
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def base_tarball(cache: Path, mirror: str) -> Path:
    """The cached minbase rootfs tarball, made with debootstrap when missing."""
    tarball = cache / f"base-{SUITE}-{base_key(mirror)}.tar"
    if tarball.exists():
        return tarball
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        log(f"debootstrap {SUITE} (minbase) from {mirror}")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(root), mirror])
        # mkdtemp made it 0700, and the tarball's "./" becomes the image's "/": an agent's uid
        # could not even load libc.
        root.chmod(0o755)
        # apt's downloaded lists and packages are not needed in the image.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / sub).glob("*"):
                if item.is_file():
                    item.unlink()
        partial = tarball.with_suffix(".tar.part")
        trim = [f"--exclude=./{path}/*" for path in TRIMMED]
        run(["tar", "--numeric-owner", "--one-file-system", *trim, "-C", str(root), "-cf", str(partial), "."])
        partial.rename(tarball)
    finally:
        remove_rootfs(root)
    return tarball


def remove_rootfs(root: Path) -> None:
    """Delete a debootstrap tree, never anything mounted inside it.

    A failed debootstrap can leave /proc (or a bind-mounted /dev) mounted in the tree: unmount
    those first, and delete with ``--one-file-system`` so a mount that will not go is kept.
    """
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True)


def base_image(env: dict[str, str], cache: Path) -> str:
    mirror = apt_mirror()
    ref = f"localhost/clove-base:{SUITE}-{base_key(mirror)}"
    if subprocess.run(["podman", "image", "exists", ref], env=env).returncode != 0:
        tarball = base_tarball(cache, mirror)
        log(f"podman import {tarball.name} as {ref}")
        run(["podman", "import", str(tarball), ref], env=env)
    return ref


# ---- clove image --------------------------------------------------------------------------------


def source_files() -> list[Path]:
    """Files of the checkout that go into the image, in a stable order."""
    files: list[Path] = []
    for name in SOURCES:
        path = REPO / name
        if path.is_file():
            files.append(path)
            continue
        for item in sorted(path.rglob("*")):
            rel = item.relative_to(REPO)
            if item.is_file() and not SKIP_PARTS & set(rel.parts) and not any(p.endswith(".egg-info") for p in rel.parts) and item.suffix != ".pyc":
                files.append(item)
    return files


def inputs_hash(files: list[Path], base_ref: str) -> str:
    digest = hashlib.sha256(base_ref.encode())
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def image_with_inputs(env: dict[str, str], ref: str, inputs: str) -> bool:
    proc = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{index .Labels \"" + INPUTS_LABEL + "\"}}", ref],
        env=env, capture_output=True, text=True,
    )
    return proc.returncode == 0 and proc.stdout.strip() == inputs


def build_context(files: list[Path], context: Path) -> None:
    """Copy the sources into ``context`` and build the wheels there (outside the checkout)."""
    src = context / "src"
    for path in files:
        dest = src / path.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    log("pip wheel clove and clove-sdk with their dependencies")
    started = time.monotonic()
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(context / "wheels"), str(src / "clove_sdk"), f"{src}[console]"])
    log(f"wheels built in {time.monotonic() - started:.1f} s")


def build(force: bool = False) -> str:
    """Build (or reuse) the image; returns its reference."""
    ensure_tools()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    env = podman_env(cache)
    base = base_image(env, cache)
    inputs = inputs_hash(source_files(), base)
    ref = f"{IMAGE}:{inputs[:12]}"
    if not force and image_with_inputs(env, ref, inputs):
        log(f"{ref} is current (inputs {inputs[:12]})")
        return ref
    with tempfile.TemporaryDirectory(prefix="context-", dir=cache) as tmp:
        context = Path(tmp)
        build_context(source_files(), context)
        shutil.copy2(CONTAINER_DIR / "Containerfile", context / "Containerfile")
        log(f"podman build {ref}")
        run(
            ["podman", "build", "--network=none", "--pull=never", "--layers=false", "--build-arg", f"BASE={base}",
             "--label", f"{INPUTS_LABEL}={inputs}", "-t", ref, "-t", f"{IMAGE}:latest",
             "-f", str(context / "Containerfile"), str(context)],
            env=env,
        )
    prune(env, keep={ref, base})
    for tarball in cache.glob("base-*.tar"):
        if not base.endswith(tarball.stem.removeprefix("base-")):
            tarball.unlink()
    return ref


def prune(env: dict[str, str], keep: set[str]) -> None:
    """Drop this cache's older clove and base images: with vfs each one is a full copy."""
    listing = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], env=env, capture_output=True, text=True
    ).stdout.split()
    stale = [r for r in listing if r.split(":")[0] in (IMAGE, "localhost/clove-base") and r not in keep and not r.endswith(":latest")]
    if stale:
        subprocess.run(["podman", "rmi", *stale], env=env, capture_output=True)
    subprocess.run(["podman", "image", "prune", "-f"], env=env, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    parser.add_argument("--print-env", action="store_true", help="print the podman environment to use (shell syntax) and exit")
    args = parser.parse_args()
    cache = cache_dir()
    if args.print_env:
        cache.mkdir(parents=True, exist_ok=True)
        env = podman_env(cache)
        for key in ("CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF", "CONTAINERS_REGISTRIES_CONF"):
            print(f"export {key}={env[key]}")
        return 0
    started = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    try:
        # One build at a time per cache: two test sessions would race on the base tarball.
        with open(cache / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ref = build(force=args.force)
    except BuildError as err:
        log(str(err))
        return 2 if "install them as root" in str(err) else 1
    log(f"done in {time.monotonic() - started:.1f} s")
    print(ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
