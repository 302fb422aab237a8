"""An office's day in a real browser (Debian's chromium, Playwright, the real server): the
office's staff log in, acknowledge a complaint, post a public note, close it, send another back
naming the right office; an operator finds the sent-back one on top of the queue and routes it
to that office, and the correction is in `aduan feedback export`.

Set ADUAN_SCREENSHOTS=docs to refresh the inbox screenshot (synthetic complaints only).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app as cli

from .test_browser import CHROMIUM, CHROMIUM_ARGS, _browser_missing, served

OPS, BUDI = "kunci-ops", "kunci-budi"
DLH, DISHUB = "Dinas Lingkungan Hidup", "Dinas Perhubungan"
OFFICES = f"""\
offices:
  - name: {DLH}
    sla_hours: 24
    staff: [budi]
  - name: {DISHUB}
    staff: [rina]
"""
COMPLAINTS = [
    ("sampah menumpuk di TPS sudah tiga hari, bau busuk", "Jalan Keputran Kejambon 4"),
    ("lampu lalu lintas mati di perempatan, macet panjang", "Jalan Raya Darmo 12"),
]


@pytest.fixture
def server(tiny_model, gazetteer_csv, tmp_path):

    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    offices = tmp_path / "offices.yaml"
    offices.write_text(OFFICES)
    url = f"sqlite:///{tmp_path / 'aduan.db'}"
    keys = f"ops:{OPS},budi:{BUDI},rina:kunci-rina"
    settings = Settings(
        model_dir=tiny_model,
        gazetteer=gazetteer_csv,
        data_dir=tmp_path,
        database_url=url,
        api_keys=f"ops:{OPS}",
        operator_keys=keys,
        offices_file=offices,
        followup_loop=False,
    )
    app = create_app(settings)
    with served(app) as base:
        auth = {"Authorization": f"Bearer {OPS}"}
        items = [{"text": t, "address": a} for t, a in COMPLAINTS]
        stored = httpx.post(
            f"{base}/v1/classify", json={"items": items, "store": True}, headers=auth
        )
        assert stored.status_code == 200, stored.text
        ids = [r["request_id"] for r in stored.json()["results"]]
        for rid in ids:  # both routed to DLH by an operator (the second wrongly)
            patch = httpx.patch(
                f"{base}/v1/requests/{rid}", json={"corrected_agency": DLH}, headers=auth
            )
            assert patch.status_code == 200, patch.text
        yield base, url, ids


def _login(page, base: str, key: str) -> None:
    page.goto(f"{base}/ui/login")
    page.fill("#key", key)
    page.click("button[type=submit]")


def test_browser_an_offices_day(server, tmp_path):
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import expect, sync_playwright

    base, database_url, (sampah, lampu) = server
    problems: list[str] = []
    shot = tmp_path / "workbench-inbox.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))

        _login(page, base, BUDI)
        expect(page.locator("h1")).to_contain_text(DLH)  # the staff land in their inbox
        expect(page.locator(".item")).to_have_count(2)
        mine = page.locator(f"#r-{sampah}")
        mine.locator("button.acknowledge").click()
        expect(mine.locator(".status")).to_have_text("acknowledged")
        mine.locator("input.note").fill("Petugas kebersihan menuju lokasi")
        mine.locator("button.progress").click()
        expect(mine.locator(".notes")).to_have_text("Petugas kebersihan menuju lokasi")
        page.screenshot(path=str(shot))
        mine.locator("input.note").fill("Sampah sudah diangkut")
        mine.locator("button.close").click()
        expect(page.locator(f"#r-{sampah}")).to_have_count(0)  # closed: out of the open list

        other = page.locator(f"#r-{lampu}")
        other.locator("input.note").fill("Lampu lalu lintas wewenang Dishub")
        other.locator("input.right-office").fill(DISHUB)
        other.locator("button.return").click()
        expect(page.locator(".item")).to_have_count(0)
        page.select_option("#i-status", "closed")
        page.click("#inbox-filters button")
        expect(page.locator(f"#r-{sampah} .notes")).to_have_text("Sampah sudah diangkut")

        page.click("header .logout button")
        _login(page, base, OPS)
        back = page.locator(f"#e-{lampu}")  # on top of the operators' queue
        expect(back).to_be_visible()
        expect(back.locator(".returned-to")).to_have_text(DISHUB)
        expect(back.locator("select.agency")).to_have_value(DISHUB)
        back.locator("button.reroute").click()
        expect(page.locator(f"#e-{lampu}")).to_have_count(0)
        browser.close()
    assert problems == []

    export = tmp_path / "corrections.csv"
    args = ["feedback", "export", "--output", str(export), "--database-url", database_url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(export).set_index("id")
    assert rows.loc[lampu, "agency"] == DISHUB and rows.loc[lampu, "operator"] == "ops"
    target = os.environ.get("ADUAN_SCREENSHOTS")
    if target:
        from PIL import Image

        image = Image.open(shot).convert("RGB").quantize(colors=64)
        image.save(Path(target) / shot.name, optimize=True)
