"""Each routed complaint's `expected_datetime`: the deadline model when ADUAN_DEADLINE_MODEL
names its directory (re-read when it changes), else the office's `resolution_hours`, else 7
days; a broken directory never stops routing."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from aduan.model.deadlines import AgencyBaseline, DeadlineModel, expected_hours
from aduan.service.followup import get, install
from aduan.service.offices import Office, OfficeBook
from aduan.service.resolution import ResolutionModel
from aduan.service.storage import NewRequest, Store, make_engine, upgrade

DLH = "Dinas Lingkungan Hidup"
SLOW = np.array([0.1, 0.2, 0.7])  # mostly more than 7 days
FAST = np.array([0.9, 0.05, 0.05])


def _directory(path: Path, dlh: np.ndarray) -> Path:
    DeadlineModel(AgencyBaseline(np.array([0.5, 0.3, 0.2]), {DLH: dlh})).save(path)
    return path


def _auto(agency: str) -> NewRequest:
    return NewRequest(
        text="saluran mampet",
        category="DRAINASE",
        category_score=0.9,
        agency=agency,
        agency_score=0.97,
        model_version="m-1",
        route="auto",
    )


def _store(url: str, deadlines: ResolutionModel | None) -> Store:
    upgrade(url)
    store = Store(make_engine(url))
    book = OfficeBook.of([Office(name=DLH, resolution_hours=72), Office(name="Dinas Perhubungan")])
    install(store, book, deadlines)
    return store


def _resolution(store: Store, request_id: str) -> timedelta:
    follow = get(store, request_id)
    assert follow is not None and follow.expected_datetime is not None
    return follow.expected_datetime - follow.routed_at


def _minutes(hours: float) -> timedelta:
    return timedelta(minutes=round(hours * 60))


def test_expected_resolution_from_the_deadline_model(database_url, tmp_path):
    directory = _directory(tmp_path / "deadlines", SLOW)
    store = _store(database_url, ResolutionModel(directory))
    dlh, dishub = store.save_requests([_auto(DLH), _auto("Dinas Perhubungan")])
    # expected_datetime is to the minute: compare within one.
    assert abs(_resolution(store, dlh) - _minutes(expected_hours(SLOW))) <= timedelta(minutes=2)
    prior = expected_hours([0.5, 0.3, 0.2])  # an agency the baseline has no rows for
    assert abs(_resolution(store, dishub) - _minutes(prior)) <= timedelta(minutes=2)
    assert _resolution(store, dlh) != timedelta(hours=72)  # the model wins over the file

    _directory(directory, FAST)  # retrained in place: the next route reads it again
    os.utime(directory / "deadlines.json", ns=(5, 5))
    [again] = store.save_requests([_auto(DLH)])
    assert abs(_resolution(store, again) - _minutes(expected_hours(FAST))) <= timedelta(minutes=2)


def test_expected_resolution_without_a_model_or_with_a_broken_one(database_url, tmp_path, caplog):
    store = _store(database_url, None)
    dlh, dishub = store.save_requests([_auto(DLH), _auto("Dinas Perhubungan")])
    assert _resolution(store, dlh) == timedelta(hours=72)  # the office's resolution_hours
    assert _resolution(store, dishub) == timedelta(days=7)  # neither: 7 days

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "deadlines.json").write_text("{not json")
    store = _store(database_url.replace("aduan.db", "other.db"), ResolutionModel(broken))
    with caplog.at_level(logging.ERROR, logger="aduan.service.resolution"):
        [dlh] = store.save_requests([_auto(DLH)])
    assert _resolution(store, dlh) == timedelta(hours=72)
    assert "deadline model unusable" in caplog.text


@pytest.mark.parametrize("with_model", [True, False])
def test_deadline_model_setting_reaches_the_service(make_client, tmp_path, with_model):
    offices = tmp_path / "offices.yaml"
    offices.write_text(f"offices:\n  - name: {DLH}\n    resolution_hours: 72\n")
    keys = "ops:kunci-ops"
    extra = {"deadline_model": _directory(tmp_path / "d", SLOW)} if with_model else {}
    client = make_client(
        api_keys=keys, operator_keys=keys, offices_file=offices, followup_loop=False, **extra
    )
    ops = {"Authorization": "Bearer kunci-ops"}
    body = {"items": [{"text": "sampah menumpuk di TPS"}], "store": True}
    rid = client.post("/v1/classify", json=body, headers=ops).json()["results"][0]["request_id"]
    patch = client.patch(f"/v1/requests/{rid}", json={"corrected_agency": DLH}, headers=ops)
    assert patch.status_code == 200, patch.text
    follow = client.get(f"/v1/requests/{rid}", headers=ops).json()["followup"]
    from datetime import datetime

    span = datetime.fromisoformat(follow["expected_datetime"]) - datetime.fromisoformat(
        follow["routed_at"]
    )
    want = _minutes(expected_hours(SLOW)) if with_model else timedelta(hours=72)
    assert abs(span - want) <= timedelta(minutes=2)
