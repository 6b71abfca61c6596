"""``clove console`` against a real kernel with real agents: the HTTP rules (tokens, read-only,
CSRF, origin, host, bounds) with a plain HTTP client, then the whole console in headless
Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium; ``make
console-setup`` installs them) with a screenshot of each page under the test's tmp dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_script, requires_root

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

# An e-stop here pauses "alpha": what the operator pressed is visible in the agent's state.
CONFIG = """
[interlocks.halt]
trigger = { event = "HALT" }
actions = [{ pause = ["alpha"] }]
"""

pytestmark = [pytest.mark.integration, requires_root]


class ConsoleProcess:
    """``clove console`` on a free loopback port, its tokens in ``token_file``."""

    def __init__(self, k: KernelProcess, token_file: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clove", "console", "--socket", k.socket, "--listen", "127.0.0.1:0",
             "--token-file", str(token_file), "--interval", "0.5", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
        )  # fmt: skip
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # printed once the socket is bound
        assert first.startswith("console: http://"), first + self.stderr()
        self.url = first.split()[1].rstrip("/")
        self.host = self.url.split("//", 1)[1]
        tokens = json.loads(token_file.read_text())
        self.operator, self.readonly = tokens["operator"], tokens["readonly"]

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read() if self.proc.stderr else ""

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def login(self, http: httpx.Client, token: str) -> str:
        """Log ``http`` in as a browser does; returns the session's CSRF token."""
        r = http.post(f"{self.url}/login", data={"token": token, "next": "/"}, headers={"Origin": self.url})
        assert r.status_code == 303 and r.headers["location"] == "/" and "HttpOnly" in r.headers["set-cookie"], r.text
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        return str(http.get(f"{self.url}/api/session").json()["csrf"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def console(make_kernel: Any, tmp_path: Path) -> Iterator[tuple[KernelProcess, ConsoleProcess]]:
    k = make_kernel(CONFIG)
    results = tmp_path / "hil-results" / "rover-run"
    results.mkdir(parents=True)
    (results / "report.html").write_text("<!doctype html><title>rover</title><h1>rover bench: passed</h1>")
    (results / "report.json").write_text('{"passed": true}')
    c = ConsoleProcess(k, tmp_path / "tokens.json", "--hil-results", str(tmp_path / "hil-results"))
    try:
        yield k, c
    finally:
        c.stop()


def _state(k: KernelProcess, name: str) -> str | None:
    return next((a["state"] for a in k.call("agent.list")["agents"] if a["name"] == name), None)


def test_http_needs_a_token_read_only_cannot_act_and_csrf_origin_host_are_checked(console: Any, tmp_path: Path) -> None:
    k, c = console
    with k.client() as op:
        op.spawn("alpha", agent_script("healthy.py"))
    poll_for(lambda: _state(k, "alpha") == "running", 20, message="alpha running")

    # The token file: made by the console, readable by root and the control socket's group only.
    info = os.stat(tmp_path / "tokens.json")
    assert info.st_mode & 0o777 == 0o640 and info.st_gid == os.stat(k.socket).st_gid

    with httpx.Client(timeout=10) as anon:
        assert anon.get(f"{c.url}/api/overview").status_code == 401
        assert anon.get(f"{c.url}/api/overview").json()["error"]["code"] == "auth.required"
        page = anon.get(f"{c.url}/agents/alpha")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/agents/alpha"
        assert anon.post(f"{c.url}/api/agents/alpha/kill").status_code == 401
        assert anon.get(f"{c.url}/api/overview", headers=c.bearer("not-a-token")).status_code == 401
        wrong = anon.post(f"{c.url}/login", data={"token": "wrong"}, headers={"Origin": c.url})
        assert wrong.status_code == 303 and "set-cookie" not in wrong.headers and "failed=1" in wrong.headers["location"]

    # Read-only sees everything, acts on nothing: 403, and the agent still runs.
    ro = c.bearer(c.readonly)
    seen = httpx.get(f"{c.url}/api/overview", headers=ro, timeout=10).json()
    assert [a["name"] for a in seen["agents"]] == ["alpha"] and seen["interlocks"][0]["name"] == "halt"
    assert httpx.get(f"{c.url}/api/agents/alpha", headers=ro, timeout=10).json()["agent"]["state"] == "running"
    refused = httpx.post(f"{c.url}/api/agents/alpha/kill", headers=ro, timeout=10)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "auth.readonly"
    assert httpx.post(f"{c.url}/api/estop", headers=ro, timeout=10).status_code == 403
    assert _state(k, "alpha") == "running" and not k.call("interlock.list")["interlocks"][0]["engaged"]

    with httpx.Client(timeout=10) as browser:
        csrf = c.login(browser, c.operator)
        # A session's POST without its CSRF token, or with another one: 403, nothing done.
        assert browser.post(f"{c.url}/api/agents/alpha/pause", headers={"Origin": c.url}).json()["error"]["code"] == "csrf.invalid"
        bad = browser.post(f"{c.url}/api/agents/alpha/pause", headers={"Origin": c.url, "X-CSRF-Token": "x" * 43})
        assert bad.status_code == 403 and _state(k, "alpha") == "running"
        # Cross-origin, even with the right CSRF token: refused.
        cross = browser.post(f"{c.url}/api/agents/alpha/pause", headers={"Origin": "http://evil.example", "X-CSRF-Token": csrf})
        assert cross.status_code == 403 and cross.json()["error"]["code"] == "origin.refused"
        # A DNS-rebinding page reaches the console under its own host name: refused.
        rebind = browser.get(f"{c.url}/api/overview", headers={"Host": "evil.example"})
        assert rebind.status_code == 403 and rebind.json()["error"]["code"] == "host.refused"
        # GET never acts.
        assert browser.get(f"{c.url}/api/agents/alpha/pause").status_code == 405
        # An oversized body: 413, not read.
        big = browser.post(f"{c.url}/api/estop", headers={"Origin": c.url, "X-CSRF-Token": csrf}, content=b"x" * (64 << 10))
        assert big.status_code == 413
        # The real thing: same origin, right token. Journaled by the kernel as an operator call.
        ok = browser.post(f"{c.url}/api/agents/alpha/pause", headers={"Origin": c.url, "X-CSRF-Token": csrf})
        assert ok.status_code == 200, ok.text
        poll_for(lambda: _state(k, "alpha") == "paused", 10, message="alpha paused")
        missing = browser.post(f"{c.url}/api/agents/nobody/kill", headers={"Origin": c.url, "X-CSRF-Token": csrf})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "notfound"
        bad_query = browser.get(f"{c.url}/api/audit", params={"limit": "100000"})
        assert bad_query.status_code == 400 and "limit" in bad_query.json()["error"]["message"]
        # Logging out (a form POST with the CSRF field) ends the session on the server too.
        cookie = browser.cookies["clove_console"]
        out = browser.post(f"{c.url}/logout", data={"csrf": csrf}, headers={"Origin": c.url})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert httpx.get(f"{c.url}/api/session", headers={"Cookie": f"clove_console={cookie}"}, timeout=10).status_code == 401
    # A crash leaves a post-mortem bundle: listed on the agent's page, downloadable as JSON.
    with k.client() as op:
        op.spawn("crash", agent_script("segfault.py"))
    bundle = poll_for(lambda: k.call("postmortem.list", name="crash")["bundles"], 20, message="crash's bundle")[0]["bundle"]
    crash = httpx.get(f"{c.url}/api/agents/crash", headers=ro, timeout=10).json()
    assert [b["bundle"] for b in crash["postmortems"]] == [bundle] and crash["agent"]["exit_signal"] == 11
    download = httpx.get(f"{c.url}/api/agents/crash/postmortem/{bundle}", headers=ro, timeout=10)
    assert download.status_code == 200 and download.headers["content-disposition"].startswith("attachment;")
    assert download.json()["summary"]["agent"]["name"] == "crash" and "log.txt" in download.json()["contents"]
    assert httpx.get(f"{c.url}/api/agents/crash/postmortem/nope", headers=ro, timeout=10).status_code in (400, 404)
    records = k.call("audit.query", since_id=0, limit=1000)["entries"]
    assert any(r.get("syscall") == "agent.pause" and r.get("decision") == "allowed" and r.get("agent_name") is None for r in records)

    # Live streams are bounded: one past the limit gets 503 with a structured error.
    from clove.cli.console.bridge import MAX_WATCHERS

    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=MAX_WATCHERS + 2)) as many:
        streams = [many.stream("GET", f"{c.url}/api/events", headers=ro) for _ in range(MAX_WATCHERS)]
        try:
            for s in streams:
                assert s.__enter__().status_code == 200
            over = many.get(f"{c.url}/api/events", headers=ro)
            assert over.status_code == 503 and over.json()["error"]["code"] == "console.busy"
        finally:
            for s in streams:
                s.__exit__(None, None, None)


def test_a_non_loopback_address_is_refused_without_allow_remote(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "clove", "console", "--socket", str(tmp_path / "none.sock"), "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=30, cwd=str(REPO),
    )  # fmt: skip
    assert run.returncode == 1 and "refusing to listen on 0.0.0.0: not a loopback address" in run.stderr
    assert "--allow-remote" in run.stderr and "Traceback" not in run.stderr


# ---- the browser -------------------------------------------------------------------------------------------


@pytest.fixture
def chromium() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (make console-setup installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver: Any, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(driver.find_element("css selector", css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _wait_text(driver: Any, css: str, needle: str, timeout: float = 20.0) -> None:
    poll_for(lambda: needle in _text(driver, css), timeout, interval=0.1, message=f"{needle!r} in {css}: {_text(driver, css)!r}")


def _click(driver: Any, by: str, value: str) -> None:
    """Click, again if the live stream redrew the element between finding and clicking it."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def attempt() -> bool:
        try:
            driver.find_element(by, value).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    poll_for(attempt, 10, interval=0.1, message=f"click {value}")


def test_in_chromium_log_in_watch_an_agent_appear_kill_it_and_e_stop(console: Any, chromium: Any, tmp_path: Path) -> None:
    k, c = console
    driver, shots = chromium, tmp_path / "screenshots"
    shots.mkdir()
    with k.client() as op:
        op.spawn("alpha", agent_script("healthy.py"))

    driver.get(f"{c.url}/")  # no session: the login form
    poll_for(lambda: "/login" in driver.current_url, 10, message="redirected to login")
    driver.save_screenshot(str(shots / "login.png"))
    driver.find_element("id", "token").send_keys(c.operator)
    _click(driver, "id", "login-button")
    _wait_text(driver, "#agents", "alpha")
    _wait_text(driver, "#live", "live")

    # Page load time: a fresh navigation to the overview, logged in, until the load event.
    driver.get(f"{c.url}/")
    _wait_text(driver, "#agents", "alpha")
    timing = driver.execute_script("const n = performance.getEntriesByType('navigation')[0]; return [n.domContentLoadedEventEnd, n.loadEventEnd];")
    print(f"\nconsole overview page load: DOMContentLoaded {timing[0]:.0f} ms, load {timing[1]:.0f} ms")

    # An agent spawned after the page loaded shows up through the live stream.
    with k.client() as op:
        op.spawn("beta", agent_script("healthy.py"), limits={"memory": "128M", "cpu_quota": "20%"})
    _wait_text(driver, "#agent-beta", "running")
    assert "/ 20%" in _text(driver, "#agent-beta") and "128.0M" in _text(driver, "#agent-beta")
    driver.save_screenshot(str(shots / "overview.png"))

    # Its page: limits, a usage chart fed by the stream, the log tail; kill it (two presses).
    _click(driver, "link text", "beta")
    _wait_text(driver, "#info", "running")
    assert "memory" in _text(driver, "#limits")
    chart = "document.querySelector('#cpu-chart polyline')"
    poll_for(lambda: driver.execute_script(f"return {chart} ? {chart}.getAttribute('points').split(' ').length : 0") >= 3, 15,
             message="the CPU chart drawn from three live samples")  # fmt: skip
    driver.save_screenshot(str(shots / "agent.png"))
    _click(driver, "id", "kill")
    assert _state(k, "beta") == "running"  # the first press only asks
    _click(driver, "id", "kill-confirm")
    _wait_text(driver, "#status", "kill: done")
    poll_for(lambda: _state(k, "beta") is None, 15, message="beta gone from the kernel")
    _wait_text(driver, "#info", "gone")

    # The journal: the kill, recorded as an operator call; the chain checks out.
    driver.get(f"{c.url}/audit?category=AGENT_LIFECYCLE&limit=50")
    _wait_text(driver, "#entries", "agent.kill")
    _click(driver, "id", "verify")
    _wait_text(driver, "#verify-result", "CHAIN INTACT")
    driver.save_screenshot(str(shots / "audit.png"))

    # The e-stop: the interlock engages and pauses alpha; release puts it back to armed.
    driver.get(f"{c.url}/devices")
    _wait_text(driver, "#interlock-halt", "armed")
    _click(driver, "id", "estop")
    _wait_text(driver, "#interlock-halt", "ENGAGED")
    _wait_text(driver, "#status", "e-stop: engaged halt")
    assert k.call("interlock.list")["interlocks"][0]["engaged"]
    poll_for(lambda: _state(k, "alpha") == "paused", 10, message="alpha paused by the interlock")
    driver.save_screenshot(str(shots / "devices.png"))
    _click(driver, "id", "release-halt")
    _wait_text(driver, "#interlock-halt", "armed")
    assert not k.call("interlock.list")["interlocks"][0]["engaged"]

    # HIL results: the reports found under --hil-results, each opening as written.
    driver.get(f"{c.url}/hil")
    _wait_text(driver, "#reports", "rover-run/report.html")
    driver.save_screenshot(str(shots / "hil.png"))
    _click(driver, "link text", "rover-run/report.html")
    driver.switch_to.window(driver.window_handles[-1])
    poll_for(lambda: "rover bench: passed" in driver.page_source, 10, message="the report opened")

    for name in ("login", "overview", "agent", "audit", "devices", "hil"):
        assert (shots / f"{name}.png").stat().st_size > 5000, name
    docs_image = REPO / "docs" / "images" / "console.png"
    if os.environ.get("CLOVE_UPDATE_SCREENSHOTS") == "1" or not docs_image.exists():
        shutil.copyfile(shots / "overview.png", docs_image)  # the README's picture: refreshed on request only
    print(f"console screenshots: {shots}")
