"""The report in a real browser (issue 13 item 5): headless Chromium opens what ``ood-bench report``
writes, every figure loads, the console stays clean, the tables are there; a screenshot is kept.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it when it can) or ``$CHROMIUM``.  Where
there is none the tests are skipped, saying so: they never pass without a browser.  The screenshot
lands in the test's results folder (``RESULTS/report/screenshot.png``) and, when
``$OOD_BENCH_ARTIFACTS`` names a folder (CI), is copied there as an artifact.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from chromium import Chromium, find_chromium
from logitnorm_bench.cli import main

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine: install Debian's "
                                "chromium (apt-get install -y chromium; .ci/run does) or set $CHROMIUM")
PNG = b"\x89PNG\r\n\x1a\n"
IMAGES = ("Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete, "
          "width: i.naturalWidth, height: i.naturalHeight}))")


def _inspect(page_path: Path, screenshot: Path | None = None) -> dict:
    with Chromium(CHROMIUM) as browser:
        page = browser.open(page_path.resolve().as_uri())
        found = {"images": page.evaluate(IMAGES),
                 "tables": page.evaluate("document.querySelectorAll('table').length"),
                 "rows": page.evaluate("document.querySelectorAll('table tr').length"),
                 "title": page.evaluate("document.title"),
                 "errors": page.console_errors()}
        if screenshot is not None:
            page.screenshot(screenshot)
    return found


def test_the_report_renders_in_headless_chromium(tiny_suite, tmp_path, capsys):
    suite = tiny_suite(tmp_path / "s.yaml", epochs=2, ood_dataset=["uniform_noise", "photo_patches"], seed=[0, 1])
    results = tmp_path / "results"
    assert main(["-q", "run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["report", str(results)]) == 0
    page_path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert page_path.suffix == ".html" and page_path.is_file()

    screenshot = page_path.parent / "screenshot.png"
    found = _inspect(page_path, screenshot)
    assert found["images"], "the report has no figure"
    broken = [i for i in found["images"] if not i["complete"] or i["width"] == 0 or i["height"] == 0]
    assert not broken, f"figures that did not load: {broken}"
    assert found["errors"] == [], found["errors"]
    assert found["tables"] >= 1 and found["rows"] > found["tables"], found
    assert found["title"]
    assert screenshot.read_bytes().startswith(PNG) and screenshot.stat().st_size > 10_000
    artifacts = os.environ.get("OOD_BENCH_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / "report-screenshot.png")


def test_the_check_sees_a_broken_figure_and_a_console_error(tmp_path):
    """The browser check itself: a missing image and a script error are caught, not passed over."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><title>bad</title></head><body><table><tr><td>1</td></tr></table>"
                    "<img src='missing.png'><script>console.error('boom'); undefinedFunction();</script>"
                    "</body></html>")
    found = _inspect(page)
    assert [(i["src"], i["width"]) for i in found["images"]] == [("missing.png", 0)]
    errors = "\n".join(found["errors"])
    assert "console.error: boom" in errors and "undefinedFunction" in errors and "missing.png" in errors
