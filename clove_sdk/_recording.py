"""Recording and deterministic replay (operators), and the kernel's clock and random seeds
(every agent) (docs/recording.md).

An agent that wants its runs to be replayable takes the time and its random seeds from the
kernel (:meth:`now`, :meth:`random_seed`) rather than from its own process: then every input it
has is a syscall's reply, which a recording keeps and a replay gives back.
"""

from __future__ import annotations

from typing import Any

from clove_sdk._base import ClientBase


class RecordingMixin(ClientBase):
    def start_recording(
        self,
        include_think: bool = False,
        include_http: bool = False,
        include_exec: bool = False,
        filter_agents: list[str] | None = None,
        max_entries: int = 50000,
    ) -> dict[str, Any]:
        """Record every syscall of the agents named in ``filter_agents`` (``None``: every
        agent, and this session's own calls too), request and reply, with timestamps;
        ``llm.think``, ``http`` and ``exec`` calls only when their ``include_*`` is set. The newest ``max_entries`` are kept in memory for
        export; the files under ``<state_dir>/recordings/<id>/`` are capped by the config.

        :returns: ``{success, state: "RECORDING", recording_id, path, entry_count, ...}`` or
            ``{success: False, error, code}`` (``conflict`` when already recording).
        """
        body: dict[str, Any] = {"include_think": include_think, "include_http": include_http, "include_exec": include_exec, "max_entries": max_entries}
        if filter_agents is not None:
            body["filter_agents"] = list(filter_agents)
        return self._compat("record.start", **body)

    def stop_recording(self) -> dict[str, Any]:
        """:returns: ``{success, state: "IDLE", entry_count, recorded, path, ...}``."""
        return self._compat("record.stop")

    def get_recording_status(self, export: bool = False) -> dict[str, Any]:
        """:returns: ``{success, state ("RECORDING" or "IDLE"), entry_count, recorded, dropped,
        recording_id, path, agents, options}``; with ``export``, ``recording`` is the entry
        list as JSON text, which :meth:`start_replay` and ``clove replay`` take."""
        return self._compat("record.status", export=export)

    def start_replay(
        self,
        recording_data: str | bytes | list[Any] | None = None,
        agent: str | None = None,
        speed: str = "full",
        *,
        path: str | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        mode: str | None = None,
    ) -> dict[str, Any]:
        """Replay a recording in this kernel, in one of two ways (``mode``):

        * ``"agents"``: each recorded agent runs its unmodified script in a fresh sandbox and
          every syscall it makes is answered from the recording (nothing is performed).
          ``agent``: replay only this one. ``env``/``args`` change the agent's environment or
          arguments, to see where it diverges.
        * ``"execute"``: the calls this operator made while recorded (``start_recording``
          without ``filter_agents``) are performed again, one by one, as this session and
          with its permissions; :meth:`get_replay_status` compares each result with the
          recorded one. It stops if this session closes.

        By default ``"agents"`` when the recording holds an agent's spawn (or ``agent``,
        ``env`` or ``args`` is given), else ``"execute"``. ``recording_data`` is an export
        (JSON text or its list) or JSONL text; ``path`` a recording file or directory on the
        kernel's machine instead. ``speed``: ``"full"`` or ``"recorded"`` (replies, or calls,
        wait as long as they did).

        :returns: ``{success, state: "REPLAYING", mode, progress: {replayed, total}, ...}``
            or ``{success: False, error, code}``.
        """
        body: dict[str, Any] = {"speed": speed}
        if recording_data is not None:
            body["recording"] = recording_data.decode() if isinstance(recording_data, bytes) else recording_data
        if path is not None:
            body["path"] = path
        if agent is not None:
            body["agent"] = agent
        if env:
            body["env"] = dict(env)
        if args is not None:
            body["args"] = list(args)
        if mode is not None:
            body["mode"] = mode
        return self._compat("replay.start", **body)

    def get_replay_status(self) -> dict[str, Any]:
        """:returns: ``{success, state (IDLE, REPLAYING, DIVERGED, COMPLETED, FAILED), active,
        mode, progress: {replayed, total}, agents, divergence: {agent, index, reason, recorded:
        {call, body}, actual: {call, body}} or None, elapsed, recorded_elapsed}``; for mode
        ``"execute"`` also ``calls`` (``{index, call, outcome: "match" | "diverged" |
        "skipped", reason?, recorded?, actual?}``), ``matched``, ``diverged``, ``skipped``."""
        return self._compat("replay.status")

    def now(self) -> float:
        """The kernel's clock (``time.time()``), recorded and replayed."""
        return float(self.call("sys.time")["time"])

    def random_seed(self) -> int:
        """A fresh 64-bit seed from the kernel's ``os.urandom``, recorded and replayed: use it
        for ``random.Random(seed)``."""
        return int(self.call("sys.random")["seed"])
