"""A screenshot of `bertqa serve`'s page, asked one question, into docs/serve.png (headless Chromium).

    .venv/bin/python scripts/serve_screenshot.py                       # runs/ and data/sample/eval.json
    .venv/bin/python scripts/serve_screenshot.py --runs-dir runs/hour --paragraph 3 --question "Who ...?"
    .venv/bin/python scripts/serve_screenshot.py --url http://127.0.0.1:8765/   # a server already running

Without --url it starts the server in this process on a free loopback port (bertqa_cli.serve's
BackgroundServer), over --runs-dir's pushed versions; the page then compares the newest version
with the one pushed before it. The question is --question, else the paragraph's first. Chromium is
Debian's, as the tests drive it (tests/browser.py; scripts/setup_browser.sh installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on AVX2-only CPUs too (Makefile)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the project, and tests/browser.py's Chromium settings


def screenshot(url: str, out: str, paragraph: int, question: str | None) -> dict:
    """Asks the page at `url` and saves it to `out`; returns what each version answered."""
    from browser import CHROMIUM_ARGS, chromium_path
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]", timeout=120_000)
            if page.locator("#paragraph option").count() > paragraph + 1:
                page.select_option("#paragraph", str(paragraph))
            if question is None:
                question = page.locator("#sample-questions button").first.inner_text()
            page.fill("#question", question)
            page.click("#ask")
            panels = page.locator(".result").count()
            for i in range(panels):  # not wait_for_function: the page's Content-Security-Policy forbids eval
                page.locator(".result").nth(i).and_(page.locator("[data-done]")).wait_for(timeout=120_000)
            page.screenshot(path=out, full_page=True)
            return {page.locator(".result").nth(i).get_attribute("data-version"):
                    page.locator(".result").nth(i).locator(".answer, .error").first.inner_text()
                    for i in range(panels)}
        finally:
            browser.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running `bertqa serve` (default: start one here)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--pipeline-name", default="bertqa")
    parser.add_argument("--data", default="data/sample/eval.json", help="SQuAD JSON whose paragraphs the page offers")
    parser.add_argument("--paragraph", type=int, default=0, help="which of them (default the first)")
    parser.add_argument("--question", default=None, help="default: the paragraph's first question")
    parser.add_argument("--out", default=str(REPO / "docs" / "serve.png"))
    args = parser.parse_args(argv)

    from bertqa_cli.serve import BackgroundServer, ServeConfig

    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            config = ServeConfig(runs_dir=args.runs_dir, pipeline_name=args.pipeline_name, port=0, data=args.data,
                                 access_log=False)
            url = stack.enter_context(BackgroundServer(config))
        answers = screenshot(url, args.out, args.paragraph, args.question)
    for version, answer in answers.items():
        print(f"{version}: {answer}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
