"""The console's routes: its pages (static HTML that fetches the JSON API), the API, the live
stream and the actions. Every kernel call is an operator syscall through the bridge, the same
ones the CLI makes (``clove ps``/``logs``/``audit``/``kill``/``estop``/``postmortem``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from clove.cli.console import auth, hil_results
from clove.cli.console.guard import Console, action, api, page
from clove.cli.console.replies import (
    PAGE_CSP,
    REPORT_CSP,
    SECURITY_HEADERS,
    BodyTooLarge,
    error,
    kernel_error,
    parse_fields,
    read_body,
    reply,
)
from clove.errors import CloveError
from clove_sdk.client import CloveClient

STATIC = Path(__file__).with_name("static")
LOG_TAIL = 16 << 10  # bytes of an agent's log on its page
AGENT_RECORDS = 30  # journal records on an agent's page
MAX_AUDIT = 500
RING_QUERY = 10_000  # the most audit.query returns: all of the kernel's ring of recent records
MAX_NAME = 128
PING_SECONDS = 15.0  # an SSE comment keeps proxies and tunnels from closing an idle stream


def _html(name: str) -> Response:
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers={**SECURITY_HEADERS, "Content-Security-Policy": PAGE_CSP})


def _page(name: str) -> Any:
    async def handler(request: Request, console: Console, who: auth.Who) -> Response:
        return _html(name)

    return handler


# ---- login ---------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def login_routes(console: Console) -> list[Route]:
    async def login_form(request: Request) -> Response:
        try:
            auth.check_host(request.headers.get("host"), console.allowed_hosts)
        except auth.Refused as err:
            return error(err.status, err.code, err.message)
        return _html("login.html")

    async def login(request: Request) -> Response:
        try:
            auth.check_host(request.headers.get("host"), console.allowed_hosts)
            auth.check_origin(request.headers.get("origin"), request.headers.get("host"))
            fields = parse_fields(request, await read_body(request))
        except auth.Refused as err:
            return error(err.status, err.code, err.message)
        except BodyTooLarge:
            return error(413, "request.too_large", "request body too large")
        role = console.tokens.role_of(fields.get("token", "").strip())
        target = _safe_next(fields.get("next"))
        if role is None:
            return RedirectResponse(f"/login?failed=1&next={quote(target, safe='/')}", 303, headers=SECURITY_HEADERS)
        session = console.sessions.open(role)
        response = RedirectResponse(target, 303, headers=SECURITY_HEADERS)
        response.set_cookie(auth.COOKIE, session.id, httponly=True, samesite="strict", path="/", secure=request.url.scheme == "https")
        return response

    async def logout(request: Request, console: Console, who: auth.Who, fields: dict[str, str]) -> Response:
        console.sessions.close(request.cookies.get(auth.COOKIE))
        response = RedirectResponse("/login", 303, headers=SECURITY_HEADERS)
        response.delete_cookie(auth.COOKIE, path="/")
        return response

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", action(console, logout), methods=["POST"]),
    ]


# ---- reading -------------------------------------------------------------------------------------


async def session_info(request: Request, console: Console, who: auth.Who) -> Response:
    return reply({"role": who.role.value, "csrf": who.session.csrf if who.session else None, "kernel": console.kernel,
                  "hil": console.hil_results is not None})  # fmt: skip


async def overview(request: Request, console: Console, who: auth.Who) -> Response:
    try:
        return reply(await console.bridge.snapshot())
    except CloveError as err:
        return kernel_error(err)


async def events(request: Request, console: Console, who: auth.Who) -> Response:
    queue = console.bridge.watch()
    if queue is None:
        return error(503, "console.busy", "too many live views open; close one")

    async def stream() -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    snap = await asyncio.wait_for(queue.get(), PING_SECONDS)
                except asyncio.TimeoutError:
                    yield b": ping\n\n"
                    continue
                yield b"event: snapshot\ndata: " + json.dumps(snap, default=str).encode() + b"\n\n"
        finally:
            console.bridge.unwatch(queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"})


def _name(request: Request) -> str | None:
    name = str(request.path_params["name"])
    return name if 0 < len(name) <= MAX_NAME and name.isprintable() else None


def _agent_page(client: CloveClient, name: str) -> dict[str, Any]:
    """Everything on an agent's page, in one trip to the worker thread; a part the kernel
    refuses (the agent was removed, no journal) carries its error instead."""

    def part(fn: Any) -> Any:
        try:
            return fn()
        except CloveError as err:
            return {"error": {"code": err.code, "message": err.message}}

    agents = client.call("agent.list")["agents"]
    info = next((a for a in agents if a.get("name") == name), None)
    metrics = next((m for m in client.call("metrics.agents")["agents"] if m.get("name") == name), None)
    logs = part(lambda: client.logs(name=name, offset=-LOG_TAIL)) if info is not None else None
    return {
        "name": name,
        "agent": info,
        "metrics": metrics,
        "logs": logs,
        "journal": part(lambda: client.call("audit.query", agent_name=name, since_id=0, limit=RING_QUERY)["entries"][-AGENT_RECORDS:]),
        "postmortems": part(lambda: client.call("postmortem.list", name=name)["bundles"]),
    }


async def agent(request: Request, console: Console, who: auth.Who) -> Response:
    name = _name(request)
    if name is None:
        return error(400, "request.invalid", "bad agent name")
    try:
        return reply(await console.bridge.run(lambda c: _agent_page(c, name)))
    except CloveError as err:
        return kernel_error(err)


async def postmortem(request: Request, console: Console, who: auth.Who) -> Response:
    name, bundle = _name(request), str(request.path_params["bundle"])
    if name is None or not 0 < len(bundle) <= MAX_NAME:
        return error(400, "request.invalid", "bad agent or bundle name")
    try:
        data = await console.bridge.call("postmortem.get", name=name, bundle=bundle, include=["log.txt", "journal.jsonl"], max_bytes=256 << 10)
    except CloveError as err:
        return kernel_error(err)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{name}-{bundle}")
    return reply(data, headers={"Content-Disposition": f'attachment; filename="postmortem-{safe}.json"'})


def _int(value: str | None, default: int, low: int, high: int) -> int | None:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None


async def audit(request: Request, console: Console, who: auth.Who) -> Response:
    q = request.query_params
    since, limit = _int(q.get("since"), 0, 0, 1 << 62), _int(q.get("limit"), 100, 1, MAX_AUDIT)
    if since is None or limit is None:
        return error(400, "request.invalid", f"since: a record id >= 0; limit: 1 to {MAX_AUDIT}")
    # With no "since" the newest records are wanted: the kernel answers oldest first, so ask
    # for all it holds (its ring is bounded) and keep the last ``limit``.
    newest = not q.get("since")
    body: dict[str, Any] = {"since_id": since, "limit": RING_QUERY if newest else limit}
    for field, key in (("agent", "agent_name"), ("category", "category")):
        if q.get(field):
            if len(q[field]) > MAX_NAME:
                return error(400, "request.invalid", f"{field}: at most {MAX_NAME} characters")
            body[key] = q[field]
    try:
        entries = (await console.bridge.call("audit.query", **body))["entries"]
    except CloveError as err:
        return kernel_error(err)
    return reply({"entries": entries[-limit:] if newest else entries})


async def audit_verify(request: Request, console: Console, who: auth.Who) -> Response:
    """What ``clove audit --verify`` does: ask the kernel where its journal is, check the chain."""
    from clove.kernel.audit.journal import verify_journal  # only this route needs the journal

    try:
        path = (await console.bridge.run(lambda c: c.kernel_info()))["journal"]
    except CloveError as err:
        return kernel_error(err)
    if not os.path.exists(path):
        return error(404, "notfound", f"no journal at {path}")
    result = await asyncio.to_thread(verify_journal, path)  # file reading, not the kernel's thread
    return reply(dataclasses.asdict(result) | {"complete": result.complete, "lost_records": result.lost_records, "journal": path})


async def devices(request: Request, console: Console, who: auth.Who) -> Response:
    def both(c: CloveClient) -> dict[str, Any]:
        return {"devices": c.call("device.list")["devices"], "interlocks": c.call("interlock.list")["interlocks"]}

    try:
        return reply(await console.bridge.run(both))
    except CloveError as err:
        return kernel_error(err)


async def hil_list(request: Request, console: Console, who: auth.Who) -> Response:
    if console.hil_results is None:
        return reply({"directory": None, "reports": []})
    found = await asyncio.to_thread(hil_results.list_reports, console.hil_results)
    return reply({"directory": console.hil_results, "reports": [dataclasses.asdict(f) for f in found]})


async def hil_file(request: Request, console: Console, who: auth.Who) -> Response:
    hit = hil_results.resolve(console.hil_results, str(request.path_params["path"])) if console.hil_results else None
    if hit is None:
        return error(404, "notfound", "no such report file")
    path, kind = hit
    return FileResponse(path, media_type=kind, headers={**SECURITY_HEADERS, "Content-Security-Policy": REPORT_CSP})


# ---- acting --------------------------------------------------------------------------------------


async def _act(console: Console, syscall: str, soon: str | None, **body: Any) -> Response:
    try:
        result = await console.bridge.call(syscall, **body)
    except CloveError as err:
        return kernel_error(err)
    if soon:
        console.bridge.soon(soon)
    return reply(result)


def lifecycle(verb: str) -> Any:
    async def handler(request: Request, console: Console, who: auth.Who, fields: dict[str, str]) -> Response:
        name = _name(request)
        if name is None:
            return error(400, "request.invalid", "bad agent name")
        return await _act(console, f"agent.{verb}", None, name=name)

    return handler


async def estop(request: Request, console: Console, who: auth.Who, fields: dict[str, str]) -> Response:
    reason = (fields.get("reason") or "console e-stop")[:200]
    body: dict[str, Any] = {"reason": reason}
    if fields.get("name"):
        body["name"] = fields["name"][:MAX_NAME]
    return await _act(console, "interlock.engage", "interlocks", **body)


async def release(request: Request, console: Console, who: auth.Who, fields: dict[str, str]) -> Response:
    name = _name(request)
    if name is None:
        return error(400, "request.invalid", "bad interlock name")
    return await _act(console, "interlock.release", "interlocks", name=name)


def routes(console: Console) -> list[Route]:
    return [
        *login_routes(console),
        Route("/", page(console, _page("overview.html"))),
        Route("/agents/{name}", page(console, _page("agent.html"))),
        Route("/audit", page(console, _page("audit.html"))),
        Route("/devices", page(console, _page("devices.html"))),
        Route("/hil", page(console, _page("hil.html"))),
        Route("/hil/files/{path:path}", page(console, hil_file)),
        Route("/api/session", api(console, session_info)),
        Route("/api/overview", api(console, overview)),
        Route("/api/events", api(console, events)),
        Route("/api/agents/{name}", api(console, agent)),
        Route("/api/agents/{name}/postmortem/{bundle}", api(console, postmortem)),
        Route("/api/audit", api(console, audit)),
        Route("/api/audit/verify", api(console, audit_verify)),
        Route("/api/devices", api(console, devices)),
        Route("/api/hil", api(console, hil_list)),
        *(Route(f"/api/agents/{{name}}/{verb}", action(console, lifecycle(verb)), methods=["POST"]) for verb in ("kill", "pause", "resume")),
        Route("/api/estop", action(console, estop), methods=["POST"]),
        Route("/api/interlocks/{name}/release", action(console, release), methods=["POST"]),
    ]
