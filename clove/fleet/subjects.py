"""Where a board's data lives on the hub: one subject prefix, one token per board.

With the prefix ``clove`` and the board ``press-07``:

* audit records go to the subject ``clove.audit.press-07`` of the stream ``CLOVE_AUDIT``
  (subjects ``clove.audit.>``), one message per record, deduplicated by ``Nats-Msg-Id``
  ``press-07-<record id>``;
* the inventory and heartbeat is the key ``press-07`` of the key-value bucket ``clove_boards``
  (subject ``$KV.clove_boards.press-07``);
* replies (publish acknowledgements) come to the inbox prefix ``_INBOX_press-07``, so a
  board's user may subscribe to its own replies only (docs/fleet.md, "Permissions");
* signed operator commands (docs/fleet.md, "Commands") come on ``clove.cmd.board.press-07``
  (this board only) and ``clove.cmd.all`` (every board); the board answers on the command's
  reply subject (the operator's own inbox, ``_INBOX_<user>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

__all__ = ["FleetNames", "MSG_ID_HEADER"]

#: JetStream's deduplication header: a resend with the same id within the stream's
#: ``duplicate_window`` is acknowledged as a duplicate and not stored again.
MSG_ID_HEADER = "Nats-Msg-Id"


@final
@dataclass(frozen=True, slots=True)
class FleetNames:
    """The names derived from a subject prefix (and, for one board, its name)."""

    prefix: str

    @property
    def audit_stream(self) -> str:
        return f"{self.prefix.upper().replace('-', '_')}_AUDIT"

    @property
    def audit_subjects(self) -> str:
        return f"{self.prefix}.audit.>"

    @property
    def bucket(self) -> str:
        return f"{self.prefix}_boards"

    def audit_subject(self, board: str) -> str:
        return f"{self.prefix}.audit.{board}"

    def kv_subject(self, board: str) -> str:
        return f"$KV.{self.bucket}.{board}"

    @staticmethod
    def inbox_prefix(board: str) -> str:
        return f"_INBOX_{board}"

    @staticmethod
    def msg_id(board: str, record_id: int) -> str:
        return f"{board}-{record_id}"

    def command_subject(self, board: str) -> str:
        """Commands for one board."""
        return f"{self.prefix}.cmd.board.{board}"

    @property
    def command_all(self) -> str:
        """Commands for every board."""
        return f"{self.prefix}.cmd.all"

    @property
    def command_subjects(self) -> str:
        """What an operator may publish to (the hub's config)."""
        return f"{self.prefix}.cmd.>"
