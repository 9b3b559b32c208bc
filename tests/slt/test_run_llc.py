"""`progsynth llc` on a tiny run (rows the report reads, skipping, bad steps) and `progsynth llc-dln`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.report.phases import _llc_rows
from progsynth.runs.store import RunStore
from progsynth.slt.run_llc import load_llc

runner = CliRunner()
FAST = ["--chains", "3", "--draws", "60", "--burnin", "20", "--epsilon", "5e-4"]


def test_llc_writes_rows_the_report_reads_and_a_rerun_skips_them(run: Path):
    steps = RunStore.open(run).checkpoint_steps()
    chosen = [steps[0], steps[-1]]
    first = runner.invoke(app, ["llc", str(run), "--checkpoints", ",".join(map(str, chosen)), *FAST, "--json"])
    assert first.exit_code == 0, first.output
    out = json.loads(first.output.strip().splitlines()[-1])
    assert out["computed"] == chosen and out["skipped"] == []
    assert [e["step"] for e in out["estimates"]] == chosen
    assert all(e["llc"] > 0 and e["llc_stderr"] > 0 and e["epsilon"] == 5e-4 for e in out["estimates"])

    plotted = _llc_rows(RunStore.open(run).measures())
    assert plotted["step"].tolist() == chosen
    assert plotted["llc"].tolist() == pytest.approx([e["llc"] for e in out["estimates"]])
    assert "llc_stderr" in plotted.columns

    again = runner.invoke(app, ["llc", str(run), "--checkpoints", ",".join(map(str, chosen)), *FAST, "--json"])
    assert again.exit_code == 0, again.output
    out_again = json.loads(again.output.strip().splitlines()[-1])
    assert out_again["computed"] == [] and out_again["skipped"] == chosen
    assert len(load_llc(run)) == 2 and len(RunStore.open(run).measures()) == 2


def test_a_missing_checkpoint_fails_naming_the_available_steps(run: Path):
    steps = RunStore.open(run).checkpoint_steps()
    result = runner.invoke(app, ["llc", str(run), "--checkpoints", f"{steps[0]},7777", "--json"])
    assert result.exit_code == 1
    assert "7777" in result.output and "available" in result.output and str(steps[-1]) in result.output
    assert RunStore.open(run).measures().empty  # nothing was estimated
    bad = runner.invoke(app, ["llc", str(run), "--checkpoints", "last"])
    assert bad.exit_code == 1 and "comma list of steps" in bad.output


def test_llc_dln_compares_with_aoyagi():
    result = runner.invoke(app, ["llc-dln", "--widths", "4,3,4", "--rank", "2", "--n", "500", *FAST, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["lambda"] == 7.0 and out["widths"] == [4, 3, 4] and out["num_params"] == 24
    assert out["llc_mean"] > 0 and out["llc_stderr"] > 0
    assert out["rel_error"] == pytest.approx((out["llc_mean"] - 7.0) / 7.0)
    text = runner.invoke(app, ["llc-dln", "--widths", "4,3,4", "--rank", "2", "--n", "500", *FAST])
    assert text.exit_code == 0 and "Aoyagi λ = 7" in text.output
    bad = runner.invoke(app, ["llc-dln", "--widths", "4,3", "--rank", "9"])
    assert bad.exit_code == 1 and "rank" in bad.output
