"""Files: read and write through the kernel, in your own view of the filesystem (an agent: its
sandbox, with ``/tmp`` its private tmpfs and relative paths starting at its work dir)."""

from __future__ import annotations

import base64
from typing import Any

from clove_sdk._base import ClientBase


class FilesMixin(ClientBase):
    def read_file(self, path: str) -> dict[str, Any]:
        """:returns: ``{success, content, size, encoding, path}`` (``content`` is text when
        ``encoding`` is ``"utf-8"``, base64 when it is ``"base64"``), or ``{success: False,
        error, code}``."""
        return self._compat("fs.read", path=path)

    def read(self, path: str) -> str:
        """The file's text.

        :raises CloveError: the kernel refused (``PermissionDenied``, ``NotFound``, ...).
        :raises UnicodeDecodeError: the file is not UTF-8; use :meth:`read_bytes` for binary files.
        """
        return self._decode(self.call("fs.read", path=path), text=True)  # type: ignore[return-value]

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes, whatever they are. :raises CloveError: the kernel refused."""
        return self._decode(self.call("fs.read", path=path), text=False)  # type: ignore[return-value]

    @staticmethod
    def _decode(result: dict[str, Any], *, text: bool) -> str | bytes:
        content = str(result["content"])
        if result.get("encoding") == "base64":
            data = base64.b64decode(content)
            return data.decode("utf-8") if text else data  # not UTF-8: raises UnicodeDecodeError
        return content if text else content.encode("utf-8")

    def write_file(self, path: str, content: str | bytes, mode: str = "write") -> dict[str, Any]:
        """Create or replace (``mode="append"``: extend) a file with text or bytes.

        :returns: ``{success, bytes_written, path}`` or ``{success: False, error, code}``.
        """
        return self._compat("fs.write", path=path, content=content, mode=mode)

    def write(self, path: str, content: str | bytes, mode: str = "write") -> int:
        """Like :meth:`write_file`; returns the number of bytes written.

        :raises CloveError: the kernel refused.
        """
        return int(self.call("fs.write", path=path, content=content, mode=mode)["bytes_written"])
