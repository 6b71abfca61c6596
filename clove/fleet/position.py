"""The shipped position: the id of the last journal record the hub acknowledged, kept in the
state dir so a restarted board resumes from it (a resend after a crash is deduplicated by the
stream, so a position a little behind costs nothing)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import final

__all__ = ["ShippedPosition"]


@final
class ShippedPosition:
    """``<state dir>/fleet/shipped.json``: ``{"board": ..., "seq": N}``. A file for another
    board name (the board was renamed) counts as nothing shipped."""

    def __init__(self, path: Path, board: str) -> None:
        self.path = path
        self.board = board

    def load(self) -> int:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        if not isinstance(data, dict) or data.get("board") != self.board:
            return 0
        seq = data.get("seq")
        return seq if isinstance(seq, int) and seq >= 0 else 0

    def save(self, seq: int) -> None:
        """Write-and-rename, so a crash leaves the old position or the new one, never half."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps({"board": self.board, "seq": seq}))
        try:
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
