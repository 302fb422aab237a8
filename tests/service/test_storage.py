"""Persistence on SQLite and on the real local PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from aduan.service.storage import NewRequest, Store, downgrade, make_engine, upgrade


def _request(text="sampah menumpuk", **extra):
    values = {
        "text": text,
        "category": "SAMPAH",
        "category_score": 0.9,
        "agency": "Dinas Lingkungan Hidup",
        "agency_score": 0.8,
        "model_version": "m-1",
        "route": "auto",
        **extra,
    }
    return NewRequest(**values)


def _insert_old_request(conn, rid: str, text: str) -> None:
    """A request row as migration 0001 wrote it (the ORM model has newer columns)."""
    conn.execute(
        sa.text(
            "insert into requests (id, received_at, text, category, category_score, agency,"
            " agency_score, model_version, route) values (:i, :t, :x, 'SAMPAH', 0.5,"
            " 'Dinas Lingkungan Hidup', 0.5, 'm-0', 'review')"
        ),
        {"i": rid, "x": text, "t": datetime(2023, 5, 1, tzinfo=UTC)},
    )


def _store(url) -> Store:
    upgrade(url)
    return Store(make_engine(url))


def test_storage_migrates_and_round_trips(database_url):
    store = _store(database_url)
    upgrade(database_url)  # idempotent
    [rid] = store.save_requests(
        [_request(address="Jl. Keputran", latitude=-7.27, longitude=112.74, kelurahan="Keputran")]
    )
    stored = store.get_request(rid)
    assert stored.text == "sampah menumpuk" and stored.latitude == -7.27
    assert stored.kelurahan == "Keputran" and stored.route == "auto"
    assert store.get_request("missing") is None
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == "0006"
    store.close()


def test_storage_feedback_is_idempotent_per_operator(database_url):
    store = _store(database_url)
    [rid] = store.save_requests([_request()])
    first, created = store.add_feedback(rid, category="DRAINASE", agency="X", operator="op1")
    again, created_again = store.add_feedback(rid, category="DRAINASE", agency="X", operator="op1")
    assert created and not created_again and first.id == again.id
    changed, _ = store.add_feedback(rid, category="JALAN", agency="Y", operator="op1")
    assert changed.id == first.id
    store.add_feedback(rid, category="PJU", agency="Z", operator="op2")
    assert store.counts() == {"requests": 1, "feedback": 2}
    assert store.add_feedback("nope", category="PJU", agency="Z", operator="op1") is None
    [row] = store.corrected()
    assert (row["category"], row["agency"], row["operator"]) == ("PJU", "Z", "op2")
    store.close()


def test_storage_export_since_and_purge(database_url):
    store = _store(database_url)
    old, new = store.save_requests([_request("lama"), _request("baru")])
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("update requests set received_at = :t where id = :i"),
            {"t": datetime(2023, 1, 1, tzinfo=UTC), "i": old},
        )
    for rid in (old, new):
        store.add_feedback(rid, category="SAMPAH", agency="A", operator="op")
    cutoff = datetime.now(UTC) - timedelta(days=1)
    assert [r["text"] for r in store.corrected()] == ["lama", "baru"]
    assert [r["text"] for r in store.corrected(since=cutoff)] == ["baru"]
    assert store.purge(cutoff) == 1
    assert store.counts() == {"requests": 1, "feedback": 1}
    store.close()


def test_storage_migration_0002_keeps_earlier_corrections_and_reverts(database_url):
    """A database written by 0001 (a request with two operators' feedback) upgrades with the
    latest correction as the request's corrected labels, and downgrades cleanly."""
    upgrade(database_url, "0001")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        _insert_old_request(conn, "r1", "banjir")
        for fid, (category, operator) in enumerate([("JALAN", "op1"), ("DRAINASE", "op2")], 1):
            conn.execute(
                sa.text(
                    "insert into feedback (id, request_id, category, agency, operator, created_at)"
                    " values (:i, 'r1', :c, 'DSDABM', :o, :t)"
                ),
                {"i": fid, "c": category, "o": operator, "t": datetime(2023, 5, 2, tzinfo=UTC)},
            )
    engine.dispose()
    store = _store(database_url)
    row = store.get_request("r1")
    assert (row.status, row.corrected_category, row.corrected_by) == ("open", "DRAINASE", "op2")
    assert [r["category"] for r in store.corrected()] == ["DRAINASE"]
    store.close()
    downgrade(database_url, "0001")
    engine = make_engine(database_url)
    assert "request_events" not in sa.inspect(engine).get_table_names()
    assert "status" not in {c["name"] for c in sa.inspect(engine).get_columns("requests")}
    engine.dispose()
    upgrade(database_url)


def test_storage_migration_0003_idempotency_key_is_unique_and_reverts(database_url):
    """0003 adds the unique idempotency key without touching earlier rows; a second row with
    the same key is refused by the database; the downgrade drops the column and keeps the
    requests with their feedback (no table copy that would cascade-delete them)."""
    upgrade(database_url, "0002")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        _insert_old_request(conn, "r1", "genangan")
    engine.dispose()
    rid = "r1"
    store = _store(database_url)
    assert store.get_request(rid).idempotency_key is None
    store.add_feedback(rid, category="DRAINASE", agency="X", operator="op1")
    store.save_requests([_request("a", idempotency_key="k:0"), _request("b")])
    with pytest.raises(sa.exc.IntegrityError):
        store.save_requests([_request("c", idempotency_key="k:0")])
    assert set(store.by_idempotency_keys(["k:0", "k:1"])) == {"k:0"}
    store.close()
    downgrade(database_url, "0002")
    engine = make_engine(database_url)
    columns = {c["name"] for c in sa.inspect(engine).get_columns("requests")}
    with engine.connect() as conn:
        feedback = conn.execute(sa.text("select count(*) from feedback")).scalar()
        requests = conn.execute(sa.text("select count(*) from requests")).scalar()
    engine.dispose()
    assert "idempotency_key" not in columns and (requests, feedback) == (3, 1)
    upgrade(database_url)


def test_storage_replicas_migrating_together_all_succeed(database_url):
    """Pods of a Deployment start together and each migrates at start-up: the advisory lock
    makes them take turns (without it the second one's CREATE TABLE fails)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the lock is PostgreSQL's; SQLite has one process writing")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: upgrade(database_url), range(3)))
