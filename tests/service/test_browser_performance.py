"""The performance page and an office's inbox on the REAL history, in a real browser (Debian's
chromium, Playwright, the real server): the shared file imported into a fresh SQLite database
by `aduan followup import-history`, the table and the weekly plot drawn, an office's staff
seeing their own office's figures and imported complaints (no texts: none are imported).

A slice of the history by default (seconds); ADUAN_SCREENSHOTS=docs imports the whole file
and refreshes docs/followup-dashboard.png and docs/followup-inbox-history.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app as cli
from aduan.model.resources import default_data

from .test_browser import CHROMIUM, CHROMIUM_ARGS, _browser_missing, served

SURABAYA = default_data()
DSABM = "Dinas Sumber Daya Air dan Bina Marga"
OPS, STAFF = "kunci-ops", "kunci-dsabm"
SCREENSHOTS = os.environ.get("ADUAN_SCREENSHOTS")

pytestmark = pytest.mark.skipif(
    not SURABAYA.is_file(), reason="the shared data is not on this machine"
)


@pytest.fixture
def server(tiny_model, gazetteer_csv, tmp_path):

    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    data = SURABAYA
    if not SCREENSHOTS:  # a quarter of the history: the same page, in seconds
        raw = pd.read_csv(SURABAYA, dtype=str, keep_default_na=False)
        data = tmp_path / "slice.csv"
        raw[(raw["created_at"] >= "2022-10-01")].to_csv(data, index=False)
    offices = tmp_path / "offices.yaml"
    offices.write_text(f"offices:\n  - name: {DSABM}\n    sla_hours: 22\n    staff: [dsabm]\n")
    url = f"sqlite:///{tmp_path / 'aduan.db'}"
    args = ["followup", "import-history", "--data", str(data), "--database-url", url]
    imported = CliRunner().invoke(cli, [*args, "--offices", str(offices)])
    assert imported.exit_code == 0, imported.output
    settings = Settings(
        model_dir=tiny_model,
        gazetteer=gazetteer_csv,
        data_dir=tmp_path,
        database_url=url,
        api_keys=f"ops:{OPS}",
        operator_keys=f"ops:{OPS},dsabm:{STAFF}",
        offices_file=offices,
        followup_loop=False,
    )
    app = create_app(settings)
    with served(app) as base:
        yield base


def _login(page, base: str, key: str, then: str) -> None:
    page.goto(f"{base}/ui/login?next={then}")
    page.fill("#key", key)
    page.click("button[type=submit]")


def _save(shot: Path) -> None:
    if SCREENSHOTS:
        from PIL import Image

        image = Image.open(shot).convert("RGB").quantize(colors=64)
        image.save(Path(SCREENSHOTS) / shot.name, optimize=True)


def test_browser_performance_on_the_real_history(server, tmp_path):
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import expect, sync_playwright

    base = server
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))

        _login(page, base, OPS, "/ui/performance")
        expect(page.locator("h1")).to_contain_text("Kinerja")
        first = page.locator("table.performance tbody tr").first
        expect(first.locator("th")).to_have_text(DSABM)  # the most complaints, first
        plot = page.locator(".performance-plot img")
        expect(plot).to_be_visible()
        page.wait_for_function(
            "() => { const i = document.querySelector('.performance-plot img');"
            " return i && i.complete && i.naturalWidth > 0; }",
            timeout=60000,
        )
        # The plot and the table's first rows (the whole table is some 200 offices long).
        clip = {"x": 0, "y": 0, "width": 1100, "height": 1750}
        page.screenshot(path=str(tmp_path / "followup-dashboard.png"), full_page=True, clip=clip)
        page.select_option("#p-by", "kecamatan")
        page.click("#performance-filters button")
        expect(page.locator("table.performance thead th").first).to_have_text("kecamatan")

        page.click("header .logout button")
        _login(page, base, STAFF, "/ui/performance")
        expect(page.locator("h1")).to_contain_text(DSABM)
        expect(page.locator("table.performance tbody tr")).to_have_count(1)
        page.goto(f"{base}/ui/inbox?status=closed")
        expect(page.locator(".item").first).to_be_visible()
        expect(page.locator(".item .no-text").first).to_be_visible()  # no text imported
        page.screenshot(path=str(tmp_path / "followup-inbox-history.png"))
        browser.close()
    assert problems == []
    _save(tmp_path / "followup-dashboard.png")
    _save(tmp_path / "followup-inbox-history.png")
