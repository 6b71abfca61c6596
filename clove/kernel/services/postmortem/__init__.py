"""Post-mortem bundles: what the kernel keeps about an agent that died abnormally.

:mod:`.bundle` writes one bundle (on a worker thread), :mod:`.store` lists and reads them (for
the syscalls, and for the CLI on a bundle directory copied elsewhere), :mod:`.capture` decides
which deaths deserve one and gathers what it holds, :mod:`.service` wires that into the kernel.
See docs/postmortem.md.
"""
