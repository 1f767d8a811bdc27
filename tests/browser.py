"""Debian's Chromium driven by Playwright, for tests that look at a rendered page."""

import os
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parent.parent
# As the machine's own browser checks start it: no sandbox as root, and no background traffic
# (the network is closed; Chromium would retry its update and sync hosts at every start).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    """The system Chromium, installed by scripts/setup_browser.sh when missing."""
    path = os.environ.get("BERTQA_CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        subprocess.run(["bash", str(REPO / "scripts" / "setup_browser.sh")], check=True)
    return path


def render(page_path: str, screenshot_path: str, look):
    """Opens page_path in headless Chromium, saves a full-page screenshot, returns look(page)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(pathlib.Path(page_path).resolve().as_uri())
            page.screenshot(path=screenshot_path, full_page=True)
            return look(page)
        finally:
            browser.close()
