"""The HTTP+JSON control API of a running relay or proxy (Toxiproxy's style, on aiohttp).

A test suite in any language switches faults on and off while its own system runs through
``posemu proxy`` (or ``posemu relay`` / ``posemu serial-relay``): everything goes through the
tool's in-process :class:`faults.control.Controller`, so the HTTP API, a schedule and a UI act
alike. It listens on 127.0.0.1 unless ``--control`` names another address with
``--allow-remote``. Bodies are JSON; an error is ``{"error": "…"}`` with 400 (a bad spec, said
before anything changes), 404 (no such toxic) or 409 (the name is taken).

============================  ===========================================================
``GET /version``              ``{"posemu": "0.1.0", "api": 1, "kind": "proxy"}``
``GET /status``               the tool: addresses, profile, counters, toxics
``POST /status``              ``{"enabled": false}``: drop every connection, refuse new ones
``GET /toxics``               every toxic: name, kind, spec, enabled, armed, onset, group
``POST /toxics``              ``{"spec": "network.weak-wifi@drops", "name": "wifi",
                              "enabled": true}`` → 201 and the toxic; a message rule is
                              ``"rule:respond:rc=96,mti=0200"``
``GET /toxics/{name}``        one toxic
``POST /toxics/{name}``       ``{"enabled": false}``: switch it off (or on) and keep it
``DELETE /toxics/{name}``     remove it → 204
``POST /reset``               remove every toxic, enable the tool → 204
``GET /events?since=N``       the trace from entry N (masked): ``{"next": M, "events": […]}``
============================  ===========================================================
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from aiohttp import web

from faults.control import Controller
from protocol.errors import ConfigError

API_VERSION = 1
MAX_EVENTS = 5000


def _version() -> str:
    try:
        return metadata.version("posemu")
    except metadata.PackageNotFoundError:
        return "0"


def _err(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        doc = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body is not JSON"}),
                                 content_type="application/json") from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}),
                                 content_type="application/json")
    return doc


def make_app(controller: Controller) -> web.Application:
    """The aiohttp application for one controller."""
    routes = web.RouteTableDef()

    @routes.get("/version")
    async def version(request: web.Request) -> web.Response:
        return web.json_response({"posemu": _version(), "api": API_VERSION, "kind": controller.kind})

    @routes.get("/status")
    @routes.get("/")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(controller.status())

    @routes.post("/status")
    async def set_status(request: web.Request) -> web.Response:
        doc = await _body(request)
        on = doc.get("enabled")
        if not isinstance(on, bool):
            return _err(400, 'give {"enabled": true} or {"enabled": false}')
        setter = getattr(controller, "set_enabled", None)
        if setter is None:
            return _err(400, f"the {controller.kind} cannot be switched off as a whole; remove its toxics")
        setter(on)
        return web.json_response(controller.status())

    @routes.get("/toxics")
    async def toxics(request: web.Request) -> web.Response:
        return web.json_response([t.to_json() for t in controller.toxics()])

    @routes.post("/toxics")
    async def add(request: web.Request) -> web.Response:
        doc = await _body(request)
        spec, name, enabled = doc.get("spec"), doc.get("name"), doc.get("enabled", True)
        if not isinstance(spec, str) or (name is not None and not isinstance(name, str)) \
                or not isinstance(enabled, bool):
            return _err(400, 'give {"spec": "ID[@PRESET][:k=v,…]", "name": "optional", "enabled": true}')
        if name is not None and any(t.name == name for t in controller.toxics()):
            return _err(409, f"a toxic named {name!r} is already there")
        try:
            toxic = controller.arm(spec, name=name, enabled=enabled)
        except ConfigError as e:
            status = 409 if "already there" in str(e) else 400
            return _err(status, str(e))
        return web.json_response(toxic.to_json(), status=201)

    def _find(name: str) -> Any:
        return next((t for t in controller.toxics() if t.name == name), None)

    @routes.get("/toxics/{name}")
    async def get_one(request: web.Request) -> web.Response:
        t = _find(request.match_info["name"])
        return _err(404, f"no toxic named {request.match_info['name']!r}") if t is None else \
            web.json_response(t.to_json())

    @routes.post("/toxics/{name}")
    async def update(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if _find(name) is None:
            return _err(404, f"no toxic named {name!r}")
        doc = await _body(request)
        on = doc.get("enabled")
        if not isinstance(on, bool):
            return _err(400, 'give {"enabled": true} or {"enabled": false}')
        try:
            return web.json_response(controller.enable(name, on).to_json())
        except ConfigError as e:
            return _err(400, str(e))

    @routes.delete("/toxics/{name}")
    async def remove(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if _find(name) is None:
            return _err(404, f"no toxic named {name!r}")
        controller.disarm(name)
        return web.Response(status=204)

    @routes.post("/reset")
    async def reset(request: web.Request) -> web.Response:
        controller.reset()
        setter = getattr(controller, "set_enabled", None)
        if setter is not None:
            setter(True)
        return web.Response(status=204)

    @routes.get("/events")
    async def events(request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query.get("limit", str(MAX_EVENTS)))
        except ValueError:
            return _err(400, "since and limit are whole numbers")
        entries = controller.trace.entries
        since = max(0, since)
        chunk = entries[since:since + max(1, min(limit, MAX_EVENTS))]
        return web.json_response({"next": since + len(chunk), "events": [json.loads(e.to_json()) for e in chunk]})

    app = web.Application()
    app.add_routes(routes)
    return app


class ControlServer:
    """``await ControlServer.start(controller, host, port)``; ``.address``; ``await .close()``."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite) -> None:
        self._runner = runner
        self._site = site

    @classmethod
    async def start(cls, controller: Controller, host: str = "127.0.0.1", port: int = 0) -> ControlServer:
        runner = web.AppRunner(make_app(controller), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        return cls(runner, site)

    @property
    def address(self) -> tuple[str, int]:
        server = self._site._server
        sockets = getattr(server, "sockets", None)
        if not sockets:
            raise RuntimeError("the control API is not listening")
        name = sockets[0].getsockname()
        return (str(name[0]), int(name[1]))

    async def close(self) -> None:
        await self._runner.cleanup()
