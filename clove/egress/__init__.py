"""The egress proxy: the only way out for an agent with ``network = true`` (docs/egress.md).

It runs as its own process (``python -m clove.egress``), started and restarted by the kernel's
egress service, so its byte pumping never loads the kernel's loop and its death takes nothing
else down. It imports neither the kernel nor the config: its orders arrive as plain data.
:mod:`~clove.egress.rules` (policy), :mod:`~clove.egress.httphead` (HTTP heads),
:mod:`~clove.egress.socks` (SOCKS5), :mod:`~clove.egress.proxy` (connections),
:mod:`~clove.egress.link` (records to the kernel).
"""
