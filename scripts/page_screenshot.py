"""Open an fsa report page (`report.html`) in headless Chromium, check it, and save a screenshot.

    python scripts/page_screenshot.py <folder>/report/report.html docs/images/report_page.png

Prints what the browser saw: how many images the page has, which did not load, and any console
error or failed request; exits 1 if anything failed. Needs Chromium (Debian: `apt-get install
chromium`) and the `playwright` Python package (fsa's dev extra), which drives the installed
browser: nothing is downloaded. The tests use `check_page` from here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

# Headless on a machine without network: no background connections, no first-run work.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROKEN_IMAGES = "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)"


def find_chromium() -> str | None:
    """The installed Chromium's executable, or None."""
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


def check_page(page_file: Path, screenshot: Path, width: int = 1280, height: int = 900) -> dict[str, Any]:
    """Load the page from its file, wait for every image, and report: {"images", "broken", "errors", "title"}."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium found (Debian: apt-get install chromium)")
    errors: list[str] = []
    with sync_playwright() as playwright:  # launch() starts Chromium with a new, empty profile of its own
        browser = playwright.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            found = {
                "title": page.title(),
                "images": page.evaluate("document.images.length"),
                "broken": page.evaluate(BROKEN_IMAGES),
                "text": page.inner_text("body"),
            }
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    return {**found, "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path, help="a report.html written by fsa-report")
    parser.add_argument("screenshot", type=Path, help="where to save the screenshot (PNG)")
    parser.add_argument("--width", type=int, default=1280, help="browser window width in pixels")
    parser.add_argument("--height", type=int, default=900, help="browser window height in pixels (the screenshot's)")
    args = parser.parse_args()
    found = check_page(args.page, args.screenshot, args.width, args.height)
    print(f"{found['title']}: {found['images']} images, {len(found['broken'])} broken, {len(found['errors'])} errors")
    for problem in found["broken"] + found["errors"]:
        print(f"  {problem}")
    print(f"screenshot: {args.screenshot}")
    return 1 if found["broken"] or found["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
