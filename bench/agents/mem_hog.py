"""Bench agent: allocate and touch 8 MiB chunks until the memory limit OOM-kills it."""

from clove_sdk import CloveClient

CloveClient().hello()
CHUNK = 8 << 20
PAGE = 4096
held = []
while True:
    block = bytearray(CHUNK)
    block[::PAGE] = b"\x01" * (CHUNK // PAGE)  # touch every page
    held.append(block)
