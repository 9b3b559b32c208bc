"""The sweep page as a person sees it: opened in headless Chromium, no console errors, nothing
fetched, its figures drawn and its phase diagram laid out with coloured cells.

Skipped where Chromium is not installed, failed under CI (``tests/report/conftest.py``). The
screenshot is written next to the page as ``SWEEP/report-screenshot.png``.
"""

from __future__ import annotations

from pathlib import Path

from progsynth.report.sweep import write_sweep_report
from tests.report.test_report_browser import PROBE
from tests.report.test_sweep_report import sweep  # noqa: F401  (the fixture)

CELLS = """
Array.from(document.querySelectorAll('table.diagram td.cell')).map(td => {
  const box = td.getBoundingClientRect();
  return {text: td.innerText.split('\\n')[0], width: box.width, height: box.height,
          background: getComputedStyle(td).backgroundColor};
})
"""
"""For every cell of the phase diagram: its first line, rendered size and background colour."""


def test_sweep_page_renders_in_chromium(chromium, sweep: Path):  # noqa: F811
    report = write_sweep_report(sweep)
    url = report.path.resolve().as_uri()
    page = chromium.load(url, PROBE)
    assert page.errors == []
    assert all(u == url or u.startswith("data:") for u in page.requests), page.requests
    assert [figure["section"] for figure in page.value] == report.figures == ["generalisation", "frequencies"]
    for figure in page.value:
        assert figure["width"] > 300 and figure["height"] > 100, figure
        assert figure["drawn"] > 20 and figure["data"] > 0, figure
    cells = chromium.load(url, CELLS).value
    assert [c["text"] for c in cells] == ["comprehension 2/3", "unfinished 3/3", "memorisation 3/3", "failed 3/3",
                                          "confusion 3/3", "grokking 2/3"]
    assert all(c["width"] > 60 and c["height"] > 20 for c in cells), cells
    assert len({c["background"] for c in cells}) == 6
    (sweep / "report-screenshot.png").write_bytes(page.screenshot)
    assert page.screenshot.startswith(b"\x89PNG\r\n\x1a\n") and len(page.screenshot) > 30_000
