"""Screenshot the web page as a browser shows it: docs/web-screenshot.png.

    dopplergen serve --pipeline checkpoints/demo --data data/sim10act --port 8765 &
    python scripts/web_screenshot.py "http://127.0.0.1:8765/?user=user03&seed=1&n=4&activity=fall" docs/web-screenshot.png

Drives Debian's Chromium (scripts/install_chromium.sh) through Playwright, with the flags the browser test uses.
"""

from __future__ import annotations

import argparse
import tempfile

from playwright.sync_api import sync_playwright

# Headless and quiet: without the background-networking flags Chromium dials out, which a closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="a deep link, e.g. http://127.0.0.1:8000/?user=user03&seed=1")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--timeout-s", type=float, default=300, help="wait this long for the generated images")
    args = parser.parse_args()
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True,
            viewport={"width": args.width, "height": args.height})
        page = browser.new_page()
        page.goto(args.url)
        page.wait_for_selector("#generated canvas, #error:not([hidden])", timeout=args.timeout_s * 1000)
        if page.is_visible("#error"):
            raise SystemExit(f"the page shows an error: {page.inner_text('#error')}")
        page.wait_for_function("document.querySelector('#real-note').textContent !== ''", timeout=60_000)
        page.screenshot(path=args.out, full_page=True)
        print(f"{args.out}: {page.inner_text('#status')} | {page.inner_text('#real-note')}")
        browser.close()


if __name__ == "__main__":
    main()
