"""`create_app()`: the FastAPI application serving one model directory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from .deps import require_api_key
from .errors import install_error_handlers
from .observability import install_observability
from .routes import classify, feedback, health, meta, open311, requests, ui
from .settings import Settings, get_settings
from .state import ServiceState
from .storage import open_store
from .web import install_web

log = logging.getLogger(__name__)

DESCRIPTION = """
Routes Indonesian citizen complaints ("sampah menumpuk di depan pasar", "jukir liar di trotoar
Jl. Tunjungan") to a category and the responsible agency, with calibrated probabilities and a
route-or-review decision. When `ADUAN_API_KEYS` is set, every `/v1` route needs
`Authorization: Bearer <key>` ("Authorize" above); the review routes (`/v1/requests`) and the
operators' workbench (`/ui/`) need it set. Errors are JSON `{"error", "error_type"}`; each
answer carries its trace id in `X-Trace-ID`.
"""


async def _warm_up(state: ServiceState) -> None:
    assert state.batcher is not None
    try:
        await state.batcher.submit([("warm-up: lampu jalan padam", None)])
    except Exception:
        log.exception("warm-up prediction failed; the service stays not ready")
        return
    state.ready = True
    log.info("model %s ready", state.classifier.version if state.classifier else "?")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    state.load()  # ModelDirError propagates: the server refuses to start
    state.store = await asyncio.to_thread(open_store, state.settings)
    assert state.batcher is not None
    await state.batcher.start()
    warm = asyncio.create_task(_warm_up(state))
    try:
        yield
    finally:
        warm.cancel()
        state.ready = False
        await state.batcher.stop()
        if state.store is not None:
            state.store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # /docs is served from the package's own files (install_web): no CDN, no ReDoc.
    app = FastAPI(
        title="aduan",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = ServiceState(settings)
    app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    install_observability(app, app.state.service.metrics)
    auth = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(classify.router, dependencies=auth)
    app.include_router(meta.router, dependencies=auth)
    app.include_router(feedback.router, dependencies=auth)
    app.include_router(requests.router)  # operator keys, checked per route (who changed what)
    app.include_router(open311.router)
    install_web(app, settings)  # mounts /ui/static before the /ui router can claim the prefix
    app.include_router(ui.router)
    ui.install_login_redirect(app)
    return app
