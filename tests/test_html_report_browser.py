"""The report in a real headless Chromium: plots drawn, nothing blank, no script error, nothing from a log run.

Chromium comes from Debian's packages (scripts/setup-browser.sh, called by scripts/test.sh); playwright drives
it. A missing browser fails these tests rather than skipping them: a skip would hide a broken install step.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, run_cli
from playwright.sync_api import Browser, Page, sync_playwright
from report_logs import HOSTILE_LAYER, HOSTILE_MODEL, HOSTILE_RUN, distinct_bytes, hostile_log

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if path is None:
        pytest.fail("no Chromium on PATH: run scripts/setup-browser.sh (scripts/test.sh does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report of a sample log and a hostile one, overlaid."""
    folder = tmp_path_factory.mktemp("report")
    evil = hostile_log(folder / "evil.jsonl")
    out = folder / "report.html"
    result = run_cli("moola_watch.cli", "report", str(REPO / "sample_logs" / "pointer_collapse.jsonl"), str(evil),
                     "-o", str(out))  # fmt: skip
    assert result.returncode == 1, result.stderr
    return out


class Opened:
    """A page after its scripts ran, with what it said on the console and every request it made."""

    def __init__(self, browser: Browser, path: Path) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.console: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.console.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.page.wait_for_function(
            "[...document.querySelectorAll('div.plot')].every(d => d.querySelector('svg.main-svg'))", timeout=30_000
        )


@pytest.fixture(scope="module")
def opened(browser: Browser, report: Path) -> Iterator[Opened]:
    page = Opened(browser, report)
    yield page
    page.page.close()


def test_every_plot_is_drawn_and_the_page_is_not_blank(opened: Opened, tmp_path: Path) -> None:
    page = opened.page
    plots = page.evaluate("document.querySelectorAll('div.plot').length")
    lines = page.evaluate(
        "[...document.querySelectorAll('div.plot')].map(d => d.querySelectorAll('path.js-line, .hm image').length)"
    )
    assert plots >= 6 and all(count > 0 for count in lines), lines  # every plot drew lines or a heatmap image
    heatmap_image = page.evaluate("document.querySelectorAll('div.plot .hm image').length")
    assert heatmap_image >= 2  # one heatmap per run, drawn as an image
    shot = page.screenshot(full_page=True)
    (tmp_path / "report.png").write_bytes(shot)
    assert distinct_bytes(shot) > 100


def test_no_console_error_and_no_network(opened: Opened, report: Path) -> None:
    assert not [line for line in opened.console if line.startswith(("error", "pageerror", "dialog"))], opened.console
    assert opened.requests == [report.as_uri()]


def test_markup_in_a_log_is_shown_never_run(opened: Opened) -> None:
    page = opened.page
    assert page.evaluate("window.__pwned") is None
    area = page.locator("#plot-layers_2 .nsewdrag").first  # hover labels are drawn from log strings too
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 5)  # the top row: the hostile layer
    page.wait_for_selector("#plot-layers_2 .hoverlayer .hovertext", timeout=5_000)
    hover = page.evaluate("document.querySelector('#plot-layers_2 .hoverlayer').textContent")
    assert HOSTILE_LAYER in hover
    assert page.evaluate("window.__pwned") is None
    scripts = page.evaluate("[...document.scripts].map(s => s.type || 'js')")
    assert scripts.count("js") == 2  # plotly.js and the page's own boot script, nothing from the log
    assert page.evaluate("document.querySelectorAll('img, iframe, object, embed, a[href^=javascript]').length") == 0
    assert page.evaluate("document.querySelectorAll('[onerror], [onload], [onmouseover]').length") == 0
    text = page.evaluate("document.body.innerText")
    for hostile in (HOSTILE_RUN, HOSTILE_MODEL):
        assert hostile in text  # in the tables, as the characters it is
    svg_text = page.evaluate("[...document.querySelectorAll('div.plot svg text')].map(t => t.textContent).join('\\n')")
    assert "<img src=x onerror=" in svg_text  # heatmap row label, shown literally
    assert "<b onmouseover=" in svg_text  # task name in the balance legend
    assert "%{x}<a href=javascript:" in svg_text  # a metric's subplot title: no template filled, no link
    assert HOSTILE_LAYER[:20] in text  # and in the alert list's message
