"""The web page in a real browser: Playwright for Python driving Debian's chromium (headless).

Types a query, waits for hits, checks that every drawn region box sits exactly where its
``data-bbox`` says on the thumbnail (within 2 px), opens a hit large, asks a question, clicks [E1]
and sees the highlighted evidence; then the same search at phone width. Screenshots go to a
temporary folder that the test prints (``MMRAG_SCREENSHOTS=DIR`` to choose it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} is missing: apt-get install chromium (Playwright drives it)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MMRAG_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


def check_regions(page, scope: str) -> int:
    """Every region box under ``scope`` matches its data-bbox scaled to its picture within 2 px."""
    boxes = page.locator(f"{scope} [data-testid='region']")
    n = boxes.count()
    for i in range(n):
        box = boxes.nth(i)
        x0, y0, x1, y1 = (float(v) for v in box.get_attribute("data-bbox").split(","))
        # both rectangles in one frame: the page may still be scrolling to the cited evidence
        img, got = box.evaluate("""b => [b.parentElement.querySelector('img'), b].map(e => {
            const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; })""")
        want = {"x": img["x"] + x0 * img["width"], "y": img["y"] + y0 * img["height"],
                "width": (x1 - x0) * img["width"], "height": (y1 - y0) * img["height"]}
        for key in want:
            assert abs(got[key] - want[key]) <= 2, (i, key, got, want)
    return n


def test_search_open_ask_cite(browser, live, shots):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live + "/")
    page.wait_for_selector("#status[data-state='ready']", timeout=120_000)

    page.fill("[data-testid='query']", "invoice total")
    page.click("[data-testid='submit']")
    page.wait_for_selector("[data-testid='hit']", timeout=120_000)
    page.wait_for_selector("[data-testid='hit'] [data-testid='region']", timeout=30_000)
    page.wait_for_load_state("networkidle")
    hits = page.locator("[data-testid='hit']")
    assert hits.count() >= 2
    assert "invoice_4711.png" in hits.first.inner_text()
    assert check_regions(page, "[data-testid='hit']") >= 1
    page.screenshot(path=str(shots / "search.png"))

    hits.first.click()
    page.wait_for_selector("[data-testid='viewer'] .pic img", state="visible")
    page.wait_for_selector("[data-testid='viewer'] [data-testid='region']")
    assert page.locator("[data-testid='viewer'] .pic img").evaluate("i => i.naturalWidth") > 300
    assert check_regions(page, "[data-testid='viewer']") >= 1
    page.screenshot(path=str(shots / "viewer.png"))
    page.keyboard.press("Escape")
    assert page.locator("[data-testid='viewer']").is_hidden()

    page.click("[data-testid='mode-ask']")
    page.fill("[data-testid='query']", "What is the invoice total?")
    page.click("[data-testid='submit']")
    page.wait_for_selector("[data-testid='citation']", timeout=120_000)
    answer = page.locator("[data-testid='answer']").inner_text()
    assert "1,939.00" in answer and "[E" not in answer  # citations became buttons
    verdict = page.locator("[data-testid='verdict']").inner_text()
    assert verdict in ("Verified", "Not verified", "No answer in the evidence", "Citations do not match the evidence")
    cite = page.locator("[data-testid='citation']").first
    eid = cite.get_attribute("data-evidence")
    cite.click()
    card = page.locator(f"#ev-{eid}")
    page.wait_for_selector(f"#ev-{eid}.highlight")
    page.wait_for_function(f"""() => {{ const r = document.getElementById('ev-{eid}').getBoundingClientRect();
                                       return r.top >= 0 && r.bottom <= window.innerHeight; }}""")
    assert card.locator("img").evaluate("i => i.complete && i.naturalWidth > 0")
    assert check_regions(page, f"#ev-{eid}") >= 1
    page.screenshot(path=str(shots / "ask.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_phone_width(browser, live, shots):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(live + "/?q=invoice")
    page.wait_for_selector("#status[data-state='ready']", timeout=120_000)
    page.click("[data-testid='submit']")
    page.wait_for_selector("[data-testid='hit']", timeout=120_000)
    page.wait_for_load_state("networkidle")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    first = page.locator("[data-testid='hit']").first.bounding_box()
    assert first["x"] >= 0 and first["x"] + first["width"] <= 390
    check_regions(page, "[data-testid='hit']")
    page.screenshot(path=str(shots / "phone.png"), full_page=True)
    page.close()
