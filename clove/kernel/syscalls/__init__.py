"""The syscalls: one module per service, named like it (``state``, ``messaging``, ``files``,
...), each listing its syscall classes in ``SYSCALLS``; :mod:`.registry` builds the map from
wire name to handler. Nothing is built on import of this package."""
