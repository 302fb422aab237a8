"""The workbench in a real browser: Debian's chromium driven by Playwright against the real
server. Logs in, filters the queue, confirms one complaint with the keyboard, corrects another
with the selects, and finds both in `aduan feedback export`.

Set ADUAN_SCREENSHOTS=docs to refresh the README's screenshots (synthetic complaints only).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app as cli

CHROMIUM = Path(os.environ.get("ADUAN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "rahasia-siti"
COMPLAINTS = [
    ("lampu PJU padam di depan gang, gelap sekali kalau malam", "Jalan Raya Darmo Indah 12"),
    ("sampah menumpuk di TPS sudah tiga hari, bau busuk", "Jalan Keputran Kejambon 4"),
    ("jalan rusak berlubang besar, sudah ada motor jatuh", "Jalan Ngagel Jaya Tengah 7"),
    ("pelayanan kantor kelurahan lambat, surat pengantar belum jadi", "Jl. Keputran Pasar Kecil"),
    ("bantuan sosial belum cair padahal sudah terdaftar", None),
]


def _browser_missing() -> str | None:
    if CHROMIUM.is_file():
        return None
    message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    if os.environ.get("CI") or os.environ.get("ADUAN_REQUIRE_BROWSER"):
        pytest.fail(message)
    return message


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """`app` under uvicorn on a free loopback port, in a thread, once it is ready: its base
    URL; stopped on leaving."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/ready").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def server(tiny_model, gazetteer_csv, tmp_path):
    """The app under uvicorn on a loopback port, in a thread; everything goes to review."""

    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    url = f"sqlite:///{tmp_path / 'aduan.db'}"
    settings = Settings(
        model_dir=tiny_model,
        gazetteer=gazetteer_csv,
        data_dir=tmp_path,
        database_url=url,
        api_keys=f"siti:{KEY}",
        operator_keys=f"siti:{KEY}",
    )
    app = create_app(settings)
    with served(app) as base:
        app.state.service.classifier.thresholds["agency"] = 1.01
        items = [{"text": t, **({"address": a} if a else {})} for t, a in COMPLAINTS]
        stored = httpx.post(
            f"{base}/v1/classify",
            json={"items": items, "store": True},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert stored.status_code == 200, stored.text
        yield base, url, [r["request_id"] for r in stored.json()["results"]]


def test_browser_login_filter_confirm_correct_export(server, tmp_path):
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import expect, sync_playwright

    base, database_url, ids = server
    shots = tmp_path / "shots"
    shots.mkdir()
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))

        page.goto(f"{base}/ui/queue")
        expect(page.locator("#key")).to_be_visible()  # redirected to the login form
        page.fill("#key", KEY)
        page.click("button[type=submit]")
        expect(page.locator(".item")).to_have_count(len(COMPLAINTS))
        expect(page.locator("header .who")).to_have_text("siti")

        # Filter: only complaints of kecamatan Tegalsari (the two Keputran addresses).
        page.select_option("#f-kecamatan", "Tegalsari")
        page.click("#f-apply")
        expect(page.locator(".item")).to_have_count(2)
        first = page.locator(".item").nth(0)
        expect(first.locator(".term").first).to_be_visible()  # the words behind the agency
        expect(first).to_have_class("item current")

        # Confirm the first with the keyboard.
        page.keyboard.press("c")
        expect(first.locator(".outcome")).to_contain_text("dikonfirmasi")
        expect(page.locator(".item").nth(1)).to_have_class("item current")

        # Back to the whole queue, correct the complaint about the road.
        page.select_option("#f-kecamatan", "")
        page.click("#f-apply")
        road = page.locator(f"#r-{ids[2]}")
        road.locator("select.agency").select_option("Dinas Sumber Daya Air dan Bina Marga")
        road.locator("select.category").select_option("DRAINASE")
        road.locator("input.note").fill("Diteruskan ke DSDABM")
        road.locator("button.save").click()
        expect(road.locator(".outcome")).to_contain_text("DRAINASE")

        page.reload()
        page.evaluate("window.scrollTo(0, 0)")
        expect(road).to_have_class(re.compile(r"\breviewed\b"))  # still open: in the queue
        expect(page.locator(f"#r-{ids[1]}")).to_have_count(0)  # confirmed: in progress
        page.screenshot(path=str(shots / "workbench-queue.png"))
        page.goto(f"{base}/ui/model")
        expect(page.locator("h1")).to_contain_text("Model")
        expect(page.locator("#drift")).to_be_visible()
        page.screenshot(path=str(shots / "workbench-model.png"), full_page=True)
        browser.close()
    assert problems == []  # no script errors, no blocked (CSP) resources

    export = tmp_path / "corrections.csv"
    result = CliRunner().invoke(
        cli, ["feedback", "export", "--output", str(export), "--database-url", database_url]
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(export).set_index("id")
    assert set(rows.index) == {ids[1], ids[2]}
    assert rows.loc[ids[1], "agency"] == rows.loc[ids[1], "predicted_agency"]  # confirmed
    assert (rows.loc[ids[2], "agency"], rows.loc[ids[2], "category"]) == (
        "Dinas Sumber Daya Air dan Bina Marga",
        "DRAINASE",
    )
    assert set(rows["operator"]) == {"siti"}
    for name in ("workbench-queue.png", "workbench-model.png"):
        assert (shots / name).stat().st_size > 10_000
    target = os.environ.get("ADUAN_SCREENSHOTS")
    if target:
        _save_small(shots, Path(target))


def _save_small(shots: Path, target: Path) -> None:
    """Copy the screenshots, reduced to a 64-colour palette (small files for the docs)."""
    from PIL import Image

    target.mkdir(parents=True, exist_ok=True)
    for path in shots.glob("*.png"):
        image = Image.open(path).convert("RGB").quantize(colors=64)
        image.save(target / path.name, optimize=True)
    shutil.rmtree(shots, ignore_errors=True)
