"""Open a latok page in a real, headless Chromium and check what a reader would: no console errors, every
video loads and plays, seeking one panel moves the others, sorting reorders a table, plots have a size.

Used by tests/test_pages.py and eval/page_screenshots.py.  The browser is Debian's ``chromium`` (``.ci/run``
installs it when missing), driven by Playwright; ``LATOK_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

VIEWPORTS = {"wide": (1280, 800), "narrow": (420, 800)}


def chromium_path() -> str | None:
    return os.environ.get("LATOK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _wait(page, expression: str, timeout: float = 20.0, argument=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(expression, argument):
            return True
        page.wait_for_timeout(100)
    return False


def check_page(page_path: Path, screenshots: Path, label: str) -> dict:
    """Open ``page_path`` from ``file://`` at each viewport, check it, save full-page screenshots into
    ``screenshots`` as ``LABEL-VIEWPORT.png``; return what was seen (assertion errors say what failed)."""
    from playwright.sync_api import sync_playwright

    seen: dict = {"screenshots": []}
    screenshots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--allow-file-access-from-files"],
        )  # fmt: skip
        try:
            for viewport, (width, height) in VIEWPORTS.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                errors, dialogs = [], []
                page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
                page.goto(page_path.resolve().as_uri(), wait_until="load")
                visible = "Array.from(document.querySelectorAll('video')).filter(v => !v.hidden)"
                count = page.evaluate(f"{visible}.length")
                assert _wait(page, f"{visible}.every(v => v.readyState >= 2)"), (
                    f"{label} {viewport}: videos not ready: " + str(page.evaluate(f"{visible}.map(v => [v.src, v.readyState, v.error && v.error.code])")))
                if viewport == "wide":
                    seen.update(videos=count, **_check_playback(page, label), **_check_sorting(page, label))
                plots = page.evaluate("Array.from(document.querySelectorAll('.plot svg, svg.line')).filter(s => s.getClientRects().length)"
                                      ".map(s => { const r = s.getBoundingClientRect(); return [r.width, r.height]; })")  # fmt: skip
                assert plots and all(w > 0 and h > 0 for w, h in plots), f"{label} {viewport}: plots without size: {plots}"
                overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
                path = screenshots / f"{label}-{viewport}.png"
                page.screenshot(path=str(path), full_page=True)
                seen["screenshots"].append(path)
                assert not errors, f"{label} {viewport}: console errors: {errors}"
                assert not dialogs, f"{label} {viewport}: the page opened dialogs (injected script?): {dialogs}"
                seen[f"plots_{viewport}"], seen[f"overflow_{viewport}"] = len(plots), overflow
                page.close()
        finally:
            browser.close()
    return seen


def _check_playback(page, label: str) -> dict:
    """Every synced group: play one video and see it advance; seek it and see the others follow."""
    groups = page.evaluate("Array.from(document.querySelectorAll('[data-sync]')).filter(g => g.querySelectorAll('video:not([hidden])').length >= 2).length")
    for index in range(groups):
        group = f"Array.from(document.querySelectorAll('[data-sync]')).filter(g => g.querySelectorAll('video:not([hidden])').length >= 2)[{index}]"
        videos = f"Array.from({group}.querySelectorAll('video:not([hidden])'))"
        page.evaluate(f"{videos}[0].play()")
        assert _wait(page, f"{videos}.every(v => v.currentTime > 0 || v.ended)", 10), f"{label}: group {index} did not play together"
        page.evaluate(f"{videos}.forEach(v => v.pause())")
        target = page.evaluate(f"(() => {{ const v = {videos}[0]; const t = v.duration / 2; v.currentTime = t; return t; }})()")
        assert _wait(page, f"{videos}.every(v => Math.abs(v.currentTime - {target}) < 0.05)", 10), (
            f"{label}: seeking one panel did not move the others: {page.evaluate(f'{videos}.map(v => v.currentTime)')} vs {target}")
    return {"synced_groups": groups}


def _check_sorting(page, label: str) -> dict:
    """Each sortable table: click a numeric header twice; the rows come out ascending, then descending."""
    tables = page.evaluate("Array.from(document.querySelectorAll('table.sortable')).map(t => t.id)")
    for table in tables:
        column = page.evaluate(f"Array.from(document.querySelectorAll('#{table} th')).findIndex(th => th.classList.contains('num'))")
        values = f"Array.from(document.querySelectorAll('#{table} tbody tr')).map(r => parseFloat(r.cells[{column}].dataset.sort))"
        before = page.evaluate(values)
        header = page.locator(f"#{table} th").nth(column)
        header.click()
        ascending = page.evaluate(values)
        header.click()
        descending = page.evaluate(values)
        known = [v for v in before if v == v]
        assert ascending[: len(known)] == sorted(known), f"{label}: #{table} not ascending after a click: {ascending}"
        assert descending[-len(known) :] == sorted(known, reverse=True) if known else True, f"{label}: #{table} not descending: {descending}"
        assert len(set(known)) < 2 or ascending != descending, f"{label}: #{table} did not reorder"
    return {"sorted_tables": len(tables)}
