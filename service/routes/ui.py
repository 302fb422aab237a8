"""The operators' workbench (`/ui/`): log in with an operator key, review the queue (confirm or
correct a prediction, set status and a note), and the ML engineer's model page. Server-rendered
templates, a little JavaScript for keyboard shortcuts; forms carry a CSRF token."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from aduan.model.performance import to_records
from aduan.service import duplicates, followup, intake, merges
from aduan.service.deps import (
    ReadyStateDep,
    get_keys,
    identify,
    is_staff,
    throttle_explanations,
)
from aduan.service.dispatch import dead_letters
from aduan.service.errors import ApiError
from aduan.service.followup import STATUSES as FOLLOWUP_STATUSES
from aduan.service.followup import Action, FollowUpError, escalated, followup_view, inbox
from aduan.service.followup import act as act_on
from aduan.service.keys import OPERATOR
from aduan.service.offices import OfficeBook
from aduan.service.performance import BYS, performance, plot_png, plots_installed
from aduan.service.review import (
    STATUSES,
    Changes,
    ReviewError,
    list_requests,
    parse_moment,
    request_view,
    review_outcomes,
    update_request,
)
from aduan.service.review import QueueFilter as Filter
from aduan.service.route_accuracy import live_accuracy
from aduan.service.state import ServiceState
from aduan.service.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Session,
    Sessions,
    csrf_ok,
    same_origin,
    set_cookie,
    templates,
)
from aduan.service.workbench import (
    drift_figures,
    model_summary,
    plot_files,
    plot_path,
    queue_items,
    reliability_svg,
)

router = APIRouter(prefix="/ui", include_in_schema=False)
PAGE_SIZE = 20
_FILTERS = (
    "route",
    "status",
    "agency",
    "category",
    "kecamatan",
    "reviewed",
    "since",
    "until",
    "repeat",
    "merged",
)
_SORTS = {"received_at": "Terlama dulu", "-received_at": "Terbaru dulu"}
_SORTS |= {"agency_score": "Skor instansi terendah", "-agency_score": "Skor instansi tertinggi"}


class LoginNeeded(Exception):
    """No valid session: pages redirect to the login form, fetches get 401."""


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def current_session(request: Request) -> Session:
    session = _sessions(request).read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginNeeded
    return session


SessionDep = Annotated[Session, Depends(current_session)]


def install_login_redirect(app: Any) -> None:
    @app.exception_handler(LoginNeeded)
    async def _login(request: Request, exc: LoginNeeded) -> Response:
        if request.method == "GET" and "fetch" not in request.headers.get("x-requested-with", ""):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", 303)
        return JSONResponse({"error": "log in first", "error_type": "unauthorized"}, 401)


def _safe_next(target: str | None) -> str:
    # Only pages of this workbench: never an open redirect.
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/queue"


def _check_form(request: Request, session: Session, token: str | None) -> None:
    if not same_origin(request) or not csrf_ok(session.csrf, token):
        raise ApiError(403, "forbidden", "the form is stale or comes from another site: reload")


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/queue", 303)


def _login_page(
    request: Request, next: str | None, failed: bool = False, wait: str | None = None
) -> HTMLResponse:
    token = _sessions(request).issue_login_token()
    response = templates.TemplateResponse(
        request,
        "login.html",
        {
            "csrf": token,
            "next": _safe_next(next),
            "failed": failed,
            "wait": wait,
            "enabled": get_keys(request).any_with(OPERATOR),
        },
        status_code=429 if wait else 200,
        headers={"Retry-After": wait} if wait else None,
    )
    set_cookie(response, request, LOGIN_COOKIE, token, 3600)
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None, failed: bool = False) -> HTMLResponse:
    return _login_page(request, next, failed)


@router.post("/login")
def login(
    request: Request,
    key: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/ui/queue",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    if not same_origin(request) or not expected or not csrf_ok(expected, csrf):
        raise ApiError(403, "forbidden", "the login form is stale: reload it")
    try:
        found = identify(request, key.strip())  # failures count against this address
    except ApiError as exc:
        if exc.status != 429:
            raise
        return _login_page(request, next, wait=exc.headers.get("Retry-After", "60"))
    if found is None or not found.allows(OPERATOR):
        return RedirectResponse(f"/ui/login?{urlencode({'next': next, 'failed': 1})}", 303)
    response = RedirectResponse(_safe_next(next), 303)
    set_cookie(response, request, SESSION_COOKIE, _sessions(request).issue(found), SESSION_SECONDS)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(
    request: Request, session: SessionDep, csrf: Annotated[str, Form()] = ""
) -> RedirectResponse:
    """Ends the session on the server: the old cookie, replayed, opens nothing."""
    _check_form(request, session, csrf)
    _sessions(request).end(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _filter(params: dict[str, str]) -> Filter:
    reviewed = {"yes": True, "no": False}.get(params.get("reviewed", ""))
    return Filter(
        route=params.get("route") or None,
        status=(params["status"],) if params.get("status") else (),
        agency=params.get("agency") or None,
        category=params.get("category") or None,
        kecamatan=params.get("kecamatan") or None,
        reviewed=reviewed,
        since=parse_moment(params["since"], "since") if params.get("since") else None,
        until=parse_moment(params["until"], "until", True) if params.get("until") else None,
        repeat_reporter={"yes": True, "no": False}.get(params.get("repeat", "")),
        include_merged=params.get("merged") == "yes",
    )


def _choices(state: ServiceState) -> dict[str, Any]:
    pipeline = state.pipeline
    assert pipeline is not None and state.taxonomy is not None
    resolver = pipeline.resolver
    # Every taxonomy category (a correction may teach the next model a new one); agencies are
    # the live model's labels, as POST /v1/feedback requires.
    return {
        "agencies": list(pipeline.classifier.classes_["agency"]),
        "categories": [(c.code, c.name) for c in state.taxonomy.categories],
        "kecamatans": resolver.gazetteer.kecamatans if resolver else [],
        "statuses": STATUSES,
        "sorts": _SORTS,
    }


def _staff_of(request: Request, session: Session) -> list[str]:
    book: OfficeBook = request.app.state.offices
    return book.offices_of(session.operator)


def _restricted(request: Request, session: Session) -> bool:
    """An office's staff (`deps.is_staff`): never the operators' pages, even when the offices
    file no longer lists the key's office."""
    return is_staff(request, session.operator)


@router.get("/queue")
async def queue(request: Request, state: ReadyStateDep, session: SessionDep) -> Response:
    assert state.store is not None and state.pipeline is not None
    if _restricted(request, session):
        return RedirectResponse("/ui/inbox", 303)  # an office's staff see their inbox only
    query = request.query_params
    # The queue opens on what waits for an operator: sent to review, still open.
    params = {name: query.get(name, "") for name in _FILTERS}
    if "route" not in query:
        params["route"] = "review"
    if "status" not in query:
        params["status"] = "open"
    sort = query.get("sort", "received_at")
    error = None
    try:
        page = await state.store.run(
            list_requests, state.store, _filter(params), sort, query.get("cursor"), PAGE_SIZE
        )
    except ReviewError as exc:
        error, page = str(exc), None
    pipeline = state.pipeline
    items = await asyncio.to_thread(queue_items, pipeline, page.rows) if page else []
    on_top = await state.store.run(escalated, state.store)
    dead = len(await state.store.run(dead_letters, state.store))
    found = await state.store.run(
        duplicates.summaries, state.store, [item["request_id"] for item in items]
    )
    for item in items:
        item.update(found[item["request_id"]])
    base = {**{k: v for k, v in params.items() if v}, "sort": sort}
    return templates.TemplateResponse(
        request,
        "queue.html",
        {
            "session": session,
            "followup": request.app.state.offices.path is not None,
            "items": items,
            "params": params,
            "sort": sort,
            "error": error,
            "next_url": (
                f"/ui/queue?{urlencode({**base, 'cursor': page.next_cursor})}"
                if page and page.next_cursor
                else None
            ),
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "on_demand": pipeline.classifier.config.get("model_type") != "aduan-tfidf",
            "escalated": [{**request_view(r), "followup": followup_view(f)} for r, f in on_top],
            "dead_letters": dead,
            **_choices(state),
        },
    )


_DUPLICATE_ACTIONS: dict[str, Any] = {
    "merge": merges.merge,
    "unmerge": merges.unmerge,
    "not_duplicate": merges.not_duplicate,
}


@router.post("/requests/{request_id}")
async def act(
    request_id: str,
    request: Request,
    state: ReadyStateDep,
    session: SessionDep,
    action: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
    agency: Annotated[str, Form()] = "",
    category: Annotated[str, Form()] = "",
    status: Annotated[str, Form()] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    other: Annotated[str, Form(max_length=36)] = "",
    next: Annotated[str, Form()] = "/ui/queue",
) -> Response:
    """`confirm`: the prediction is right (it becomes the corrected labels) and the complaint
    moves to in_progress; `save`: the selected labels (when changed), status and note;
    `reroute`: an escalated complaint goes to the selected agency; `merge` into, or
    `not_duplicate` of, the request `other`; `unmerge`."""
    _check_form(request, session, csrf)
    assert state.store is not None
    if _restricted(request, session):
        raise ApiError(403, "forbidden", "an office's staff act in their inbox (/ui/inbox)")
    if action in _DUPLICATE_ACTIONS:
        work, *args = _DUPLICATE_ACTIONS[action], *([other] if action != "unmerge" else [])
        try:
            await state.store.run(work, state.store, request_id, *args, session.operator)
        except LookupError as exc:
            raise ApiError(404, "not_found", f"no stored request {exc.args[0]!r}") from exc
        except duplicates.DuplicateError as exc:
            raise ApiError(422, "validation_error", str(exc)) from exc
        request.state.log_extra = {
            "operator": session.operator,
            "request_id": request_id,
            "action": action,
        }
        if "fetch" in request.headers.get("x-requested-with", ""):
            return JSONResponse({"ok": True})
        return RedirectResponse(_safe_next(next), 303)
    row = await state.store.run(state.store.get_request, request_id)
    if row is None:
        raise ApiError(404, "not_found", f"no stored request {request_id!r}")
    if action == "confirm":
        changes = Changes(
            corrected_agency=row.agency,
            corrected_category=row.category,
            status="in_progress" if row.status == "open" else None,
        )
    elif action == "save":
        agency = agency if agency != (row.corrected_agency or row.agency) else ""
        category = category if category != (row.corrected_category or row.category) else ""
        intake.check_labels(state, agency or None, category or None)
        changes = Changes(
            status=status or None,
            note=note.strip() or None,
            corrected_agency=agency or None,
            corrected_category=category or None,
            clear=frozenset() if note.strip() else frozenset({"note"}),
        )
    elif action == "reroute":
        # An escalated complaint sent to the chosen agency, even the one the model predicted.
        intake.check_labels(state, agency or None, category or None)
        changes = Changes(
            corrected_agency=agency or row.agency,
            corrected_category=category or row.corrected_category or row.category,
            status="in_progress" if row.status == "open" else None,
        )
    else:
        raise ApiError(
            422,
            "validation_error",
            "action must be confirm, save, reroute, merge, unmerge or not_duplicate",
        )
    try:
        outcome = await state.store.run(
            update_request, state.store, request_id, changes, session.operator
        )
    except ReviewError as exc:
        raise ApiError(422, "validation_error", str(exc)) from exc
    assert outcome is not None
    updated, events = outcome
    request.state.log_extra = {
        "operator": session.operator,
        "request_id": request_id,
        "changed": sorted({e.field for e in events}),
    }
    if "fetch" in request.headers.get("x-requested-with", ""):
        view = request_view(updated, include_text=False)
        return JSONResponse({"ok": True, "request": view})
    return RedirectResponse(_safe_next(next), 303)


@router.get("/requests/{request_id}/explanation")
async def explanation(
    request_id: str, request: Request, state: ReadyStateDep, session: SessionDep
) -> JSONResponse:
    """Leave-one-word-out for the live model, computed when the operator asks (throttled per
    operator, and queued with the model's other work)."""
    assert state.store is not None
    row = await state.store.run(state.store.get_request, request_id)
    if row is None:
        raise ApiError(404, "not_found", f"no stored request {request_id!r}")
    if _restricted(request, session):
        # The explanation quotes the text's words: an office's staff, only for its own.
        offices = _staff_of(request, session)
        if not await state.store.run(followup.visible_to, state.store, request_id, offices):
            raise ApiError(403, "forbidden", "the complaint is not one of your office's")
    throttle_explanations(request, session.operator)
    found = await intake.explain_text(state, row.text, "agency", "leave_one_word_out")
    return JSONResponse(found.to_dict())


@router.get("/model")
async def model_page(request: Request, state: ReadyStateDep, session: SessionDep) -> HTMLResponse:
    pipeline = state.pipeline
    assert pipeline is not None and state.store is not None
    plots = plot_files(pipeline.classifier.model_dir)
    outcomes = await state.store.run(review_outcomes, state.store)
    followed = request.app.state.offices.path is not None
    days = state.settings.live_accuracy_days
    routes_live = await state.store.run(live_accuracy, state.store, days) if followed else []
    return templates.TemplateResponse(
        request,
        "model.html",
        {
            "session": session,
            "followup": request.app.state.offices.path is not None,
            "model": model_summary(pipeline),
            "plots": [p for p in plots if not p.startswith("drift")],
            "drift": drift_figures(pipeline, plots),
            "live": reliability_svg(outcomes),
            "routes_live": [r.to_dict() for r in routes_live],
            "routes_days": days,
        },
    )


@router.get("/model/plots/{name}")
def plot(name: str, state: ReadyStateDep, session: SessionDep) -> FileResponse:
    assert state.pipeline is not None
    path = plot_path(state.pipeline.classifier.model_dir, name)
    if path is None:
        raise ApiError(404, "not_found", f"no plot {name!r}")
    return FileResponse(path, media_type="image/png")


@router.get("/inbox")
async def inbox_page(request: Request, state: ReadyStateDep, session: SessionDep) -> Response:
    """An office's inbox: what was routed to it (and, for a kecamatan, its kelurahans'
    overdue complaints), overdue first; acknowledge, note, close or send back each."""
    assert state.store is not None
    offices = _staff_of(request, session)
    if not offices and _restricted(request, session):
        raise ApiError(403, "forbidden", f"{session.operator!r} is no longer any office's staff")
    if not offices:
        return RedirectResponse("/ui/queue", 303)
    status = request.query_params.get("status", "")
    wanted = (
        (status,)
        if status in FOLLOWUP_STATUSES
        else ("new", "acknowledged", "in_progress", "overdue")
    )
    rows = await state.store.run(inbox, state.store, offices, wanted)
    book: OfficeBook = request.app.state.offices
    return templates.TemplateResponse(
        request,
        "inbox.html",
        {
            "session": session,
            "followup": request.app.state.offices.path is not None,
            "offices": offices,
            "items": [{**request_view(r), "followup": followup_view(f)} for r, f in rows],
            "status": status,
            "statuses": FOLLOWUP_STATUSES,
            "all_offices": [o.name for o in book.all() if o.name not in offices],
            "error": request.query_params.get("error"),
        },
    )


@router.post("/inbox/{request_id}")
async def inbox_act(
    request_id: str,
    request: Request,
    state: ReadyStateDep,
    session: SessionDep,
    action: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    right_office: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """`acknowledge`, `progress` (with a public note), `close` (with a resolution note) or
    `return` (not ours, optionally naming the right office), audited under the staff's key."""
    _check_form(request, session, csrf)
    assert state.store is not None
    offices = _staff_of(request, session)
    if not offices:
        raise ApiError(403, "forbidden", f"{session.operator!r} is no office's staff")
    book: OfficeBook = request.app.state.offices
    found = Action(action, note, right_office)
    try:
        outcome = await state.store.run(
            act_on, state.store, book, request_id, offices, found, session.operator
        )
    except FollowUpError as exc:
        return RedirectResponse(f"/ui/inbox?{urlencode({'error': str(exc)})}", 303)
    if outcome is None:
        raise ApiError(404, "not_found", f"no complaint {request_id!r} in this inbox")
    request.state.log_extra = {"staff": session.operator, "request_id": request_id}
    return RedirectResponse("/ui/inbox", 303)


_BY_LABELS = {"office": "kantor", "kecamatan": "kecamatan", "all": "semua"}


def _performance_query(request: Request) -> tuple[str, str, str]:
    params = request.query_params
    by = params.get("by", "office")
    return (by if by in BYS else "office"), params.get("from", ""), params.get("to", "")


async def _figures(
    request: Request, state: ServiceState, session: Session, weekly: bool
) -> tuple[Any, list[str] | None, str | None]:
    """The offices' figures the page's filters ask for; an office's staff see their own."""
    assert state.store is not None
    by, start, end = _performance_query(request)
    offices = _staff_of(request, session) or None
    if offices is None and _restricted(request, session):
        raise ApiError(403, "forbidden", f"{session.operator!r} is no longer any office's staff")
    try:
        lo = parse_moment(start, "from") if start else None
        hi = parse_moment(end, "to", end_of_day=True) if end else None
    except ReviewError as exc:
        return None, offices, str(exc)
    table = await state.store.run(performance, state.store, by, lo, hi, weekly, offices)
    return table, offices, None


@router.get("/performance")
async def performance_page(
    request: Request, state: ReadyStateDep, session: SessionDep
) -> HTMLResponse:
    """How offices perform over a date range (a table, and the weeks as a plot when the
    `plots` extra is installed); an office's staff see their own office's figures."""
    by, start, end = _performance_query(request)
    table, offices, error = await _figures(request, state, session, weekly=False)
    rows = to_records(table) if table is not None else []
    column = "group" if by == "all" else by
    return templates.TemplateResponse(
        request,
        "performance.html",
        {
            "session": session,
            "followup": True,
            "staff": bool(offices),
            "offices": offices,
            "rows": sorted(rows, key=lambda r: (-r["received"], str(r[column]))),
            "column": column,
            "column_label": _BY_LABELS[by],
            "by": by,
            "bys": list(_BY_LABELS.items()),
            "start": start,
            "end": end,
            "query": urlencode({"by": by, "from": start, "to": end}),
            "plots": plots_installed(),
            "error": error,
        },
    )


@router.get("/performance.csv")
async def performance_csv(request: Request, state: ReadyStateDep, session: SessionDep) -> Response:
    """The page's table as CSV (the API's `format=csv`, with the workbench's session)."""
    table, _, error = await _figures(request, state, session, weekly=False)
    if table is None:
        raise ApiError(422, "validation_error", error or "bad range")
    return Response(
        table.to_csv(index=False),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="performance.csv"'},
    )


@router.get("/performance/plot.png")
async def performance_plot(request: Request, state: ReadyStateDep, session: SessionDep) -> Response:
    """The page's figures week by week, drawn server-side (no script)."""
    by, _, _ = _performance_query(request)
    table, _, error = await _figures(request, state, session, weekly=True)
    png = await asyncio.to_thread(plot_png, table, by) if table is not None else None
    if png is None:
        raise ApiError(404, "not_found", error or "no plot: matplotlib or weeks missing")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
