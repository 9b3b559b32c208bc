"""The report as a person sees it: opened in headless Chromium, no console errors, every figure drawn.

Skipped, saying why, where Chromium is not installed; under CI (the CI variable set) it fails
instead, since ``.ci/run`` installs Chromium. The screenshot is written next to the report as
``RUN/report-screenshot.png`` (a run directory under pytest's temporary directory; run with
``--basetemp DIR`` to choose where).
"""

from __future__ import annotations

from progsynth.report.html import Report

PROBE = """
Array.from(document.querySelectorAll('figure svg')).map(svg => {
  const box = svg.getBoundingClientRect();
  const drawn = Array.from(svg.querySelectorAll('path, image')).filter(e => {
    const b = e.getBBox(); return b.width > 0 || b.height > 0; }).length;
  const data = svg.querySelectorAll('g[id^="line2d"] path, g[id^="patch"] path, image').length;
  return {section: svg.closest('section').id, width: box.width, height: box.height, drawn, data};
})
"""
"""For every figure: its section, rendered size, how many paths/images have a non-empty bounding
box, and how many plot elements (matplotlib's lines, patches and images) it holds."""


def test_report_renders_in_chromium(chromium, measured_report: Report):
    report = measured_report
    page = chromium.load(report.path.resolve().as_uri(), PROBE)
    assert page.errors == []
    assert all(url == report.path.resolve().as_uri() or url.startswith("data:") for url in page.requests), page.requests
    assert [figure["section"] for figure in page.value] == report.figures
    for figure in page.value:
        assert figure["width"] > 300 and figure["height"] > 100, figure
        assert figure["drawn"] > 20 and figure["data"] > 0, figure
    screenshot = report.path.parent / "report-screenshot.png"
    screenshot.write_bytes(page.screenshot)
    assert page.screenshot.startswith(b"\x89PNG\r\n\x1a\n") and len(page.screenshot) > 50_000
