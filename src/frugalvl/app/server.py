"""The FastAPI application: the server's objects, the session cookie, errors as JSON, and the routers
of :mod:`.routes` (docs/app.md)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from ..errors import UserError
from ..raster import IMAGE_SUFFIXES
from .config import AppConfig
from .engine import ModelHub
from .jobs import RunWorker
from .routes import ROUTERS
from .routes.common import NotFound
from .routes.page import STATIC
from .safety import origin_refusal, scrub
from .sessions import COOKIE, SessionStore, TooLarge

log = logging.getLogger(__name__)


def bundled_samples(config: AppConfig) -> dict[str, Path]:
    """Sample images: ``examples/data`` of a source checkout, plus the config's."""
    folders = [Path(__file__).resolve().parents[3] / "examples" / "data"]
    found = {}
    for p in [f for d in folders if d.is_dir() for f in sorted(d.iterdir())] + list(config.samples):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            found[p.stem] = p
    return found


def create_app(config: AppConfig) -> FastAPI:
    sessions = SessionStore(
        config.workdir, config.session_ttl_s, config.max_sessions, config.max_images, config.max_session_mb
    )
    hub = ModelHub(config)
    worker = RunWorker(hub)

    def close() -> None:
        sessions.close()
        worker.close()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        close()

    app = FastAPI(title="frugalvl app", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config, app.state.sessions, app.state.hub, app.state.worker = config, sessions, hub, worker
    app.state.samples = bundled_samples(config)
    app.state.close = close
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, exempt=("/api/images/upload",))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in ROUTERS:
        app.include_router(router)

    @app.middleware("http")
    async def session_cookie(request: Request, call_next):
        if request.url.path.startswith("/static/"):
            return await call_next(request)
        session = sessions.get(request.cookies.get(COOKIE))
        fresh = session is None
        if session is None:
            try:
                session = sessions.create()
            except UserError as exc:
                return error_response(exc, sessions)
        request.state.session = session
        response = await call_next(request)
        if fresh:
            response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", max_age=int(config.session_ttl_s))
        return response

    @app.middleware("http")  # added last: runs first, before any session is made
    async def same_origin(request: Request, call_next):
        refused = origin_refusal(config, request.method, request.headers)
        if refused is not None:
            return JSONResponse({"error": refused}, status_code=403)
        return await call_next(request)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return error_response(exc, sessions)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return JSONResponse({"error": scrub(str(exc), sessions.root) or "not found in this session"}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": validation_message(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error: the server's log has the details"}, status_code=500)

    return app


MAX_BODY_BYTES = 1 << 20  # a JSON request (uploads have their own limit)


class BodyLimit:
    """ASGI middleware: a request body (declared or chunked) above ``limit`` bytes is refused with
    413 while it arrives, instead of being read into memory in full (uploads: :mod:`.routes.images`)."""

    def __init__(self, app, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "") in self.exempt:
            return await self.app(scope, receive, send)
        too_large = TooLarge(f"the request is more than this server reads ({self.limit >> 10} kB)")
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"error": str(too_large)}, status_code=413, headers={"Connection": "close"})
            return await response(scope, receive, send)
        body, more = b"", True  # read here, at most ``limit`` bytes, then handed on
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                response = JSONResponse({"error": str(too_large)}, status_code=413, headers={"Connection": "close"})
                return await response(scope, receive, send)
        return await self.app(
            scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send
        )


def _replay(messages: list[dict], then=None):
    """An ASGI ``receive`` that gives ``messages`` first, then what ``then`` gives."""

    async def receive():
        if messages:
            return messages.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


def error_response(exc: UserError, sessions: SessionStore) -> JSONResponse:
    """One line of JSON for a refused request: 400, or the error's own ``status`` (413, 429). A body too
    large also closes the connection, so the server stops reading what the client still sends."""
    status = getattr(exc, "status", 400)
    headers = {"Connection": "close"} if status == 413 else None
    return JSONResponse({"error": scrub(str(exc), sessions.root)}, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    """The first problem of a request that does not fit the API's types, in one line."""
    errors = exc.errors()
    if not errors:
        return "the request does not fit this API"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    message = str(first.get("msg", "invalid value")).splitlines()[0][:200]
    return f"{where or 'request'}: {message}"
