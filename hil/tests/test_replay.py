"""Recording and replaying CAN traffic through python-can log files (ASC, BLF, .log) on
python-can virtual buses."""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import can
import pytest

from clove.testing.kernel import poll_for
from hil.replay import load, main, record, replay

FORMATS = ["asc", "blf", "log"]
Buses = tuple[can.BusABC, can.BusABC]


def channel() -> str:
    return f"replay-{uuid.uuid4().hex}-99999999"  # trailing digits BLF cannot hold as a channel number


def frames(n: int, spacing: float, t0: float = 1_700_000_000.0) -> list[can.Message]:
    """n frames ``spacing`` s apart (a burst of three equal timestamps in the middle); frame i
    carries i, and every third one has an extended id."""
    out = []
    for i in range(n):
        ts = t0 + i * spacing if i < n // 2 or i > n // 2 + 2 else t0 + (n // 2) * spacing
        out.append(
            can.Message(
                timestamp=ts,
                arbitration_id=(0x1ABCDE00 + i) if i % 3 == 0 else 0x100 + i,
                is_extended_id=i % 3 == 0,
                data=i.to_bytes(2, "little") + bytes(range(i % 7)),
            )
        )
    return out


def drain(bus: can.BusABC, n: int, timeout: float = 5.0) -> list[can.Message]:
    got: list[can.Message] = []

    def more() -> bool:
        while (msg := bus.recv(timeout=0.01)) is not None:
            got.append(msg)
        return len(got) >= n

    poll_for(more, timeout, interval=0, message=f"{n} frames")
    return got


def ids_and_data(msgs: list[can.Message]) -> list[tuple[int, bool, bytes]]:
    return [(m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in msgs]


@pytest.fixture
def buses() -> Iterator[Buses]:
    name = channel()
    tx = can.Bus(interface="virtual", channel=name)
    rx = can.Bus(interface="virtual", channel=name)
    yield tx, rx
    tx.shutdown()
    rx.shutdown()


@pytest.mark.parametrize("fmt", FORMATS)
def test_record_keeps_order_and_timestamps(fmt: str, tmp_path: Path, buses: Buses) -> None:
    src, watch = buses
    path = tmp_path / f"trace.{fmt}"
    stop = threading.Event()
    ready = threading.Event()
    seen: list[can.Message] = []

    def on_message(msg: can.Message) -> None:
        seen.append(msg)
        if len(seen) == 30:
            stop.set()

    counted: list[int] = []
    recorder = threading.Thread(
        target=lambda: counted.append(record(watch, path, stop=stop, ready=ready, on_message=on_message))
    )
    recorder.start()
    assert ready.wait(5)
    sent = frames(30, 0.0)
    for batch in range(3):  # three bursts, each once the recorder has the previous one
        have = 10 * batch
        poll_for(lambda: len(seen) >= have, 5.0,  # noqa: B023 - polled within this iteration
                 interval=0.001, message="the previous burst")
        for msg in sent[10 * batch : 10 * batch + 10]:
            src.send(msg)
    recorder.join(5)
    assert not recorder.is_alive() and counted == [30]
    logged = load(path)
    assert ids_and_data(logged) == ids_and_data(sent)  # order kept, extended ids kept
    # The virtual bus stamped each frame when it was sent; the log keeps those stamps (ASC
    # relative to the first frame, so compare relative times).
    relative = [m.timestamp - logged[0].timestamp for m in logged]
    expected = [m.timestamp - seen[0].timestamp for m in seen]
    assert max(abs(a - b) for a, b in zip(relative, expected, strict=False)) < 2e-5
    assert relative[-1] > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_log_round_trip_preserves_timestamps(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"trace.{fmt}"
    sent = frames(40, 0.0015)
    with can.Logger(path) as writer:
        for msg in sent:
            writer.on_message_received(msg)
    logged = load(path)
    assert ids_and_data(logged) == ids_and_data(sent)
    relative = [m.timestamp - logged[0].timestamp for m in logged]
    expected = [m.timestamp - sent[0].timestamp for m in sent]
    assert max(abs(a - b) for a, b in zip(relative, expected, strict=False)) < 2e-5


@pytest.mark.parametrize("fmt", ["asc", "blf"])
def test_replay_keeps_timing_and_order(fmt: str, tmp_path: Path, buses: Buses) -> None:
    tx, rx = buses
    path = tmp_path / f"trace.{fmt}"
    sent = frames(200, 0.001)  # 200 ms at 1 kHz
    with can.Logger(path) as writer:
        for msg in sent:
            writer.on_message_received(msg)
    result = replay(tx, path)
    got = drain(rx, len(sent))
    assert ids_and_data(got) == ids_and_data(sent)
    assert result.sent == 200 and len(result.errors) == 200 and result.send_errors == 0
    assert min(result.errors) >= 0  # never early
    assert result.p50 < 0.002, result.summary()
    assert result.max < 0.25, result.summary()  # a generous bound on a noisy machine
    # The receiver's timestamps (stamped at send) follow the recorded ones.
    offsets = [g.timestamp - s.timestamp for g, s in zip(got, sent, strict=False)]
    base = statistics.median(offsets)
    assert statistics.median(abs(o - base) for o in offsets) < 0.002
    assert 0.19 <= result.duration < 0.5


def test_replay_speed_stop_and_skips(buses: Buses) -> None:
    tx, rx = buses
    sent = frames(50, 0.004)  # 200 ms
    error = can.Message(timestamp=sent[10].timestamp, is_error_frame=True)
    source = sent[:10] + [error] + sent[10:]
    fast = replay(tx, source, speed=4.0, only=lambda m: m.arbitration_id != 0x101)
    assert fast.skipped == 2  # the error frame and 0x101
    assert 0.049 < fast.duration < 0.17  # 200 ms at 4x
    got = drain(rx, 49)
    assert [m.arbitration_id for m in got] == [m.arbitration_id for m in sent if m.arbitration_id != 0x101]

    stop = threading.Event()
    slow = [can.Message(timestamp=float(i), arbitration_id=i, is_extended_id=False) for i in range(3)]
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    started = time.monotonic()
    partial = replay(tx, slow, stop=stop)
    timer.join()
    assert partial.stopped and partial.sent == 1 and time.monotonic() - started < 1.0
    assert replay(tx, []).sent == 0
    # Real-time scheduling when allowed (root here), always restored afterwards.
    policy = os.sched_getscheduler(0)
    rt = replay(tx, sent[:5], realtime=True)
    assert rt.sent == 5 and os.sched_getscheduler(0) == policy
    with pytest.raises(ValueError, match="speed"):
        replay(tx, slow, speed=0)


def test_cli_record_and_play(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = channel()
    path = tmp_path / "cli.blf"
    sent = frames(20, 0.001)
    with can.Bus(interface="virtual", channel=name) as src:
        done: list[int] = []
        cli = threading.Thread(
            target=lambda: done.append(
                main(["record", str(path), "-i", "virtual", "-c", name, "--duration", "0.6"])
            )
        )
        cli.start()
        poll_for(lambda: path.exists(), 5.0, message="the log file")  # open: the CLI's bus exists
        for msg in sent:
            src.send(msg)
        cli.join(5)
    assert done == [0]
    assert "recorded 20 frames" in capsys.readouterr().out
    assert ids_and_data(load(path)) == ids_and_data(sent)

    with can.Bus(interface="virtual", channel=name) as sink:
        assert main(["play", str(path), "-i", "virtual", "-c", name, "--speed", "2"]) == 0
        assert ids_and_data(drain(sink, 20)) == ids_and_data(sent)
    assert "replayed" in capsys.readouterr().out
    assert main(["bench", "--seconds", "0.05", "--rates", "1000", "--formats", "log"]) == 0
    assert "1000 Hz log" in capsys.readouterr().out
