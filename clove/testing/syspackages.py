"""System packages the test tiers need (nats-server, prometheus, chromium, ...), by Debian name,
installed where missing — or the reason they are not, which the tests that need them skip with.

``make`` calls it before the tests (``python -m clove.testing.syspackages --for WHAT CMD=PKG
...``) and a test's fixture may call :func:`ensure` again: it costs nothing when the commands are
there. It installs only as root, with ``--no-install-recommends``, and runs ``apt-get update``
only when a first install attempt failed (a fresh machine's lists may be stale). Nothing here
fails a build: a package that cannot be installed is reported, and its tests skip.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Final

#: Where Debian puts daemons that are not on a user's PATH.
EXTRA_DIRS: Final = ("/usr/sbin", "/sbin")
APT_TIMEOUT: Final = 900.0


def which(command: str) -> str | None:
    """``command``'s path, looking in the sbin directories too."""
    found = shutil.which(command)
    if found is None:
        for directory in EXTRA_DIRS:
            path = os.path.join(directory, command)
            if os.access(path, os.X_OK):
                return path
    return found


def _apt_install(packages: Sequence[str]) -> str | None:
    """``None`` once installed, else why not."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    try:
        if subprocess.run(install, capture_output=True, env=env, timeout=APT_TIMEOUT, check=False).returncode == 0:
            return None
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=APT_TIMEOUT, check=False)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"apt-get failed: {err}"
    if done.returncode != 0:
        return f"apt-get install {' '.join(packages)} failed: {done.stderr.strip()[-300:]}"
    return None


def ensure(commands: Mapping[str, str]) -> str | None:
    """Make each command of ``{command: package}`` available. ``None`` when all are; else the
    reason (a sentence a test can skip with)."""
    missing = sorted({package for command, package in commands.items() if which(command) is None})
    if not missing:
        return None
    if os.environ.get("CLOVE_NO_APT"):
        return f"{', '.join(missing)} not installed (CLOVE_NO_APT is set)"
    if os.geteuid() != 0:
        return f"{', '.join(missing)} not installed, and installing needs root: apt-get install {' '.join(missing)}"
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing)} not installed, and this system has no apt-get"
    failure = _apt_install(missing)
    if failure is not None:
        return failure
    still = sorted(command for command in commands if which(command) is None)
    return f"installed {', '.join(missing)} but {', '.join(still)} is still missing" if still else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clove.testing.syspackages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--for", dest="purpose", default="tests", help="what needs them, for the message")
    parser.add_argument("pairs", nargs="+", metavar="COMMAND=PACKAGE")
    args = parser.parse_args(argv)
    commands: dict[str, str] = {}
    for pair in args.pairs:
        command, sep, package = pair.partition("=")
        if not sep or not command or not package:
            parser.error(f"expected COMMAND=PACKAGE, got {pair!r}")
        commands[command] = package
    reason = ensure(commands)
    if reason is not None:
        print(f"{args.purpose}: {reason}; those tests will skip", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
