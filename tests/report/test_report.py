"""The HTML report: self-contained, its sections follow the data on disk, PNG export, the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from typer.testing import CliRunner

import progsynth
from progsynth.cli import app
from progsynth.report.html import REPORT, Report, write_report

runner = CliRunner()


def sections(page: str) -> list[str]:
    return re.findall(r"<section id=(\w+)", page)


def assert_self_contained(page: str) -> None:
    """Nothing outside the file is referenced: no script, stylesheet link, iframe or object, every
    src/href an in-page anchor or a data: URI, every CSS url() an in-page reference, no http(s)."""
    assert "<script" not in page and "<link" not in page and "<iframe" not in page and "<object" not in page
    assert "@import" not in page and "http://" not in page and "https://" not in page
    for attribute, value in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', page):
        assert value.startswith(("#", "data:")), (attribute, value[:80])
    for value in re.findall(r"url\(\s*([^)]*)\)", page):
        assert value.strip("'\" ").startswith("#"), value


def figures_are_inline_svg(page: str, names: list[str]) -> None:
    for name in names:
        body = re.search(rf"<section id={name}>(.*?)</section>", page, re.S).group(1)
        assert "<figure><svg" in body and "</svg>" in body and "<path" in body, name


def test_report_of_a_run_without_measures(grokked_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(grokked_run, run)
    report = write_report(run)
    assert report.path == run / REPORT and report.png == []
    assert report.figures == ["training", "spectrum", "neurons"]
    page = report.path.read_text()
    assert_self_contained(page)
    figures_are_inline_svg(page, report.figures)
    assert page.count("<svg") == 3
    assert sections(page) == ["summary", "training", "spectrum", "neurons", "program", "missing", "config"]
    assert f"progsynth analyze {run}" in page and f"progsynth llc {run}" in page and f"progsynth ntk {run}" in page
    assert f"progsynth path {run}@43 {run}@150" in page and f"progsynth contrast {run} --a 43 --b 150" in page
    assert f"progsynth {progsynth.__version__}" in page and '"train_fraction": 0.5' in page
    program = report.summary.extraction.program.text()
    assert program.splitlines()[0] in page
    assert f"{report.summary.extraction.description_bits} bits" in page and "lookup table" in page
    assert not (run / "figures").exists()


def test_a_run_that_has_not_generalised_says_so(grokked_run: Path, tmp_path: Path):
    """The grokked run cut at step 40, before it generalised: memorisation only, no program."""
    run = tmp_path / "run"
    shutil.copytree(grokked_run, run)
    rows = [line for line in (run / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 40]
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    for checkpoint in (run / "checkpoints").glob("*.safetensors"):
        if int(checkpoint.stem.removeprefix("step_")) > 40:
            checkpoint.unlink()
    report = write_report(run)
    s = report.summary
    assert s.phases.generalised is None and s.phases.spans() == [s.phases.memorisation]
    assert s.extraction.verdict_kind == "none"
    page = report.path.read_text()
    assert_self_contained(page)
    figures_are_inline_svg(page, report.figures)
    assert page.count("never: the run did not generalise") == 2 and "No generalising program" in page
    # The program the extraction reads is beside how little the network follows it, in words.
    e = s.extraction
    assert f"{e.agreement:.3f} on all pairs, {e.heldout_agreement:.3f} on held-out pairs" in page
    assert "The network is not this program" in page and "does not yet set the network&#x27;s answers" in page


def test_measures_and_llc_appear_when_present(measured_report: Report):
    report = measured_report
    assert report.figures == ["training", "measures", "spectrum", "neurons", "degeneracy", "llc", "refined-llc", "ntk",
                              "path-1", "contrast-1"]
    assert report.summary.missing == []
    page = report.path.read_text()
    assert_self_contained(page)
    figures_are_inline_svg(page, report.figures)
    assert "missing" not in sections(page)


def test_cli_report_png_and_json(grokked_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(grokked_run, run)
    result = runner.invoke(app, ["report", str(run), "--png", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["report"] == str(run / REPORT) and Path(out["report"]).is_file()
    assert out["figures"] == ["training", "spectrum", "neurons"]
    assert out["png"] == [str(run / "figures" / f"{name}.png") for name in out["figures"]]
    for png in out["png"]:
        data = Path(png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert out["phases"]["generalised"] is not None and out["phases"]["circuit_formation"]["end"] > 0
    assert out["summary"]["program_accuracy"] == 1.0
    assert [m["what"] for m in out["missing"]] == ["progress measures", "local learning coefficient",
                                                   "refined λ̂ by component", "NTK spectrum over training", "paths between checkpoints",
                                                   "contrast of two checkpoints"]
    assert out["summary"]["network_is"].startswith("The network is this program")


def test_cli_report_text_and_errors(grokked_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(grokked_run, run)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # rich wraps lines at the terminal width
    assert f"report: {run / REPORT}" in words and f"(run: progsynth analyze {run})" in words
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere"), "--json"])
    assert missing.exit_code == 1 and str(tmp_path / "nowhere") in missing.output
    assert runner.invoke(app, ["report"]).exit_code == 2
