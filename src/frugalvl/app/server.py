"""The FastAPI application: the server's objects, the session cookie, errors as JSON, and the routers
of :mod:`.routes` (docs/app.md)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
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
from .sessions import COOKIE, SessionStore

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
    sessions = SessionStore(config.workdir, config.session_ttl_s)
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
            session = sessions.create()
        request.state.session = session
        response = await call_next(request)
        if fresh:
            response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", max_age=int(config.session_ttl_s))
        return response

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return JSONResponse({"error": str(exc) or "not found in this session"}, status_code=404)

    return app
