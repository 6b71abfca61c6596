"""A hostile agent: tries, once each, what it must not be able to do on the rover.

Every attempt prints one line: ``DENIED <what>: <code or errno>`` (the expected outcome),
``ALLOWED <what>`` (a hole: a bug in Clove or in the deployment), or ``FAILED <what>: ...``
(it failed for another reason, so the attempt proves nothing). Then one line
``REPORT {json}`` with every outcome for a harness to read, and the agent idles until the kernel
stops it (it must stay alive: the point is what it could *not* do while running).

(a) send a CAN frame with an id outside its grant (0x200)            → perm.denied
(b) send a MotorCommand 0x101 with absurd speeds (not granted either)  → perm.denied
(c) read the GPS, a device it has no grant on                          → perm.denied
(d) the network: a TCP connection and a UDP datagram to 1.1.1.1      → OSError (no network)
(e) another agent's identity: connect to its kernel channel and say hello → path not visible,
    permission denied, or no reply
(f) claim another agent's name (``ROGUE_VICTIM``, default ``navigator``) → conflict

Configuration: ``ROVER_BUS`` (``motor_bus``), ``ROVER_GPS`` (``gps``), ``ROGUE_VICTIM``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any

from rover_can import MOTOR_COMMAND_ID

Outcome = dict[str, Any]


def outcome(what: str, verdict: str, how: str, expected: str) -> Outcome:
    """Print and return one attempt's result."""
    line = f"{verdict} {what}" + ("" if verdict == "ALLOWED" and not how else f": {how}")
    print(line, flush=True)
    return {"what": what, "verdict": verdict, "denied": verdict == "DENIED", "how": how, "expected": expected}


def errno_name(err: OSError) -> str:
    """``ENETUNREACH``, ``EPERM``, ... or the exception's name (a timeout has no errno)."""
    if err.errno is not None and err.errno in errno.errorcode:
        return errno.errorcode[err.errno]
    return type(err).__name__


# ---- (a)-(c): devices through the kernel -------------------------------------------------------


def try_device(what: str, call: Callable[[], Any], expected: str = "perm.denied") -> Outcome:
    """Run one device call; a ``perm.denied`` is the refusal we hope for."""
    from clove_sdk.errors import CloveError, PermissionDenied

    try:
        result = call()
    except PermissionDenied as err:
        return outcome(what, "DENIED", f"{err.code} ({err.message})", expected)
    except CloveError as err:  # unavailable, quota, timeout: not the grant saying no
        return outcome(what, "FAILED", f"{err.code} ({err.message})", expected)
    except Exception as err:  # noqa: BLE001 - report, never crash
        return outcome(what, "FAILED", f"{type(err).__name__}: {err}", expected)
    return outcome(what, "ALLOWED", f"result {result!r}", expected)


# ---- (d): the network ---------------------------------------------------------------------------


def try_tcp(host: str = "1.1.1.1", port: int = 80, timeout: float = 2.0) -> Outcome:
    what = f"TCP connect {host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:  # no refusal: packets may have left and found nobody
        return outcome(what, "FAILED", f"timeout after {timeout:g} s (inconclusive)", "OSError")
    except OSError as err:
        return outcome(what, "DENIED", f"{errno_name(err)} ({err.strerror or err})", "OSError")
    sock.close()
    return outcome(what, "ALLOWED", "", "OSError")


def try_udp(host: str = "1.1.1.1", port: int = 53) -> Outcome:
    what = f"UDP sendto {host}:{port}"
    step = "socket()"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            step = "sendto()"
            sock.sendto(b"\x00" * 12, (host, port))
    except OSError as err:
        return outcome(what, "DENIED", f"{step} {errno_name(err)} ({err.strerror or err})", "OSError")
    return outcome(what, "ALLOWED", "", "OSError")


# ---- (e): another agent's channel ---------------------------------------------------------------


def neighbour_endpoints(own_endpoint: str, own_id: int) -> list[tuple[int, str]]:
    """Where the channels of agents ``id±1``, ``id±2`` would be: the kernel lays them out as
    ``<state_dir>/agents/<id>/ipc/<socket>``, so swap our id in our own endpoint's path."""
    path = own_endpoint[len("ipc://") :] if own_endpoint.startswith("ipc://") else own_endpoint
    marker = f"/agents/{own_id}/"
    if marker not in path:
        return []
    return [
        (other, "ipc://" + path.replace(marker, f"/agents/{other}/", 1))
        for other in (own_id - 1, own_id + 1, own_id - 2, own_id + 2)
        if other >= 1
    ]


REASONS = {
    errno.ENOENT: "path not visible",
    errno.EACCES: "permission denied",
    errno.ECONNREFUSED: "nobody listening",
}


def hello_as(endpoint: str, other: int, timeout: float = 1.5) -> tuple[str, str]:
    """Try to talk to the kernel through another agent's channel: (verdict, how)."""
    import zmq

    from clove_sdk import wire
    from clove_sdk.errors import CloveError

    path = endpoint[len("ipc://") :]
    # First the plain socket, which says precisely why it cannot be reached.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except OSError as err:
        reason = REASONS.get(err.errno or 0, err.strerror)
        return "DENIED", f"{errno_name(err)} ({reason})"
    finally:
        probe.close()
    # Reachable: a hello tells whose identity the kernel would give us there.
    dealer: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(endpoint)
        dealer.send_multipart(wire.encode_request(1, "hello", {}))
        if not dealer.poll(int(timeout * 1000)):
            return "DENIED", f"connected, but no reply within {timeout:g} s"
        reply = wire.decode_reply(dealer.recv_multipart())
    except (zmq.ZMQError, CloveError) as err:  # CloveError: not a Clove reply
        return "DENIED", f"{type(err).__name__} ({err})"
    finally:
        dealer.close(linger=0)
    if not reply.ok:
        return "DENIED", f"kernel answered {reply.error.code if reply.error else 'an error'}"
    result = reply.result if isinstance(reply.result, dict) else {}
    return "ALLOWED", f"the kernel took us for agent {result.get('agent_id')} ({result.get('name')!r})"


def try_impersonation() -> Outcome:
    what, expected = "another agent's channel", "no reply or not visible"
    own_endpoint = os.environ.get("CLOVE_AGENT_ENDPOINT", "")
    try:
        own_id = int(os.environ.get("CLOVE_AGENT_ID", "0"))
    except ValueError:
        own_id = 0
    candidates = neighbour_endpoints(own_endpoint, own_id)
    if not candidates:
        how = f"cannot derive neighbours from {own_endpoint!r} (not run by a Clove kernel?)"
        return outcome(what, "FAILED", how, expected)
    tried = []
    for other, endpoint in candidates:
        try:
            verdict, how = hello_as(endpoint, other)
        except Exception as err:  # noqa: BLE001 - report, never crash
            verdict, how = "FAILED", f"{type(err).__name__}: {err}"
        tried.append({"agent_id": other, "endpoint": endpoint, "verdict": verdict, "how": how})
        print(f"  agent {other} at {endpoint}: {verdict} {how}", flush=True)
    allowed = [t for t in tried if t["verdict"] == "ALLOWED"]
    denied = [t for t in tried if t["verdict"] == "DENIED"]
    def each(attempts: list[dict[str, Any]]) -> str:
        return "; ".join(f"agent {t['agent_id']}: {t['how']}" for t in attempts)

    if allowed:  # one open door is a hole
        result = outcome(what, "ALLOWED", each(allowed), expected)
    elif len(denied) == len(tried):
        result = outcome(what, "DENIED", "; ".join(sorted({str(t["how"]) for t in denied})), expected)
    else:
        result = outcome(what, "FAILED", each(tried), expected)
    result["attempts"] = tried
    return result


# ---- (f): another agent's name ------------------------------------------------------------------


def try_name(client: Any, victim: str) -> Outcome:
    what = f"claim the name {victim!r}"
    from clove_sdk.errors import CloveError

    try:
        reply = client.register_name(victim)
    except CloveError as err:
        return outcome(what, "FAILED", f"{err.code} ({err.message})", "conflict")
    if reply.get("success"):
        # Give it back at once (registering our own spawn name replaces it), so the demo does
        # not leave a squatter behind. Not a hole if the victim was not running yet.
        with contextlib.suppress(CloveError):
            client.register_name(os.environ.get("CLOVE_AGENT_NAME", "rogue"))
        return outcome(what, "ALLOWED", f"{reply} (is {victim!r} running?)", "conflict")
    verdict = "DENIED" if reply.get("code") in ("conflict", "perm.denied") else "FAILED"
    return outcome(what, verdict, f"{reply.get('code')} ({reply.get('error')})", "conflict")


# ---- the run ------------------------------------------------------------------------------------


def guarded(what: str, attempt: Callable[[], Outcome]) -> Outcome:
    """Whatever goes wrong in one attempt is reported, never raised."""
    try:
        return attempt()
    except Exception as err:  # noqa: BLE001 - the rogue reports, it never crashes
        return outcome(what, "FAILED", f"{type(err).__name__}: {err}", "")


def main() -> None:
    from clove_sdk import CloveClient

    bus_name = os.environ.get("ROVER_BUS", "motor_bus")
    gps_name = os.environ.get("ROVER_GPS", "gps")
    victim = os.environ.get("ROGUE_VICTIM", "navigator")
    print(f"rogue: agent {os.environ.get('CLOVE_AGENT_ID', '?')} trying what it must not", flush=True)
    report: dict[str, Outcome] = {}
    with CloveClient(timeout=5.0) as client:
        bus, gps = client.device(bus_name), client.device(gps_name)
        report["can_forbidden_id"] = try_device(
            "CAN id 0x200", lambda: bus.send(id=0x200, data=b"\xff\xff\xff\xff")
        )
        absurd = struct.pack("<hh", 32767, -32768)  # 32 m/s, wheels opposite ways: a violent spin
        report["can_motor_command"] = try_device(
            "MotorCommand 0x101 (32767, -32768) mm/s", lambda: bus.send(id=MOTOR_COMMAND_ID, data=absurd)
        )
        report["gps_read"] = try_device(f"read {gps_name}", lambda: gps.read(size=256, timeout=1.0))
        report["net_tcp"] = guarded("TCP connect 1.1.1.1:80", try_tcp)
        report["net_udp"] = guarded("UDP sendto 1.1.1.1:53", try_udp)
        report["impersonate"] = guarded("another agent's channel", try_impersonation)
        report["claim_name"] = guarded(f"claim the name {victim!r}", lambda: try_name(client, victim))
    holes = [key for key, value in report.items() if value["verdict"] == "ALLOWED"]
    print(f"rogue: {len(holes)} of {len(report)} attempts got through {holes or ''}", flush=True)
    print("REPORT " + json.dumps(report, default=str), flush=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:  # idle until the kernel stops us (SIGTERM ends the process)
        signal.pause()


if __name__ == "__main__":
    main()
