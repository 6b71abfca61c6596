"""The whole CloveClient API, twice in one kernel lifetime, with nothing left behind between runs."""

from __future__ import annotations

import pytest

from clove.testing.httpserver import HttpTestServer
from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def test_the_whole_api_twice_with_nothing_leaking(kernel):
    with HttpTestServer() as web, kernel.client() as op:
        url = web.route("/tour", body="ok")
        session = op.hello()["session_id"]
        reports, held = [], []
        for _ in range(2):
            r = op.call(
                "agent.spawn",
                name="tourist",
                script=agent_script("api_tour.py"),
                args=[str(session), url],
                permissions={"http_domains": ["127.0.0.1"], "http_methods": ["GET", "HEAD"]},
            )
            reports.append(read_report(kernel, "tourist", timeout=60))
            poll_for(lambda: agent_row(kernel, "tourist")["state"] == "exited", timeout=20, message="tour end")
            got = op.recv_messages(10)["messages"]
            assert [(m["from_id"], m["message"]) for m in got] == [(r["id"], {"hello": "operator"})]
            assert op.remove(name="tourist")
            held.append(poll_for(lambda: (h := op.kernel_info()["resources"])["agents"] == 0 and h, message="agent gone"))
        first, second = reports
        assert first == second
        assert held[0] == held[1]
        assert held[1]["names"] == 0 and held[1]["exec_jobs"] == 0 and held[1]["http_pending"] == 0
        assert held[1]["subscribers"] == 0 and held[1]["async_queues"] == 0
    assert first["recv"] == [{"n": 1}] and first["send_nobody"] == "notfound"
    assert first["fetch"] == {"tour:g": {"v": 1}, "tour:a": [1, 2], "tour:s": "s"} and first["deleted"] == [True, True, True]
    assert first["events"] == [["tour.evt", {"x": 1}]]
    assert first["read"] == "hello world" and first["read_tmp"] == [3, "tmp"] and first["read_denied"] == "perm.denied"
    assert first["exec"] == {"stdout": "hi\n", "stderr": "err\n", "exit_code": 3}
    assert first["http"] == 200 and first["http_denied"] == "perm.denied"
    assert first["async"] == [["e1", "SYS_EXEC", True], ["h1", "SYS_HTTP", True]]
    assert first["metrics"] == [True, True, True] and first["level"] == "standard"
    assert first["think"] is False  # no LLM provider configured: a clear error, not a hang
    assert first["exit"] is True
