"""Re-take docs/screenshot.png: headless Debian chromium (Playwright) against a running ``mmrag serve``
on examples/data.

    mmrag ingest examples/data --store /tmp/demo-store
    mmrag serve --store /tmp/demo-store --port 8765 &
    python docs/screenshot.py http://127.0.0.1:8765/ docs/screenshot.png [--mode search|ask]
"""

from __future__ import annotations

import argparse

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("--mode", choices=["search", "ask"], default="search")
    ap.add_argument("--query", default=None)
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=700)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    query = args.query or ("What is the total of invoice 4711?" if args.mode == "ask" else "invoice total")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.url)
        page.wait_for_selector("#status[data-state='ready']", timeout=300_000)
        if args.mode == "ask":
            page.click("[data-testid='mode-ask']")
        page.fill("[data-testid='query']", query)
        page.click("[data-testid='submit']")
        page.wait_for_selector("[data-testid='citation']" if args.mode == "ask" else "[data-testid='hit']",
                               timeout=300_000)
        if args.mode == "ask":
            page.locator("[data-testid='citation']").first.click()
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(800)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=args.out)
        browser.close()


if __name__ == "__main__":
    main()
