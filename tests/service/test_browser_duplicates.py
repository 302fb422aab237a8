"""Duplicates in the workbench, in a real browser (Debian's chromium through Playwright): a
complaint shows its likely duplicate, the operator merges it (the original then counts two
reports and the duplicate leaves the queue), shows merged ones, unmerges, says a suggestion
is not a duplicate, and merges a later report from the original's side."""

from __future__ import annotations

import httpx
import pytest

from tests.service.test_browser import CHROMIUM, CHROMIUM_ARGS, KEY, _browser_missing, server

__all__ = ["server"]  # the fixture, shared with the workbench's main browser test

FIRST = "sampah menumpuk di TPS pasar Keputran bau busuk tidak diangkut seminggu"
AGAIN = "tumpukan sampah di TPS pasar Keputran sudah seminggu tidak diangkut, bau busuk"
WHERE = "Jalan Keputran Kejambon 3"


def _store(base: str, text: str) -> str:
    answer = httpx.post(
        f"{base}/v1/classify",
        json={"items": [{"text": text, "address": WHERE}], "store": True},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["results"][0]["request_id"])


def test_browser_merge_unmerge_and_not_a_duplicate(server):
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import expect, sync_playwright

    base, _, _ = server
    original, duplicate = _store(base, FIRST), _store(base, AGAIN)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{base}/ui/queue")
        page.fill("#key", KEY)
        page.click("button[type=submit]")

        item = page.locator(f"#r-{duplicate}")
        candidate = item.locator(f'.candidate[data-id="{original}"]')
        expect(candidate).to_be_visible()
        candidate.locator("button.merge").click()
        expect(page.locator(f"#r-{duplicate}")).to_have_count(0)  # counted once, in its original
        expect(page.locator(f"#r-{original} .reports")).to_have_text("2 laporan")

        page.select_option("#f-merged", "yes")
        page.select_option("#f-status", "")
        page.click("#f-apply")
        merged = page.locator(f"#r-{duplicate}")
        expect(merged.locator(".original")).to_have_text(original[:8])
        merged.locator("button.unmerge").click()
        expect(page.locator(f"#r-{duplicate} .original")).to_have_count(0)
        expect(page.locator(f"#r-{original} .reports")).to_have_count(0)

        again = page.locator(f'#r-{duplicate} .candidate[data-id="{original}"]')
        again.locator("button.not-duplicate").click()
        expect(page.locator(f"#r-{duplicate}")).to_be_visible()
        expect(page.locator(f'#r-{duplicate} .candidate[data-id="{original}"]')).to_have_count(0)

        # A third report, merged from the original's side ("Gabungkan ke sini").
        third = _store(base, AGAIN + " lagi")
        page.reload()
        later = page.locator(f'#r-{original} .candidate.later[data-id="{third}"]')
        later.locator("button.merge-here").click()
        expect(page.locator(f"#r-{original} .reports")).to_have_text("2 laporan")
        browser.close()
    assert problems == []
    detail = httpx.get(
        f"{base}/v1/requests/{duplicate}", headers={"Authorization": f"Bearer {KEY}"}
    ).json()
    fields = [e["field"] for e in detail["history"]]
    assert fields.count("duplicate_of") == 2 and "not_duplicate_of" in fields
