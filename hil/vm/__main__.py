"""``python -m hil.vm setup`` fills the cache; ``python -m hil.vm run [--timeout S] -- CMD`` boots
the guest once and runs CMD (shell) from the checkout, printing its output; exit status is the
command's (125 when the guest never ran it)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from hil.vm import cache as vm_cache
from hil.vm import fetch, gpiosim, guest, initramfs, stage2

CHECKOUT = Path(__file__).resolve().parents[2]


def setup(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    (root / vm_cache.UNAVAILABLE).unlink(missing_ok=True)
    started = time.monotonic()
    try:
        installed = fetch.install_host_packages()
        if installed:
            print(f"installed host packages: {' '.join(installed)}")
        version, tree = fetch.fetch_kernel(root)
    except (fetch.FetchError, OSError) as err:
        # The guest tier then skips with this reason rather than failing the whole test run.
        (root / vm_cache.UNAVAILABLE).write_text(f"test guest unavailable: {err}\n")
        print(f"test guest unavailable: {err}", file=sys.stderr)
        return 0
    modules = tree / "lib" / "modules" / version
    image = root / f"initramfs-{version}.cpio.gz"
    initramfs.build(modules, stage2.render(version, modules), Path("/bin/busybox"), image)
    module, why = gpiosim.build(tree, version, root / f"gpio-sim-{version}")
    vm_cache.VmCache(
        root=root, kernel_version=version, vmlinuz=tree / "boot" / f"vmlinuz-{version}", modules=modules,
        initramfs=image, gpio_sim=module, gpio_sim_reason=why,
    ).save()  # fmt: skip
    print(f"test guest ready in {root}: kernel {version}, gpio-sim {'built' if module else 'unavailable: ' + why} "
          f"({time.monotonic() - started:.1f} s)")
    return 0


def run(command: str, timeout: float, results: Path | None) -> int:
    cache = vm_cache.load()
    if isinstance(cache, str):
        print(cache, file=sys.stderr)
        return 125
    with tempfile.TemporaryDirectory(prefix="clove-guest-") as tmp:
        result = guest.run(command, cache=cache, results=results or Path(tmp), cwd=CHECKOUT, timeout=timeout)
    sys.stdout.write(result.output)
    boot = "?" if result.boot_seconds is None else f"{result.boot_seconds:.1f}"
    print(f"[guest: boot to command {boot} s, total {result.seconds:.1f} s"
          f"{', timed out' if result.timed_out else ''}]", file=sys.stderr)
    if result.exit_code is None:
        sys.stderr.write(result.console[-4000:])
        return 125
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.vm")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("setup", help="fetch the kernel, build the initramfs and gpio-sim into the cache")
    r = sub.add_parser("run", help="boot the guest and run a shell command from the checkout")
    r.add_argument("--timeout", type=float, default=600.0)
    r.add_argument("--results", type=Path, help="keep the results share here (default: a temporary folder)")
    r.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.action == "setup":
        return setup(vm_cache.cache_dir())
    command = " ".join(a for a in args.command if a != "--")
    return run(command, args.timeout, args.results)


if __name__ == "__main__":
    sys.exit(main())
