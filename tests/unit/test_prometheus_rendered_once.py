"""The metrics page is rendered at most once per interval, however often it is asked for."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from clove.kernel.services.prometheus_http import RenderedOnce


class CountingApp:
    """A WSGI app standing in for prometheus_client's: each call is one render."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls.append(environ)
        self.started.set()
        self.release.wait(5)
        encoding = "gzip" if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "") else "identity"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Encoding", encoding)])
        return [f"page {len(self.calls)} {environ.get('HTTP_ACCEPT', '')}".encode()]


def get(app: RenderedOnce, **environ: Any) -> tuple[str, list[tuple[str, str]], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"], answer["headers"] = status, headers

    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", **environ}, start_response))
    return answer["status"], answer["headers"], body


def test_scrapes_within_the_interval_share_one_render_and_a_later_one_renders_again() -> None:
    now = [100.0]
    inner = CountingApp()
    app = RenderedOnce(inner, 1.0, min_gap=0.0, clock=lambda: now[0])
    pages = [get(app) for _ in range(50)]
    assert len(inner.calls) == 1 and app.renders == 1
    assert {body for _, _, body in pages} == {b"page 1 "}
    now[0] += 0.99
    assert get(app)[2] == b"page 1 "
    now[0] += 0.02
    assert get(app)[2] == b"page 2 "
    assert len(inner.calls) == 2


def test_each_format_is_its_own_page_and_query_filters_are_ignored() -> None:
    inner = CountingApp()
    app = RenderedOnce(inner, 60.0, min_gap=0.0)
    plain = get(app, QUERY_STRING="name[]=clove_agents")
    om = get(app, HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    gz = get(app, HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert (plain[2], om[2], gz[2]) == (b"page 1 ", b"page 2 application/openmetrics-text; version=1.0.0", b"page 3 ")
    assert ("Content-Encoding", "gzip") in gz[1] and ("Content-Encoding", "identity") in plain[1]
    assert all(call["QUERY_STRING"] == "" for call in inner.calls)  # the whole page, always
    for i in range(10):  # varying the query does not buy a render
        get(app, QUERY_STRING=f"name[]=x{i}")
    assert len(inner.calls) == 3


def test_scrapes_arriving_during_a_render_wait_for_it_and_share_it() -> None:
    inner = CountingApp()
    inner.release.clear()
    app = RenderedOnce(inner, 1.0, min_gap=0.0)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(get(app)[2])) for _ in range(4)]
    threads[0].start()
    assert inner.started.wait(5)
    for thread in threads[1:]:
        thread.start()
    inner.release.set()
    for thread in threads:
        thread.join(5)
    assert results == [b"page 1 "] * 4
    assert len(inner.calls) == 1


def test_other_methods_and_the_favicon_go_straight_through() -> None:
    inner = CountingApp()
    app = RenderedOnce(inner, 60.0, min_gap=0.0)
    get(app, PATH_INFO="/favicon.ico")
    get(app, REQUEST_METHOD="OPTIONS")
    get(app)
    get(app)
    assert len(inner.calls) == 3


def test_pages_leave_at_least_the_gap_apart_to_all_clients_together() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    app = RenderedOnce(CountingApp(), 60.0, min_gap=0.05, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):  # back to back: each waits for the gap after the last
        get(app)
    assert slept == [0.05] * 4
    now[0] += 1.0  # a scrape after a pause does not wait
    get(app)
    assert len(slept) == 4
