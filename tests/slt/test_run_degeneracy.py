"""Degeneracy over training (slt.run_degeneracy via `progsynth analyze`): rows at every checkpoint,
the effective size they add up to, reruns that skip, and bad tolerances refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.report.phases import summary
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore
from progsynth.slt.compress import compress
from progsynth.slt.run_degeneracy import DegeneracySettings, load_degeneracy, measure_run_degeneracy

runner = CliRunner()


def test_analyze_records_effective_size_at_every_checkpoint(run: Path):
    result = runner.invoke(app, ["analyze", str(run), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    steps = RunStore.open(run).checkpoint_steps()
    rows = load_degeneracy(run)
    assert rows["step"].tolist() == steps and out["degeneracy"]["computed"] == len(steps)
    # Gromov's MLP: each hidden unit owns its column of W_in (2p) and its row of W_out (p), so the
    # parameters compress removed are exactly the units it reports removed times 3p
    p = 23
    removed = rows[[c for c in rows.columns if c.startswith("units_")]].sum(axis=1)
    assert ((rows["params"] - rows["effective_params"]) == removed * 3 * p).all()
    assert (rows["widths_after"].map(lambda w: w[0]) == 96 - removed).all()
    assert (rows["functional_dimension"] <= rows["functional_rows"]).all()
    assert (rows["functional_rows"] == 4 * p).all()
    final = out["degeneracy"]["final"]
    assert final["step"] == steps[-1] and final["effective_params"] == int(rows["effective_params"].iloc[-1])
    text = runner.invoke(app, ["analyze", str(run)])
    assert "effective size" in text.output and "0 checkpoints measured" in text.output
    assert summary(run).degeneracy["step"].tolist() == steps


def test_the_recorded_effective_size_is_a_network_that_computes_the_same_outputs(run: Path):
    experiment = Experiment(RunStore.open(run).config())
    step = RunStore.open(run).checkpoint_steps()[-1]
    measure_run_degeneracy(run, [step])
    (row,) = load_degeneracy(run).to_dict("records")
    module = experiment.build_module(seed=0)
    params = RunStore.open(run).load_checkpoint(step).params(experiment.init_params(0))
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])
    found = compress(module, experiment.inputs)
    assert found.params_after == row["effective_params"]
    with torch.no_grad():
        scale = float(module(experiment.inputs).abs().max())
        assert float((found.model(experiment.inputs) - module(experiment.inputs)).abs().max()) <= 1e-5 * scale


@pytest.mark.parametrize("flag", [["--tolerance", "0"], ["--tolerance", "-1"], ["--tolerance", "nan"],
                                  ["--functional-inputs", "-2"]])
def test_a_bad_tolerance_or_subset_is_refused_before_anything_is_written(run: Path, flag: list[str]):
    result = runner.invoke(app, ["analyze", str(run), *flag])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert flag[0] in result.output and flag[1] in result.output
    assert RunStore.open(run).measures().empty


def test_other_settings_measure_again_and_keep_both(run: Path):
    steps = RunStore.open(run).checkpoint_steps()[:2]
    first = measure_run_degeneracy(run, steps, DegeneracySettings(functional_inputs=0))
    again = measure_run_degeneracy(run, steps, DegeneracySettings(functional_inputs=0))
    other = measure_run_degeneracy(run, steps, DegeneracySettings(tolerance=1e-3, functional_inputs=0))
    assert first.computed == tuple(steps) and again.computed == () and other.computed == tuple(steps)
    assert "functional_dimension" not in first.table.columns or first.table["functional_dimension"].isna().all()
    assert len(RunStore.open(run).measures()) == 4
    newest = load_degeneracy(run)  # the report's curve: the settings written last, never a mix
    assert newest["degeneracy_config"].map(lambda c: c["tolerance"]).tolist() == [1e-3, 1e-3]
