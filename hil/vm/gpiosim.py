"""The ``gpio-sim`` module, built out of tree: Debian's kernels do not ship it.

Its two sources (``drivers/gpio/gpio-sim.c`` and ``kernel/irq/irq_sim.c``, GPL-2.0) come from
Debian's ``linux-source`` package unpacked in the cache, never from the checkout, and build
against the unpacked ``linux-headers``/``linux-kbuild`` packages in a few seconds. ``irq_sim.c``
calls ``handle_simple_irq(irq_to_desc(n))``, which modules cannot reach (``irq_to_desc`` is not
exported); ``generic_handle_irq(n)`` does the same for a simple-irq chip and is exported.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SOURCES = ("drivers/gpio/gpio-sim.c", "kernel/irq/irq_sim.c")
# irq_sim.c is built-in code elsewhere: as a module it needs a licence tag to use GPL symbols.
PATCH = (re.compile(r"handle_simple_irq\(irq_to_desc\((\w+)\)\)"), r"generic_handle_irq(\1)")
LICENSE = '\nMODULE_LICENSE("GPL");\n'
KBUILD = "obj-m += gpio-sim.o irq_sim.o\n"


def build(tree: Path, version: str, out_dir: Path) -> tuple[Path | None, str]:
    """Build ``gpio-sim.ko`` (and ``irq_sim.ko``) into ``out_dir``; answers (module, "") or
    (None, why not)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    module = out_dir / "gpio-sim.ko"
    if module.exists() and (out_dir / "irq_sim.ko").exists():
        return module, ""
    archives = sorted((tree / "usr" / "src").glob("linux-source-*.tar.xz"))
    if not archives:
        return None, f"no linux-source archive under {tree / 'usr/src'}"
    headers = tree / "usr" / "src" / f"linux-headers-{version}"
    if not headers.exists():
        return None, f"no kernel headers at {headers}"
    archive = archives[-1]
    top = archive.name.removesuffix(".tar.xz")  # Debian's archive holds one folder of that name
    # One pass through the archive for both files (xz cannot seek back).
    proc = subprocess.run(
        ["tar", "-xJf", str(archive), "-C", str(out_dir), "--strip-components=1", *(f"{top}/{rel}" for rel in SOURCES)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return None, f"cannot take {', '.join(SOURCES)} from {archive.name}: {proc.stderr.strip()[-300:]}"
    for rel in SOURCES:
        (out_dir / rel).replace(out_dir / Path(rel).name)
    irq_sim = out_dir / "irq_sim.c"
    irq_sim.write_text(PATCH[0].sub(PATCH[1], irq_sim.read_text()) + LICENSE)
    (out_dir / "Kbuild").write_text(KBUILD)
    # The packaged Makefile includes its "common" half by its installed path; point it into the cache.
    makefile = headers / "Makefile"
    makefile.write_text(makefile.read_text().replace("include /usr/src/", f"include {tree}/usr/src/"))
    proc = subprocess.run(
        # No BTF for these two: it needs pahole, and a module loads without it.
        ["make", "-C", str(headers), f"M={out_dir}", "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0 or not module.exists():
        return None, f"building gpio-sim failed: {(proc.stdout + proc.stderr).strip()[-600:]}"
    return module, ""
