"""The comparison page: self-contained, its sections follow the data, drawn in Chromium; the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.compare.convergence import CompareConfig, compare_runs
from progsynth.report.compare import COMPARE_PAGE, write_compare_report
from progsynth.runs.train import train
from tests.conftest import GROKS
from tests.report.test_report import assert_self_contained, figures_are_inline_svg, sections
from tests.report.test_report_browser import PROBE

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, two_seeds: Path) -> Path:
    """The two seeds beside a run trained on random labels."""
    out = tmp_path_factory.mktemp("compare") / "runs"
    shutil.copytree(two_seeds, out)
    train(GROKS.override(label_noise=1.0), out / "random")
    return out


def test_the_page_draws_every_section(runs: Path, chromium):
    comparison = compare_runs([runs], CompareConfig(inputs=200, k=5))
    page, pngs = write_compare_report(comparison, png=True)
    assert page == runs / COMPARE_PAGE and [p.name for p in pngs] == ["frequencies.png", "similarity.png",
                                                                      "over-training.png", "closeness.png"]
    html = page.read_text()
    assert_self_contained(html)
    assert sections(html) == ["runs", "frequencies", "similarity", "over", "closeness", "groups", "random"]
    figures_are_inline_svg(html, ["frequencies", "similarity", "closeness"])
    assert "seed-0" in html and "random" in html and "lookup table bits" in html
    loaded = chromium.load(page.resolve().as_uri(), PROBE)
    assert loaded.errors == []
    assert [f["section"] for f in loaded.value] == ["frequencies", "similarity", "over-training", "closeness"]
    for figure in loaded.value:
        assert figure["width"] > 300 and figure["drawn"] > 20 and figure["data"] > 0, figure
    (runs / "compare-screenshot.png").write_bytes(loaded.screenshot)


def test_cli_compare_and_report_compare(runs: Path, tmp_path: Path):
    result = runner.invoke(app, ["compare", str(runs / "seed-0"), str(runs / "seed-1"), "--inputs", "120", "--k",
                                 "4", "--final-only", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert [r["name"] for r in out["runs"]] == ["seed-0", "seed-1"] and out["over_training"]["steps"] == []
    assert out["random_labels"] is None and len(out["similarity"]["cka"]["hidden"]) == 2
    text = runner.invoke(app, ["compare", str(runs), "--inputs", "120", "--final-only"])
    words = " ".join(text.output.split())
    assert text.exit_code == 0 and "cka (hidden)" in words and "random labels" in words
    page = tmp_path / "page.html"
    written = runner.invoke(app, ["report", "--compare", str(runs / "seed-0"), str(runs / "seed-1"), "--out",
                                  str(page), "--json"])
    assert written.exit_code == 0, written.output
    assert json.loads(written.output.strip().splitlines()[-1])["report"] == str(page) and page.is_file()
    several = runner.invoke(app, ["report", str(runs / "seed-0"), str(runs / "seed-1")])
    assert several.exit_code == 1 and "give --compare" in several.output
    one = runner.invoke(app, ["compare", str(runs / "seed-0")])
    assert one.exit_code == 1 and "at least two runs" in one.output and "Traceback" not in one.output
    assert runner.invoke(app, ["compare", str(runs), "--inputs", "1"]).exit_code == 1
