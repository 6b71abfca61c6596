"""Serial through the kernel: a real driver host on one end of a pseudo-terminal pair, this
test on the other end playing the device; agents with write-size grants."""

from __future__ import annotations

import os
import select

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

GRANT = {"ops": ["write", "read"], "max_write_bytes": 64}


@pytest.fixture
def pty_kernel(make_kernel):  # noqa: ANN001, ANN201
    master, slave = os.openpty()
    k = make_kernel(f'[devices.gps]\ndriver = "serial"\nport = "{os.ttyname(slave)}"\nbaudrate = 9600\n')
    os.close(slave)  # the host opens the slave by name
    poll_for(lambda: k.call("device.info", device="gps")["device"]["state"] == "ready", 20, message="gps ready")
    yield k, master
    os.close(master)


def _read_master(master: int, want: bytes) -> bytes:
    got = b""
    while want not in got:
        ready, _, _ = select.select([master], [], [], 10)
        assert ready, f"no {want!r} from the device within 10 s (got {got!r})"
        got += os.read(master, 4096)
    return got


@pytest.mark.parametrize("mode", ["sdk", "pyserial"])
def test_agent_queries_the_device_and_reads_lines(pty_kernel, mode):
    k, master = pty_kernel
    with k.client() as op:
        op.spawn("gps-reader", agent_script("serial_user.py"), args=[mode], devices={"gps": GRANT})
        poll_for(lambda: b"READY" in op.logs(name="gps-reader")["data"], 15, message="reader ready")
        assert b"PING\n" in _read_master(master, b"PING\n")
        os.write(master, b"$GPGGA,123519,4807.038,N*47\r\n$GPRMC,1235")
        os.write(master, b"19,A*6A\r\n")  # a line split across two writes
        report = read_report(k, "gps-reader")
    assert report["lines"] == ["$GPGGA,123519,4807.038,N*47\r\n", "$GPRMC,123519,A*6A\r\n"]
    assert report["big"] == "perm.denied" or "100" in report["big"]
    if mode == "sdk":
        assert report["write"] == {"written": 5}
