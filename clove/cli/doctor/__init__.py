"""``clove doctor``: what this host will really enforce for a config, and why not (docs/doctor.md).

This module stays light (the CLI imports it for every command); the probes load only when the
command runs. For programs: :func:`clove.cli.doctor.run.diagnose` returns the
:class:`~clove.cli.doctor.schema.Report` whose ``to_dict()`` is the stable ``--json`` output.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parsers", "cmd_doctor"]


def cmd_doctor(args: argparse.Namespace) -> int:
    """Load the config, diagnose the host, print; the exit status says whether
    ``require_isolation`` holds (docs/doctor.md, "Exit status")."""
    import logging

    from clove.cli.doctor.run import diagnose
    from clove.cli.doctor.schema import EXIT_BAD_CONFIG
    from clove.cli.doctor.text import report_text
    from clove.config import load_config
    from clove.errors import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"clove: {err.message}", file=sys.stderr)  # names the file, table and key, as `clove kernel` does
        return EXIT_BAD_CONFIG
    # The probes run the kernel's own detection, which logs what it passes over; the report says it.
    logging.getLogger("clove").addHandler(logging.NullHandler())
    report = diagnose(config, state_dir=args.state_dir)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report_text(report))
    return report.exit_status


def add_parsers(sub: Any) -> None:
    d = sub.add_parser("doctor", help="what this host will really enforce (cgroups, Landlock, seccomp, namespaces, devices, disk)")
    d.add_argument("--config", help="judge the host against this kernel TOML config (default: the defaults)")
    d.add_argument("--state-dir", help="the state dir to check for space (overrides the config's)")
    d.add_argument("--json", action="store_true", help="machine-readable output (schema: docs/doctor.md)")
    d.set_defaults(func=cmd_doctor)
