"""The console's two bearer tokens, kept in a file only root and the control socket's group
can read (mode 0640): whoever may talk to the kernel may read them, nobody else.

The file is JSON ``{"operator": "...", "readonly": "..."}``. It is made once (``O_EXCL``,
never following a symlink) and reused on later starts, so a bookmarked login keeps working;
a file that others could read or write is refused rather than trusted.
"""

from __future__ import annotations

import enum
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass

TOKEN_BYTES = 32  # 256 bits: guessing is out of the question, so logins need no rate limit
FILE_MODE = 0o640
FILE_NAME = "console-tokens.json"


class Role(enum.Enum):
    """What a token lets its holder do: ``operator`` acts, ``readonly`` only looks."""

    OPERATOR = "operator"
    READONLY = "readonly"


class TokenFileError(Exception):
    """The token file cannot be made or trusted; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Tokens:
    operator: str
    readonly: str
    path: str

    def role_of(self, presented: str) -> Role | None:
        """The role ``presented`` grants, or ``None``; compared in constant time."""
        given = presented.encode("utf-8", "replace")
        # Both compared every time: the timing says nothing about which one was close.
        is_operator = hmac.compare_digest(given, self.operator.encode())
        is_readonly = hmac.compare_digest(given, self.readonly.encode())
        if is_operator:
            return Role.OPERATOR
        return Role.READONLY if is_readonly else None


def default_path(socket_path: str, state_dir: str | None) -> str:
    """The kernel's state dir when it is known (it is the kernel's own), else beside the socket."""
    directory = state_dir if state_dir and os.path.isdir(state_dir) else os.path.dirname(os.path.abspath(socket_path))
    return os.path.join(directory, FILE_NAME)


def load_or_create(path: str, group: int | None) -> Tokens:
    """The tokens in ``path``, made there first if missing.

    :param group: the gid to give a new file (the control socket's group); ``None`` keeps ours.
    :raises TokenFileError: the file is readable or writable by others, not ours, or malformed.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _load(path)
    except OSError as err:
        raise TokenFileError(f"cannot create {path}: {err.strerror}") from None
    tokens = Tokens(operator=secrets.token_urlsafe(TOKEN_BYTES), readonly=secrets.token_urlsafe(TOKEN_BYTES), path=path)
    try:
        if group is not None and group != os.getegid():
            os.fchown(fd, -1, group)
        os.fchmod(fd, FILE_MODE)  # after the chown: the group that may read it is the right one
        os.write(fd, json.dumps({"operator": tokens.operator, "readonly": tokens.readonly}).encode() + b"\n")
    finally:
        os.close(fd)
    return tokens


def _load(path: str) -> Tokens:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        raise TokenFileError(f"cannot open {path}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"{path} is not a regular file")
        if info.st_mode & 0o027 or info.st_uid not in (0, os.geteuid()):
            raise TokenFileError(f"{path} is mode {stat.S_IMODE(info.st_mode):04o} owned by uid {info.st_uid}: "
                                 "expected 0640 or stricter, owned by root or you; fix it or remove it")  # fmt: skip
        raw = f.read(4096)
    try:
        data = json.loads(raw)
        operator, readonly = data["operator"], data["readonly"]
    except (ValueError, KeyError, TypeError):
        raise TokenFileError(f"{path}: expected JSON with 'operator' and 'readonly' tokens") from None
    if not (isinstance(operator, str) and isinstance(readonly, str) and len(operator) >= 16 and len(readonly) >= 16 and operator != readonly):
        raise TokenFileError(f"{path}: tokens must be two different strings of at least 16 characters")
    return Tokens(operator=operator, readonly=readonly, path=path)
