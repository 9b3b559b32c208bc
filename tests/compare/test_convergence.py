"""Many runs compared: programs, functions, representations, over training, groups, random labels,
and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from progsynth.compare.convergence import (CompareConfig, common_parent, compare_runs, effective_parameters,
                                           find_runs, frequency_test)
from progsynth.errors import ConfigError, RunError
from progsynth.interp.extract import load_params
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore
from progsynth.runs.train import train
from tests.conftest import GROKS, LoadTracker

SMALL = CompareConfig(inputs=200, k=5)


def test_two_seeds_compared_at_their_last_checkpoint(two_seeds: Path, monkeypatch: pytest.MonkeyPatch):
    tracker = LoadTracker(monkeypatch)
    seen = []
    c = compare_runs([two_seeds], SMALL, progress=lambda done, total, what: seen.append((done, total)))
    assert [f.name for f in c.runs] == ["seed-0", "seed-1"] and c.rows == 200
    steps = RunStore.open(two_seeds / "seed-0").checkpoint_steps()
    assert c.over_training["steps"] == steps and seen[-1] == (1 + len(steps), 1 + len(steps))
    assert tracker.max_alive == 1  # one checkpoint in memory at a time, over every run and step
    for f in c.runs:
        assert f.step == 150 and not f.still_training and f.generalised_step is not None and f.test_accuracy == 1.0
        assert f.program["verdict_kind"] == "program" and f.effective_parameters == f.parameters
    assert np.allclose(np.diag(c.agreement), 1) and 0.9 < c.agreement[0, 1] <= 1
    for measure in ("cka", "knn"):
        for site in ("embedding", "hidden"):
            matrix = c.similarity[measure][site]
            assert np.allclose(np.diag(matrix), 1) and np.allclose(matrix, matrix.T) and 0 < matrix[0, 1] < 1
    assert c.similarity["stitching"]["hidden"][0, 1] < 1
    # Seeds start unrelated and their answers converge as they generalise.
    assert c.over_training["agreement"][0] < 0.2 < 0.9 < c.over_training["agreement"][-1]
    assert c.frequencies["runs"] == 2 and 0 < c.frequencies["p_value"] <= 1
    assert c.grokking["spearman"] is None and c.groups == [] and c.random_labels is None
    json.dumps(c.to_dict())  # strict JSON: NaN written as null
    assert "NaN" not in json.dumps(c.to_dict())


def test_runs_still_training_differing_settings_and_random_labels(run: Path, tmp_path: Path):
    short = tmp_path / "short"
    shutil.copytree(run, short)
    for step in RunStore.open(short).checkpoint_steps()[-3:]:
        (short / "checkpoints" / f"step_{step:08d}.safetensors").unlink()
    noisy = tmp_path / "noisy"
    train(GROKS.override(label_noise=1.0, **{"optim.name": "adam", "optim.weight_decay": 0.0}), noisy)
    RunStore.open(run).append_measures({"step": 150, "analysis": "llc", "llc": 41.5, "llc_stderr": 0.5})
    c = compare_runs([run, short, noisy], CompareConfig(inputs=150, k=5, over_training=False))
    assert c.over_training["steps"] == []
    assert [f.name for f in c.runs] == ["groks", "short", "noisy"] and common_parent([run, short, noisy]) == tmp_path
    short_facts = c.runs[1]
    assert short_facts.still_training and any("still training: compared at its newest checkpoint, step "
                                              f"{short_facts.step} of 150" in n for n in c.notes)
    settings = {g["setting"]: g for g in c.groups}
    assert set(settings) == {"optimizer", "label_noise"}
    assert [g["value"] for g in settings["optimizer"]["groups"]] == ["adamw", "adam"]
    table = c.random_labels
    assert [r["label_noise"] for r in table] == [0.0, 0.0, 1.0]
    clean, random = table[0], table[-1]
    assert clean["fit_ratio"] == pytest.approx(1.0) and clean["program_bits"] is not None
    assert (clean["llc"], clean["llc_stderr"]) == (41.5, 0.5) and random["llc"] is None  # read from measures.jsonl
    assert random["heldout_accuracy"] < 0.15 and random["program_bits"] is None and random["verdict"] == "none"
    assert random["lookup_table_bits"] > 0


def test_different_tasks_are_refused_naming_the_runs(run: Path, tmp_path: Path):
    other = tmp_path / "mul"
    train(GROKS.override(**{"task.op": "mul", "epochs": 2}), other)
    with pytest.raises(ConfigError, match=rf"runs '{run}' \(.*\) and '{other}' \(.*\) are of different tasks"):
        compare_runs([run, other], SMALL)


def test_finding_runs(two_seeds: Path, run: Path, tmp_path: Path):
    assert find_runs([two_seeds]) == [two_seeds / "seed-0", two_seeds / "seed-1"]
    assert find_runs([two_seeds / "seed-1", run]) == [two_seeds / "seed-1", run]
    with pytest.raises(RunError, match="at least two runs, found 1"):
        find_runs([run, run])
    with pytest.raises(RunError, match="does not exist"):
        find_runs([tmp_path / "nowhere", run])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="neither a run directory nor a directory holding runs"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="inputs must be"):
        compare_runs([two_seeds], CompareConfig(inputs=1))


def test_the_frequency_test_tells_shared_frequencies_from_chance():
    shared = frequency_test([[3]] * 8, [26] * 8, seed=0)
    assert shared["statistic"] == 8 and shared["p_value"] < 1e-3 and shared["preferred"] == [3]
    spread = frequency_test([[k] for k in (1, 5, 9, 13, 17, 21, 24, 26)], [26] * 8, seed=0)
    assert spread["statistic"] == 1 and spread["p_value"] == 1.0 and spread["preferred"] == []
    assert shared["sets"] == [{"frequencies": [3], "runs": 8}]


def test_effective_parameters_drop_silent_units(run: Path):
    store = RunStore.open(run)
    experiment = Experiment(store.config())
    params = load_params(store, experiment, 150)
    total = sum(t.numel() for t in params.values())
    assert effective_parameters(experiment, params) == total
    silenced = dict(params)
    silenced["W_in"] = params["W_in"].clone()
    silenced["W_in"][:, :3] = 0  # three x² units with no input
    per_unit = params["W_in"].shape[0] + params["W_out"].shape[1]
    assert effective_parameters(experiment, silenced) == total - 3 * per_unit


def test_three_architectures_of_one_task_compare(run: Path, tmp_path: Path):
    """The Gromov MLP beside an embedding MLP and a transformer on the same task: different widths,
    the same inputs, so every measure is defined."""
    train(GROKS.override(**{"model.name": "mlp", "model.d_model": 8, "model.d_mlp": 32, "loss": "cross_entropy",
                            "epochs": 20}), tmp_path / "mlp")
    train(GROKS.override(**{"model.name": "transformer", "model.d_model": 16, "model.n_heads": 2,
                            "model.d_head": 8, "model.d_mlp": 32, "loss": "cross_entropy", "epochs": 20}),
          tmp_path / "transformer")
    c = compare_runs([run, tmp_path / "mlp", tmp_path / "transformer"], CompareConfig(inputs=200, k=5,
                                                                                     over_training=False))
    assert [f.model for f in c.runs] == ["gromov", "mlp", "transformer"]
    for measure in ("cka", "knn", "stitching"):
        for site in ("embedding", "hidden"):
            assert np.isfinite(c.similarity[measure][site]).all(), (measure, site)
    assert [g["setting"] for g in c.groups] == ["model"]
