"""Devices: serial ports, CAN buses, GPIO lines, reached only through the kernel (docs/devices.md).

``client.device("motor_bus")`` returns a :class:`Device` handle. Its driver's operations are
methods (``bus.send(id=0x101, data=b"\\x00\\x10")``, ``gps.write(data=b"...")``,
``estop.get(lines=["estop"])``); incoming data is read with :meth:`Device.recv` (frames, edges)
or :meth:`Device.read` / :meth:`Device.readline` (serial bytes). Every call is checked against
your grant for that device and journaled; a refusal raises
:class:`clove_sdk.errors.PermissionDenied`, an outage :class:`clove_sdk.errors.DeviceUnavailable` or
:class:`clove_sdk.errors.DeviceBroken`.
"""

from __future__ import annotations

from typing import Any

from clove_sdk._base import ClientBase


class Device:
    """One device, as the kernel lets this client use it. Cheap: it holds only the name."""

    def __init__(self, client: ClientBase, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"Device({self.name!r})"

    def info(self) -> dict[str, Any]:
        """Driver, state, the operations you may use, stream kind, counters."""
        return dict(self.client.call("device.info", device=self.name)["device"])

    def call(self, op: str, /, reply_timeout: float | None = None, **args: Any) -> Any:
        """Run the driver operation ``op`` with ``args``; returns its result."""
        return self.client.call("device.call", reply_timeout=reply_timeout, device=self.name, op=op, args=args)["result"]

    def __getattr__(self, op: str) -> Any:
        if op.startswith("_"):
            raise AttributeError(op)

        def operation(**args: Any) -> Any:
            return self.call(op, **args)

        operation.__name__ = op
        return operation

    # ---- the incoming stream --------------------------------------------------------------------

    def subscribe(self, filters: list[Any] | None = None, queue: int | None = None) -> dict[str, Any]:
        """Start receiving the device's stream (frames, bytes, edges) into a queue the kernel
        keeps for you, narrowed by ``filters`` (the driver's kind: CAN ``[{"can_id": 0x180,
        "can_mask": 0x7F0}]``, GPIO ``["estop"]``) on top of your grant. ``queue`` bounds it
        (items, or bytes for serial); when it is full the oldest data is dropped and counted.
        :meth:`recv`, :meth:`read` and :meth:`readline` subscribe by themselves.

        :returns: ``{success, queue, dropped}``.
        """
        body: dict[str, Any] = {"device": self.name}
        if filters is not None:
            body["filters"] = filters
        if queue is not None:
            body["queue"] = queue
        return dict(self.client.call("device.subscribe", **body))

    def unsubscribe(self) -> dict[str, Any]:
        """Stop receiving; queued data is discarded. :returns: ``{success, dropped}``."""
        return dict(self.client.call("device.unsubscribe", device=self.name))

    def recv(self, max_items: int = 100, timeout: float | None = None) -> list[dict[str, Any]]:
        """Up to ``max_items`` queued items (oldest first); with ``timeout`` (seconds) wait for
        the first one, else return at once (possibly nothing)."""
        body: dict[str, Any] = {"device": self.name, "max_items": max_items}
        if timeout is not None:
            body["timeout"] = timeout
        return list(self.client.call("device.recv", **body)["items"])

    def read(self, size: int = 4096, timeout: float | None = None) -> bytes:
        """Up to ``size`` queued bytes of a byte stream; with ``timeout`` wait for the first."""
        body: dict[str, Any] = {"device": self.name, "max_bytes": size}
        if timeout is not None:
            body["timeout"] = timeout
        return bytes(self.client.call("device.recv", **body)["data"])

    # ---- exchange devices (the exchange driver's operations, with positional arguments) ---------

    def submit_order(
        self,
        symbol: str,
        side: str,
        qty: float,
        price: float | None = None,
        type: str = "limit",  # noqa: A002 - the order type, as the venue calls it
        tif: str = "day",
        client_id: str | None = None,
    ) -> dict[str, Any]:
        """Submit an order through the kernel and the venue's pre-trade risk checks. Returns
        ``{client_id, status}`` once it is on its way; its execution reports arrive on the
        stream (:meth:`executions`). A limit's refusal raises :class:`clove_sdk.errors.RiskDenied`
        (``risk.denied``, ``details.reason`` naming the check); a symbol outside the grant
        :class:`clove_sdk.errors.PermissionDenied` (``perm.denied``, reason ``symbol``)."""
        args: dict[str, Any] = {"symbol": symbol, "side": side, "qty": qty, "type": type, "tif": tif}
        if price is not None:
            args["price"] = price
        if client_id is not None:
            args["client_id"] = client_id
        return dict(self.call("submit_order", **args))

    def cancel(self, client_id: str) -> dict[str, Any]:
        """Ask the venue to cancel one of your open orders."""
        return dict(self.call("cancel", client_id=client_id))

    def orders(self) -> list[dict[str, Any]]:
        """Your open orders, as the gateway knows them."""
        return list(self.call("orders"))

    def positions(self) -> dict[str, float]:
        """Your net position per symbol, from fills."""
        return dict(self.call("positions"))

    def executions(self, max_items: int = 100, timeout: float | None = None) -> list[dict[str, Any]]:
        """Execution reports for your orders and market data for your symbols (stream items
        with ``type`` ``"exec"`` or ``"md"``)."""
        return self.recv(max_items=max_items, timeout=timeout)

    def readline(self, timeout: float | None = None, terminator: bytes = b"\n", size: int = 65536) -> bytes:
        """Bytes up to and including ``terminator``; on timeout whatever arrived (possibly a
        partial line, as pyserial's ``readline``)."""
        body: dict[str, Any] = {"device": self.name, "max_bytes": size, "until": terminator}
        if timeout is not None:
            body["timeout"] = timeout
        return bytes(self.client.call("device.recv", **body)["data"])


class DevicesMixin(ClientBase):
    def device(self, name: str) -> Device:
        """A handle on the configured device ``name`` (nothing is checked until you use it)."""
        return Device(self, name)

    def list_devices(self) -> list[dict[str, Any]]:
        """The devices you may see: for an agent, those it has a grant on, with its operations."""
        return list(self.call("device.list")["devices"])
