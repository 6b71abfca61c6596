"""File syscalls: read and write a file in the caller's own view of the filesystem (see
:mod:`clove.kernel.services.files` for how paths are resolved, checked and opened)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, final

from clove.errors import InvalidArguments
from clove.kernel.syscalls.base import Syscall, SyscallContext

WRITE_MODES = ("write", "append")
ENCODINGS = ("utf-8", "base64")


@dataclass(frozen=True, slots=True)
class ReadRequest:
    path: str


@final
class Read(Syscall):
    """``fs.read {path}`` → ``{success, content, size, encoding, path}``.

    ``content`` is the text when the file is valid UTF-8 (``encoding: "utf-8"``), else its
    base64 (``encoding: "base64"``); ``size`` counts bytes; ``path`` is the resolved path that
    was checked and read. Relative paths start at an agent's work dir (an operator's: its
    process's working directory).

    :raises PermissionDenied: the resolved path is not granted, or the caller's uid may not
        read it (Unix permissions).
    :raises NotFound: no such file.
    :raises InvalidArguments: a directory, not a regular file, one that cannot be read as one
        (``/proc/self/mem``), or a bad path.
    :raises QuotaExceeded: larger than 16 MiB.
    :raises Conflict: the calling agent is not running, or the file is busy.

    Errors name the path as the caller gave it (see ``fs_error`` in the file service).
    """

    name = "fs.read"
    right = "fs.read"
    Request = ReadRequest

    def execute(self, ctx: SyscallContext, req: ReadRequest) -> Any:  # a dict, or a Deferred
        return ctx.kernel.files.read(ctx, req.path)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    path: str
    content: str | bytes
    mode: str = "write"
    encoding: str | None = None


@final
class Write(Syscall):
    """``fs.write {path, content, mode?, encoding?}`` → ``{success, bytes_written, path}``.

    ``content`` is bytes, or text (``encoding`` ``"utf-8"``, the default, or ``"base64"`` for
    what ``fs.read`` returned as base64). ``mode`` is ``"write"`` (create or truncate) or
    ``"append"``. A new file is owned by the caller's uid; missing directories are not created.

    :raises PermissionDenied: the resolved path is not granted for writing, is read-only in
        the caller's view, or the caller's uid may not write it.
    :raises NotFound: a directory on the way is missing.
    :raises InvalidArguments: bad mode, encoding or path; a directory, or a file that cannot be
        written as a regular one (``EIO``, ``EINVAL``).
    :raises QuotaExceeded: the file system is full (an agent's /tmp holds 64 MiB).
    """

    name = "fs.write"
    right = "fs.write"
    Request = WriteRequest

    def execute(self, ctx: SyscallContext, req: WriteRequest) -> Any:
        if req.mode not in WRITE_MODES:
            raise InvalidArguments(
                f"mode must be one of {', '.join(WRITE_MODES)}", details={"argument": "mode"}
            )
        data = _content_bytes(req.content, req.encoding)
        return ctx.kernel.files.write(ctx, req.path, data, append=req.mode == "append")


def _content_bytes(content: str | bytes, encoding: str | None) -> bytes:
    if encoding is not None and encoding not in ENCODINGS:
        raise InvalidArguments(
            f"encoding must be one of {', '.join(ENCODINGS)}", details={"argument": "encoding"}
        )
    if isinstance(content, bytes):
        if encoding == "base64":
            raise InvalidArguments("encoding 'base64' takes text content", details={"argument": "encoding"})
        return content
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArguments("content is not valid base64", details={"argument": "content"}) from None
    try:
        return content.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        raise InvalidArguments("content is not encodable as UTF-8", details={"argument": "content"}) from None


SYSCALLS: tuple[type[Syscall], ...] = (Read, Write)
