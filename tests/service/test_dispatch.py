"""The outbox dispatcher on SQLite and PostgreSQL: a receiver down then up, a slow receiver,
two dispatchers on one database, an expired claim taken over, and signatures that verify."""

import json
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from aduan.service.dispatch import Dispatcher, DispatchSettings, backoff, dead_letters
from aduan.service.followup import ROUTED, OutboxEvent, install
from aduan.service.offices import Office, OfficeBook
from aduan.service.storage import NewRequest, Store, make_engine, upgrade

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AGENCY = "Dinas Lingkungan Hidup"


class Receiver:
    """A webhook receiver on a local port: records what arrives; `delay` slows its answer,
    `status` sets its answer code. `start` may come after events were sent to its port."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived: list[str] = []  # every attempt's webhook-id, answered or not
        self.delay, self.status = 0.0, 204
        self.gate: threading.Event | None = None  # when set, answers wait until it opens
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.arrived.append(self.headers["webhook-id"])
                if outer.gate is not None:
                    outer.gate.wait(10)
                if outer.delay:
                    time.sleep(outer.delay)
                else:
                    outer.received.append((dict(self.headers.items()), body))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def ids(self) -> list[str]:
        return [headers["webhook-id"] for headers, _ in self.received]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.stop()


def _auto(text: str, agency: str = AGENCY) -> NewRequest:
    """A complaint the model routed on by itself to `agency`."""
    return NewRequest(
        text=text,
        category="SAMPAH",
        category_score=0.9,
        agency=agency,
        agency_score=0.97,
        model_version="m-1",
        route="auto",
    )


def _setup(database_url: str, receiver: Receiver, count: int = 1) -> tuple[Store, OfficeBook]:
    upgrade(database_url)
    store = Store(make_engine(database_url))
    book = OfficeBook.of([Office(name=AGENCY, webhook=receiver.url, secret=SECRET)])
    install(store, book)
    store.save_requests([_auto(f"sampah menumpuk {i}") for i in range(count)])
    return store, book


def _settings(**overrides: float) -> DispatchSettings:
    values = {"timeout_s": 2.0, "lease_s": 5.0, "backoff_base_s": 1.0, "backoff_cap_s": 8.0}
    return DispatchSettings(**{**values, **overrides})  # type: ignore[arg-type]


def _events(store: Store) -> list[OutboxEvent]:
    with store.sessions.begin() as session:
        return list(session.query(OutboxEvent).order_by(OutboxEvent.id))


def test_dispatch_routed_event_signed_and_verifies(database_url, receiver):
    store, book = _setup(database_url, receiver.start())
    [event] = _events(store)
    assert event.type == ROUTED and event.office == AGENCY and event.delivered_at is None
    outcome = Dispatcher(store, book, _settings()).run_once()
    assert outcome.delivered == 1
    [(headers, body)] = receiver.received
    assert headers["webhook-id"] == event.id
    payload = Webhook(SECRET).verify(body, headers)  # raises on a bad signature
    assert payload["type"] == ROUTED
    assert payload["data"]["agency"] == AGENCY and payload["data"]["text"] == "sampah menumpuk 0"
    assert payload["data"]["expected_datetime"] and payload["data"]["first_response_due"]
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(body, headers)
    assert Dispatcher(store, book, _settings()).run_once().claimed == []  # delivered once


def test_dispatch_receiver_down_then_up_delivers_within_a_minute(database_url, receiver):
    store, book = _setup(database_url, receiver)  # nothing listens on its port yet
    clock = Clock()
    dispatcher = Dispatcher(store, book, _settings(), clock=clock)
    elapsed, attempts = 0.0, 0
    while not receiver.received:
        if elapsed >= 10 and receiver.server is None:
            receiver.start()  # down for 10 s, then up
        [event] = _events(store)
        wait = max(0.0, (event.next_attempt_at.replace(tzinfo=UTC) - clock.now).total_seconds())
        clock.advance(wait + 0.01)
        elapsed += wait + 0.01
        dispatcher.run_once()
        attempts += 1
        assert attempts < 20
    assert elapsed < 60
    [event] = _events(store)
    assert event.delivered_at is not None and event.attempts >= 2
    assert receiver.ids() == [event.id]


def test_dispatch_slow_receiver_times_out_then_is_retried(database_url, receiver):
    store, book = _setup(database_url, receiver.start())
    receiver.delay = 1.0
    clock = Clock()
    dispatcher = Dispatcher(store, book, _settings(timeout_s=0.2), clock=clock)
    outcome = dispatcher.run_once()
    assert outcome.failed == 1 and outcome.delivered == 0
    [event] = _events(store)
    assert "Timeout" in (event.last_error or "") and event.attempts == 1
    receiver.delay = 0.0
    assert dispatcher.run_once().claimed == []  # not due yet: backoff
    clock.advance(2)
    assert dispatcher.run_once().delivered == 1
    assert receiver.ids() == [event.id]


def test_dispatch_dead_letters_after_max_attempts(database_url, receiver):
    store, book = _setup(database_url, receiver.start())
    receiver.status = 500
    clock = Clock()
    dispatcher = Dispatcher(store, book, _settings(max_attempts=3), clock=clock)
    for _ in range(3):
        dispatcher.run_once()
        clock.advance(10)
    [event] = _events(store)
    assert event.dead_at is not None and event.last_error == "HTTP 500"
    assert [e.id for e in dead_letters(store)] == [event.id]
    assert dispatcher.run_once().claimed == []


def test_dispatch_two_dispatchers_deliver_each_event_once(database_url, receiver):
    store, book = _setup(database_url, receiver.start(), count=30)
    other = Store(make_engine(database_url))  # another pod: its own connections
    first = Dispatcher(store, book, _settings(), name="pod-a")
    second = Dispatcher(other, book, DispatchSettings(batch=7), name="pod-b")
    first.settings = DispatchSettings(batch=7)
    claims: dict[str, list[str]] = {"pod-a": [], "pod-b": []}

    def drain(dispatcher: Dispatcher) -> None:
        for _ in range(20):
            claims[dispatcher.name] += dispatcher.run_once().claimed

    threads = [threading.Thread(target=drain, args=(d,)) for d in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = {e.id for e in _events(store)}
    assert len(events) == 30
    assert sorted(receiver.ids()) == sorted(events)  # every event, each once
    assert not set(claims["pod-a"]) & set(claims["pod-b"])
    assert all(e.delivered_at is not None for e in _events(store))


def test_dispatch_expired_claim_is_redelivered_with_the_same_id(database_url, receiver):
    store, book = _setup(database_url, receiver.start())
    clock = Clock()
    dead_pod = Dispatcher(store, book, _settings(lease_s=5), name="dead", clock=clock)
    [claimed] = dead_pod.claim()  # claimed, then the pod is killed before it POSTs
    survivor = Dispatcher(store, book, _settings(), name="alive", clock=clock)
    assert survivor.run_once().claimed == []  # the lease still holds
    clock.advance(6)
    assert survivor.run_once().delivered == 1
    assert receiver.ids() == [claimed.id]
    _, body = receiver.received[0]
    assert json.loads(body)["data"]["request_id"] == claimed.request_id


def test_dispatch_backoff_grows_is_capped_and_jittered():
    assert backoff(1, 1.0, 300.0, rng=lambda: 1.0) == 1.0
    assert backoff(4, 1.0, 300.0, rng=lambda: 1.0) == 8.0
    assert backoff(30, 1.0, 300.0, rng=lambda: 1.0) == 300.0
    assert backoff(4, 1.0, 300.0, rng=lambda: 0.0) == 4.0


def test_dispatch_service_loop_delivers_and_counts_in_metrics(make_client, tmp_path, receiver):
    receiver.start()
    offices = tmp_path / "offices.yaml"
    offices.write_text(
        f"offices:\n  - name: {AGENCY}\n    webhook: {receiver.url}\n    secret: {SECRET}\n"
        "    staff: [budi]\n"
    )
    client = make_client(
        api_keys="ops:kunci-ops",
        operator_keys="ops:kunci-ops,budi:kunci-budi",
        offices_file=offices,
        dispatch_interval_s=0.05,
    )
    ops = {"Authorization": "Bearer kunci-ops"}
    body = {"items": [{"text": "sampah menumpuk di TPS"}], "store": True}
    rid = client.post("/v1/classify", json=body, headers=ops).json()["results"][0]["request_id"]
    client.patch(f"/v1/requests/{rid}", json={"corrected_agency": AGENCY}, headers=ops)
    deadline = time.monotonic() + 10
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.05)
    [(headers, body_bytes)] = receiver.received
    payload = Webhook(SECRET).verify(body_bytes, headers)
    assert payload["data"]["request_id"] == rid
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        metrics = client.get("/metrics").text
        if 'aduan_webhook_delivered_total{type="complaint.routed"} 1.0' in metrics:
            break
        time.sleep(0.05)
    assert 'aduan_webhook_delivered_total{type="complaint.routed"} 1.0' in metrics
    assert "aduan_webhook_pending 0.0" in metrics


def test_dispatch_event_and_complaint_commit_together(database_url, receiver):
    """The outbox row is written in the routing transaction: a failure while writing the
    event leaves neither the complaint nor the event (the database cut off mid-way)."""
    store, _ = _setup(database_url, receiver, count=0)

    def cut_off(session, row, actor):
        raise ConnectionError("database gone")

    store.on_routed.append(cut_off)
    row = _auto("got lost?")
    with pytest.raises(ConnectionError):
        store.save_requests([row])
    assert _events(store) == [] and store.counts()["requests"] == 0
    store.on_routed.remove(cut_off)
    store.save_requests([row])
    assert len(_events(store)) == 1 and store.counts()["requests"] == 1


def test_dispatch_loop_survives_a_failing_round(database_url, receiver):
    import asyncio

    from aduan.service.dispatch import followup_loop

    store, book = _setup(database_url, receiver.start())
    dispatcher = Dispatcher(store, book, _settings())
    real, calls = dispatcher.run_once, []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database gone")
        return real()

    dispatcher.run_once = flaky  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.create_task(followup_loop(dispatcher, 0.01, 3600))
        for _ in range(500):
            if receiver.received:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert len(calls) >= 2 and len(receiver.received) == 1


def test_dispatch_sigkilled_dispatcher_leaves_the_event_to_another(
    database_url, receiver, tmp_path
):
    """`aduan followup dispatch` is SIGKILLed while its POST waits on a slow receiver; after
    its lease the event goes out again from another dispatcher, with the same webhook-id."""
    import signal
    import subprocess
    import sys

    store, book = _setup(database_url, receiver.start())
    receiver.delay = 30.0  # the killed pod never gets its answer
    offices = tmp_path / "offices.yaml"
    offices.write_text(
        f"offices:\n  - name: {AGENCY}\n    webhook: {receiver.url}\n    secret: {SECRET}\n"
    )
    command = [sys.executable, "-m", "aduan", "followup", "dispatch"]
    command += ["--database-url", database_url, "--offices", str(offices)]
    env = {**os.environ, "ADUAN_WEBHOOK_TIMEOUT_S": "60"}
    pod = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not receiver.arrived and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.arrived, "the dispatcher never posted"
        pod.send_signal(signal.SIGKILL)
        pod.wait(10)
    finally:
        if pod.poll() is None:
            pod.kill()
    [event] = _events(store)
    assert event.delivered_at is None and event.claimed_by  # claimed, never recorded
    receiver.delay = 0.0
    clock = Clock()
    survivor = Dispatcher(store, book, _settings(), clock=clock)
    assert survivor.run_once().claimed == []  # the dead pod's lease (130 s) still holds
    clock.advance(131)
    assert survivor.run_once().delivered == 1
    assert receiver.arrived == [event.id, event.id]
    assert receiver.ids() == [event.id]


def test_dispatch_recovers_when_postgres_cuts_its_connections(database_url, receiver):
    """The database drops every connection of the dispatcher (a failover, a restart): the
    round that meets it fails or reconnects, nothing is lost, the next delivers."""
    if not database_url.startswith("postgresql"):
        pytest.skip("cutting connections is PostgreSQL's (SQLite has none)")
    import sqlalchemy as sa

    store, book = _setup(database_url, receiver.start(), count=3)
    dispatcher = Dispatcher(store, book, _settings())
    with store.engine.connect() as connection:  # the pooled connection to be cut
        pid = connection.execute(sa.text("select pg_backend_pid()")).scalar()
    admin = sa.create_engine(database_url.split("?")[0])
    with admin.begin() as connection:  # this one connection only: others share the server
        cut = connection.execute(sa.text("select pg_terminate_backend(:pid)"), {"pid": pid})
        assert cut.scalar() is True
    admin.dispose()
    delivered = 0
    for _ in range(3):
        try:
            delivered += dispatcher.run_once().delivered
        except sa.exc.OperationalError:
            continue  # the round that met the cut; its claims expire or were never made
        if delivered == 3:
            break
    assert delivered == 3 and sorted(receiver.ids()) == sorted(e.id for e in _events(store))


def test_dispatch_a_url_httpx_refuses_fails_its_event_not_the_round(database_url, receiver):
    """One office's URL that httpx cannot use (bad IDNA: UnicodeError, not an HTTPError) is
    that event's failure; the other office's event in the same round is delivered."""
    upgrade(database_url)
    store = Store(make_engine(database_url))
    receiver.start()
    broken = "Dinas Perhubungan"
    # Built unvalidated: the offices file refuses this URL now, but a book of offices from
    # elsewhere (or an httpx that is stricter than the check) must not stop all delivery.
    bad = Office.model_construct(name=broken, webhook="https://a..b/x", secret=SECRET)
    book = OfficeBook.of([Office(name=AGENCY, webhook=receiver.url, secret=SECRET), bad])
    install(store, book)
    rows = [_auto(f"keluhan {agency}", agency) for agency in (broken, AGENCY)]
    store.save_requests(rows)
    outcome = Dispatcher(store, book, _settings()).run_once()
    assert outcome.delivered == 1 and outcome.failed == 1
    events = {e.office: e for e in _events(store)}
    assert events[AGENCY].delivered_at is not None
    assert events[broken].attempts == 1 and events[broken].claimed_by is None
    assert "UnicodeError" in (events[broken].last_error or "")


def _two_offices(database_url: str, fast: Receiver, slow: Receiver) -> tuple[Store, OfficeBook]:
    """A store with one routed complaint for a fast office and one for a slow one."""
    upgrade(database_url)
    store = Store(make_engine(database_url))
    book = OfficeBook.of(
        [
            Office(name=AGENCY, webhook=fast.url, secret=SECRET),
            Office(name="Dinas Perhubungan", webhook=slow.url, secret=SECRET),
        ]
    )
    install(store, book)
    rows = [_auto(f"keluhan {agency}", agency) for agency in ("Dinas Perhubungan", AGENCY)]
    store.save_requests(rows)
    return store, book


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def slow_receiver():
    found = Receiver()
    found.gate = threading.Event()
    yield found
    found.gate.set()
    found.stop()


def test_dispatch_records_each_outcome_while_a_slow_office_holds_the_round(
    database_url, receiver, slow_receiver
):
    store, book = _two_offices(database_url, receiver.start(), slow_receiver.start())
    dispatcher = Dispatcher(store, book, _settings(timeout_s=10.0))
    round_ = threading.Thread(target=dispatcher.run_once)
    round_.start()
    try:
        events = {e.office: e for e in _events(store)}

        def fast_recorded() -> bool:
            return {e.office: e for e in _events(store)}[AGENCY].delivered_at is not None

        # Recorded while the slow office's POST is still waiting, not after the round.
        assert _wait_for(fast_recorded)
        assert slow_receiver.arrived == [events["Dinas Perhubungan"].id]
        assert {e.office: e for e in _events(store)}["Dinas Perhubungan"].delivered_at is None
    finally:
        assert slow_receiver.gate is not None
        slow_receiver.gate.set()
        round_.join(15)
    assert all(e.delivered_at is not None for e in _events(store))


def test_dispatch_round_longer_than_its_lease_keeps_its_claim(
    database_url, receiver, slow_receiver
):
    """A round held up by a slow office past its lease renews it: a second dispatcher
    claims nothing meanwhile, and no event is POSTed twice."""
    store, book = _two_offices(database_url, receiver.start(), slow_receiver.start())
    first = Dispatcher(store, book, _settings(timeout_s=10.0, lease_s=1.5), name="pod-a")
    second = Dispatcher(store, book, _settings(timeout_s=10.0, lease_s=1.5), name="pod-b")
    started = time.monotonic()
    round_ = threading.Thread(target=first.run_once)
    round_.start()
    try:
        assert _wait_for(lambda: bool(slow_receiver.arrived))
        # Well past the first lease (and two renewals): unrenewed, it would have lapsed.
        time.sleep(max(0.0, started + 3.5 - time.monotonic()))
        assert second.run_once().claimed == []
    finally:
        assert slow_receiver.gate is not None
        slow_receiver.gate.set()
        round_.join(15)
    assert all(e.delivered_at is not None for e in _events(store))
    assert len(slow_receiver.arrived) == 1 and len(receiver.arrived) == 1
