"""Exec: run a command inside your own sandbox (an operator: on the host, as yourself)."""

from __future__ import annotations

from typing import Any

from clove_sdk._base import ClientBase


class ExecMixin(ClientBase):
    def exec(
        self,
        command: str | list[str],
        cwd: str | None = None,
        timeout: float = 30,
        async_: bool = False,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Run ``command`` (an argv list, or a string; shell syntax in a string runs ``/bin/sh -c``).

        :param cwd: working directory (default: an agent's work dir, an operator's own).
        :param timeout: seconds before the command's whole process tree is killed.
        :param async_: answer at once; the result comes later through :meth:`poll_async`
            (``opcode_name`` ``"SYS_EXEC"``, under ``request_id`` or one the kernel picks).
        :returns: ``{success, stdout, stderr, exit_code, timed_out, truncated, duration}``
            (``success``: exited 0 in time; ``exit_code`` is ``-N`` when signal N ended it);
            with ``async_``: ``{success, async, request_id, status}``; on a refusal
            ``{success: False, error, code}``.
        """
        body: dict[str, Any] = {
            "command": command if isinstance(command, str) else list(command),
            "timeout": float(timeout),
        }
        if cwd is not None:
            body["cwd"] = cwd
        if async_:
            body["async_"] = True
        if request_id is not None:
            body["request_id"] = request_id
        return self._compat("exec", **body)
