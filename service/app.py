"""`create_app()`: the FastAPI application serving one model directory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from functools import partial

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import Counter
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from aduan import __version__

from .database import DatabaseBusy
from .deps import require_api_key, require_reader
from .dispatch import Dispatcher, DispatchMetrics, DispatchSettings, followup_loop
from .drift import feedback_agreement
from .errors import document_errors, install_error_handlers
from .followup import install as install_followup
from .guard import AdmissionControl, RequestGuard
from .keys import KeyRing
from .observability import install_observability
from .offices import OfficeBook, known_names
from .openapi import document_security
from .ratelimit import RateLimiter
from .resolution import ResolutionModel
from .routes import admin, classify, feedback, health, meta, office, open311, requests, ui
from .settings import Settings, get_settings
from .state import ServiceState
from .storage import open_store
from .web import install_web

log = logging.getLogger(__name__)

DESCRIPTION = """
Routes Indonesian citizen complaints ("sampah menumpuk di depan pasar", "jukir liar di trotoar
Jl. Tunjungan") to a category and the responsible agency, with calibrated probabilities and a
route-or-review decision. When classify or operator keys are configured (`ADUAN_API_KEYS`,
`ADUAN_OPERATOR_KEYS` or the keys file), every `/v1` route needs `Authorization: Bearer <key>`
("Authorize" above) holding its scope; the review routes (`/v1/requests`, `/v1/feedback`) and
the operators' workbench (`/ui/`) need an operator key; `/v1/admin` routes need an admin key
(`ADUAN_ADMIN_KEYS`). Errors are JSON `{"error", "error_type"}`; each answer carries its trace
id in `X-Trace-ID` and names the model version that gave it in `X-Model-Version`.
"""


async def _watch_database(state: ServiceState) -> None:
    """Check the database every `db_check_interval_s`: readiness reports it, and recovery is
    noticed (and logged) without waiting for a request."""
    while True:
        await asyncio.sleep(state.settings.db_check_interval_s)
        store = state.store
        if store is not None:
            try:
                await store.run(store.ping)
            except DatabaseBusy as exc:  # every database thread is stuck
                store.mark_unavailable(str(exc))


async def _warm_up(state: ServiceState) -> None:
    try:
        await state.warm_up()
    except Exception:
        log.exception("warm-up prediction failed; the service stays not ready")
        return
    state.ready = True
    log.info("model %s ready", state.version or "?")


def _reload_on_sighup(state: ServiceState, tasks: set[asyncio.Task[object]]) -> bool:
    """`kill -HUP <pid>` reloads the model; only possible in the main thread's loop (the real
    server, not a test client) and where SIGHUP exists."""
    loop = asyncio.get_running_loop()

    def reload() -> None:
        task: asyncio.Task[object] = asyncio.create_task(state.reload("SIGHUP"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        return False
    return True


def _start_followup(
    app: FastAPI, state: ServiceState, tasks: set[asyncio.Task[object]]
) -> Dispatcher | None:
    """With an offices file: routed complaints are followed up, and (unless `followup_loop`
    is off) this process dispatches webhook events and sweeps deadlines."""
    book: OfficeBook = app.state.offices
    settings = state.settings
    if book.path is None or state.store is None:
        return None
    pipeline = state.pipeline
    if pipeline is not None:
        gazetteer = pipeline.resolver.gazetteer if pipeline.resolver else None
        book.warn_unknown(
            known_names(
                pipeline.classifier.classes_["agency"],
                gazetteer.kecamatan_of if gazetteer else (),
                gazetteer.kecamatans if gazetteer else (),
            )
        )
    deadlines = ResolutionModel(settings.deadline_model) if settings.deadline_model else None
    install_followup(state.store, book, deadlines)
    if not settings.followup_loop:
        return None
    dispatcher = Dispatcher(
        state.store,
        book,
        DispatchSettings.of(settings),
        metrics=app.state.dispatch_metrics,
    )
    loop = followup_loop(
        dispatcher,
        settings.dispatch_interval_s,
        settings.sweep_interval_s,
        settings.live_accuracy_days,
    )
    tasks.add(asyncio.create_task(loop))
    return dispatcher


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    state.load()  # ModelDirError/RegistryError propagate: the server refuses to start
    state.store = await asyncio.to_thread(open_store, state.settings, serving=True)
    if state.store is not None:
        state.drift.feedback_source = partial(feedback_agreement, state.store)
    await state.start()
    tasks: set[asyncio.Task[object]] = {
        asyncio.create_task(_warm_up(state)),
        asyncio.create_task(_watch_database(state)),
    }
    if state.registry is not None:
        tasks.add(asyncio.create_task(state.watch_registry()))
    dispatcher = _start_followup(app, state, tasks)
    sighup = _reload_on_sighup(state, tasks)
    try:
        yield
    finally:
        if sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in tasks:
            task.cancel()
        state.ready = False
        if dispatcher is not None:
            dispatcher.close()
        await state.close()
        if state.store is not None:
            state.store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # /docs is served from the package's own files (install_web): no CDN, no ReDoc.
    app = FastAPI(
        title="aduan",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    state = app.state.service = ServiceState(settings)
    app.state.keys = KeyRing(settings)
    app.state.offices = OfficeBook(settings.offices_file)
    app.state.dispatch_metrics = (
        DispatchMetrics(state.metrics.registry) if settings.offices_file else None
    )
    app.state.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    app.state.explain_limiter = RateLimiter(settings.explain_rate)
    app.state.public_limiter = RateLimiter(settings.public_read_rate)
    app.state.auth_failures = RateLimiter(
        settings.auth_failures / settings.auth_failure_period_s, settings.auth_failures
    )
    app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    # Innermost: the body is capped and checked before any route parses it, and its refusals
    # are still logged, counted and given security headers by the middleware around it.
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        draining=lambda: state.draining,
    )
    install_observability(app, app.state.service.metrics, lambda: app.state.service.version)
    app.include_router(health.router)
    app.include_router(classify.router, dependencies=[Depends(require_api_key)])
    app.include_router(meta.router, dependencies=[Depends(require_reader)])
    app.include_router(feedback.router)  # operator keys, checked per route
    app.include_router(requests.router)  # operator keys, checked per route (who changed what)
    app.include_router(open311.router)
    app.include_router(office.router)  # office staff keys (the offices file), checked per route
    app.include_router(admin.router)  # its own key: ADUAN_ADMIN_KEYS
    install_web(app, settings)  # mounts /ui/static before the /ui router can claim the prefix
    app.include_router(ui.router)
    ui.install_login_redirect(app)
    shed = Counter(
        "aduan_shed_total",
        "Requests refused with 429 at the door because the service was overloaded",
        registry=state.metrics.registry,
    )
    app.add_middleware(
        AdmissionControl,
        max_wait_s=settings.max_queue_wait_s,
        max_inflight=settings.max_inflight,
        on_shed=shed.inc,
    )
    install_cors(app, settings)
    # Outermost: the client's address and scheme as a trusted proxy in front says (rate
    # limits, failed-login counts, Secure cookies, HSTS); anyone else's headers are ignored.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    document_errors(app)
    document_security(app, app.state.keys)  # last: it rebuilds the document per key state
    return app


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Off unless `ADUAN_CORS_ORIGINS` names origins: browsers then let pages of those origins
    call the API with a Bearer key (never with cookies: the workbench is same-origin)."""
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "PATCH"],
        allow_headers=["Authorization", "Content-Type", "X-Trace-ID"],
        expose_headers=["X-Trace-ID", "X-Model-Version", "Retry-After"],
        allow_credentials=False,
        max_age=600,
    )
