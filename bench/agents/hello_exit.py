"""Bench agent: one hello (the first syscall the spawn benchmark waits for), then exit."""

from clove_sdk import CloveClient

CloveClient().hello()
