"""Build the ``clove`` and ``clove-sdk`` wheels from a checkout, and make an agent environment that
holds nothing of Clove but ``clove-sdk``: what an agent author gets from ``pip install clove-sdk``.

Used by ``tests/integration/test_sdk_distribution.py`` and ``bench/sdk_import.py``. Each wheel is
built from a snapshot of its sources in a scratch directory, so a build never writes ``build/``
or ``*.egg-info`` into the shared working tree (setuptools builds in place, and a ``build/``
inside ``clove_sdk/`` would hold a second copy of the package). Builds are isolated, as a user's
are: pip fetches the build backend (setuptools) from the package index.

An isolated build takes a dozen seconds or more on a loaded machine, so :func:`cached_dist`
keeps the wheels and the agent venv under a cache directory, each keyed by a digest of exactly
the sources it is built from: a change to any of them (the pyproject included) builds afresh.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CHECKOUT",
    "BuildUnavailable",
    "SdkDist",
    "build_clove_wheel",
    "build_sdk_wheel",
    "cached_dist",
    "default_cache",
    "make_sdk_venv",
]

#: The checkout this module lies in (``clove/testing/`` two levels down).
CHECKOUT = Path(__file__).resolve().parents[2]
#: What the root project's build reads (its pyproject's packages, readme and package data).
_ROOT_SOURCES = ("pyproject.toml", "README.md", "clove", "hil")
_ARTEFACT_PATTERNS = ("__pycache__", "*.pyc", "build", "*.egg-info", "dist")
_ARTEFACTS = shutil.ignore_patterns(*_ARTEFACT_PATTERNS)
_PIP_TIMEOUT_S = 300
#: A cache entry of other sources unused this long is removed.
_STALE_S = 3600.0


class BuildUnavailable(RuntimeError):
    """pip could not fetch what a build or an install needs (no package index reachable)."""


def _pip(args: Sequence[str], *, cwd: Path) -> None:
    """Run the project's pip; a failure raises with pip's own words (the last of them)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False,
    )  # fmt: skip
    if proc.returncode == 0:
        return
    output = (proc.stdout + proc.stderr)[-3000:]
    unreachable = ("No matching distribution found", "Could not find a version", "NewConnectionError")
    if any(marker in output for marker in unreachable):
        raise BuildUnavailable(f"pip {' '.join(args[:2])} could not fetch a requirement:\n{output}")
    raise RuntimeError(f"pip {' '.join(args)} failed ({proc.returncode}):\n{output}")


def _build(project: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.whl"))
    _pip(["wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(project)], cwd=project)
    (wheel,) = set(out.glob("*.whl")) - before
    return wheel


def build_sdk_wheel(scratch: Path, checkout: Path = CHECKOUT) -> Path:
    """The ``clove-sdk`` wheel built from ``checkout/clove_sdk`` (its own pyproject.toml).

    :raises BuildUnavailable: the build backend could not be fetched.
    """
    source = scratch / "sdk-src" / "clove_sdk"
    shutil.copytree(checkout / "clove_sdk", source, ignore=_ARTEFACTS)
    return _build(source, scratch / "dist")


def build_clove_wheel(scratch: Path, checkout: Path = CHECKOUT) -> Path:
    """The ``clove`` wheel built from the root pyproject.toml.

    :raises BuildUnavailable: the build backend could not be fetched.
    """
    source = scratch / "clove-src"
    source.mkdir(parents=True)
    for name in _ROOT_SOURCES:
        if (checkout / name).is_dir():
            shutil.copytree(checkout / name, source / name, ignore=_ARTEFACTS)
        else:
            shutil.copy2(checkout / name, source / name)
    return _build(source, scratch / "dist")


def make_sdk_venv(where: Path, sdk_wheel: Path, *, extras: Sequence[str] = ()) -> Path:
    """A fresh virtual environment at ``where`` (no system site-packages) holding ``clove-sdk``
    from ``sdk_wheel`` and its dependencies; returns its python. Without pip of its own: the
    project's pip installs into it (``pip --python``), which saves ensurepip's seconds.

    :raises BuildUnavailable: a dependency could not be fetched.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    requirement = f"{sdk_wheel}[{','.join(extras)}]" if extras else str(sdk_wheel)
    _pip(["--python", str(python), "install", "--quiet", requirement], cwd=where)
    return python


@dataclass(frozen=True, slots=True)
class SdkDist:
    """Both wheels, and the python of a venv that holds only ``clove-sdk`` (from ``sdk_wheel``)."""

    sdk_wheel: Path
    clove_wheel: Path
    python: Path


def default_cache() -> Path | None:
    """``$CLOVE_SDK_DIST_CACHE`` (empty: no cache), else ``~/.cache/clove-sdk-dist``."""
    configured = os.environ.get("CLOVE_SDK_DIST_CACHE")
    if configured is not None:
        return Path(configured) if configured else None
    return Path.home() / ".cache" / "clove-sdk-dist"


def _source_files(root: Path) -> Iterator[Path]:
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in _ARTEFACT_PATTERNS))
        for name in sorted(files):
            if not any(fnmatch.fnmatch(name, p) for p in _ARTEFACT_PATTERNS):
                yield Path(directory) / name


def _digest(paths: Sequence[Path], base: Path) -> str:
    """A digest of these files and trees (names and contents) and of the builder (Python, pip)."""
    h = hashlib.sha256(f"{sys.version}\0{importlib.metadata.version('pip')}\0".encode())
    for top in paths:
        for path in _source_files(top) if top.is_dir() else [top]:
            h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def _prune(cache: Path, current: Sequence[Path]) -> None:
    """Drop the entries of older source trees once unused for :data:`_STALE_S` (another run may
    still be using one it found a minute ago); ``current`` are marked used now."""
    for entry in current:
        (entry / "complete").touch()
    now = time.time()
    for entry in [*cache.glob("sdk-*"), *cache.glob("clove-*")]:
        marker = entry / "complete"
        used = marker.stat().st_mtime if marker.exists() else entry.stat().st_mtime
        if entry not in current and now - used > _STALE_S:
            shutil.rmtree(entry, ignore_errors=True)


def cached_dist(cache: Path | None, scratch: Path, checkout: Path = CHECKOUT) -> SdkDist:
    """Both wheels and an SDK-only venv, built unless ``cache`` holds them for these very sources
    (``cache=None``: built in ``scratch``, every time). Safe to call from concurrent runs: they
    take turns on a lock file in the cache.

    :raises BuildUnavailable: the build backend or a dependency could not be fetched.
    """
    if cache is None:
        sdk_wheel = build_sdk_wheel(scratch, checkout)
        return SdkDist(sdk_wheel, build_clove_wheel(scratch, checkout), make_sdk_venv(scratch / "venv", sdk_wheel))
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sdk_dir = cache / f"sdk-{_digest([checkout / 'clove_sdk'], checkout)}"
        clove_dir = cache / f"clove-{_digest([checkout / n for n in _ROOT_SOURCES], checkout)}"
        if not (sdk_dir / "complete").exists():
            shutil.rmtree(sdk_dir, ignore_errors=True)
            sdk_wheel = build_sdk_wheel(scratch / "sdk", checkout)
            (sdk_dir / "dist").mkdir(parents=True)
            shutil.copy2(sdk_wheel, sdk_dir / "dist" / sdk_wheel.name)
            make_sdk_venv(sdk_dir / "venv", sdk_dir / "dist" / sdk_wheel.name)
            (sdk_dir / "complete").touch()
        if not (clove_dir / "complete").exists():
            shutil.rmtree(clove_dir, ignore_errors=True)
            clove_wheel = build_clove_wheel(scratch / "clove", checkout)
            (clove_dir / "dist").mkdir(parents=True)
            shutil.copy2(clove_wheel, clove_dir / "dist" / clove_wheel.name)
            (clove_dir / "complete").touch()
        _prune(cache, [sdk_dir, clove_dir])
    (sdk_wheel,) = (sdk_dir / "dist").glob("*.whl")
    (clove_wheel,) = (clove_dir / "dist").glob("*.whl")
    return SdkDist(sdk_wheel, clove_wheel, sdk_dir / "venv" / "bin" / "python")
