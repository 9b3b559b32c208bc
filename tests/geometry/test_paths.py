"""Straight paths between checkpoints: exact endpoints, no barrier in function space, transitions,
alignment of a unit-permuted copy, and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from progsynth.errors import ConfigError, ResourceError, RunError
from progsynth.geometry.align import apply_permutation, permutation_spec
from progsynth.geometry.checkpoints import parse_checkpoint
from progsynth.geometry.paths import barrier, load_paths, record_path, straight_path, transition
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore, flatten_named, read_rows
from progsynth.runs.train import train
from tests.conftest import GROKS
from tests.geometry.conftest import GROKS_PATH_STEPS


def metrics_at(run: Path, step: int) -> dict:
    return next(row for row in read_rows(run / "metrics.jsonl") if row["step"] == step)


def test_endpoints_reproduce_the_checkpoints_metrics_exactly(run: Path):
    a, b = GROKS_PATH_STEPS
    result = straight_path(parse_checkpoint(f"{run}@{a}"), parse_checkpoint(f"{run}@{b}"), points=6)
    values = result.parameter.values
    for index, step in ((0, a), (-1, b)):
        logged = metrics_at(run, step)
        for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "weight_norm"):
            assert values[name][index] == logged[name], (step, name)
    assert result.parameter.t == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    # A memorises, B generalises: held-out accuracy rises along both paths, and the key energy with it.
    assert values["test_accuracy"][0] < 0.2 and values["test_accuracy"][-1] == 1.0
    assert result.key_from == "b" and result.key_frequencies
    assert result.function.values["key_energy"][-1] > result.function.values["key_energy"][0] + 0.3


def test_the_function_path_of_a_convex_loss_has_no_barrier(run: Path):
    a, b = GROKS_PATH_STEPS
    result = straight_path(parse_checkpoint(f"{run}@{a}"), parse_checkpoint(f"{run}@{b}"), points=21)
    for name in ("train_loss", "test_loss"):
        values, t = result.function.values[name], result.function.t
        assert result.function.barriers[name]["height"] <= 1e-12
        assert all(v <= (1 - s) * values[0] + s * values[-1] + 1e-12 for s, v in zip(t, values))
    # The function path's endpoints are the two networks' own outputs (in float64).
    assert result.function.values["train_accuracy"][0] == result.parameter.values["train_accuracy"][0]
    assert result.function.values["test_loss"][-1] == pytest.approx(result.parameter.values["test_loss"][-1], rel=1e-5)


def test_barrier_is_the_height_above_the_chord():
    assert barrier([0, 0.5, 1], [1.0, 3.0, 2.0]) == (1.5, 0.5)
    assert barrier([0, 0.5, 1], [1.0, 1.0, 2.0]) == (0.0, 0.0)  # below the chord: no barrier


def test_transitions_step_ramp_flat_and_wandering():
    t = [i / 10 for i in range(11)]
    step = transition("m", t, [0.0] * 6 + [1.0] * 5)
    assert step.kind == "moves" and step.width == pytest.approx(0.1) and step.midpoint == 0.6
    ramp = transition("m", t, [float(x) for x in t])
    assert ramp.kind == "moves" and (ramp.t_low, ramp.t_high) == (0.1, 0.9) and ramp.overshoot == 0
    assert transition("m", t, [5.0] * 10 + [5.01]).kind == "flat"
    bump = transition("m", t, [1.0, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1.5])
    assert bump.kind == "wanders" and bump.width is None and bump.overshoot == pytest.approx(9.0)


def permuted_copy(run: Path, out: Path, seed: int) -> dict[str, torch.Tensor]:
    """Copy ``run`` to ``out`` with every checkpoint's hidden units permuted at random (the same
    function); returns the permutations."""
    shutil.copytree(run, out)
    store = RunStore.open(out)
    experiment = Experiment(store.config())
    spec = permutation_spec(experiment.module_template)
    generator = torch.Generator().manual_seed(seed)
    sizes = {group: experiment.init_params(0)[name].shape[axis]
             for name, groups in spec.items() for axis, group in enumerate(groups) if group}
    perms = {group: torch.randperm(n, generator=generator) for group, n in sizes.items()}
    for step in store.checkpoint_steps():
        tensors = dict(store.load_checkpoint(step).tensors)
        params = {k.removeprefix("params['").removesuffix("']"): v for k, v in tensors.items() if k.startswith("params")}
        permuted = apply_permutation(spec, params, perms)
        tensors.update(flatten_named("params", permuted))  # the optimizer state, unused by a path, stays
        store.save_checkpoint(step, tensors)
    return perms


def test_alignment_of_a_permuted_copy_recovers_it_and_leaves_no_barrier(run: Path, tmp_path: Path):
    permuted_copy(run, tmp_path / "permuted", seed=3)
    a, b = parse_checkpoint(f"{run}@last"), parse_checkpoint(f"{tmp_path / 'permuted'}@last")
    raw = straight_path(a, b, points=11)
    aligned = straight_path(a, b, points=11, align=True)
    assert raw.parameter.barriers["train_loss"]["height"] > 1e-3
    assert aligned.alignment["distance_after"] <= 1e-5 * aligned.alignment["distance_before"]
    assert aligned.alignment["moved"]["hidden"] >= 90  # of 96 units, all but the fixed points of a random permutation
    for name in ("train_loss", "test_loss"):
        values = aligned.parameter.values[name]
        assert max(values) - min(values) <= 1e-6 and aligned.parameter.barriers[name]["height"] <= 1e-6
    assert all(tr.kind == "flat" for tr in aligned.parameter.transitions)
    assert not aligned.parameter.switch.exists


def test_two_seeds_path_is_recorded_in_a(two_seeds: Path, tmp_path: Path):
    runs = tmp_path / "seeds"
    shutil.copytree(two_seeds, runs)
    result = straight_path(parse_checkpoint(f"{runs}/seed-0@last"), parse_checkpoint(f"{runs}/seed-1@last"),
                           points=5, align=True)
    record_path(result)
    rows = load_paths(runs / "seed-0")
    assert len(rows) == 1 and rows[0]["b"] == f"{runs}/seed-1@150" and rows[0]["aligned"] is True
    assert rows[0]["parameter"]["values"]["test_accuracy"] == result.parameter.values["test_accuracy"]
    json.dumps(result.to_dict())  # everything in the row is JSON
    assert load_paths(runs / "seed-1") == []


def test_refusals_name_what_is_wrong(run: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="RUN@STEP"):
        parse_checkpoint(str(run))
    with pytest.raises(RunError, match=r"no checkpoint at step 7; available: 11 steps from 0 to 150"):
        parse_checkpoint(f"{run}@7")
    with pytest.raises(RunError, match="does not exist"):
        parse_checkpoint(f"{tmp_path / 'nowhere'}@3")
    with pytest.raises(ConfigError, match="integer or 'last'"):
        parse_checkpoint(f"{run}@x")
    wide = tmp_path / "wide"
    train(GROKS.override(**{"model.d_mlp": 48, "epochs": 4}), wide)
    with pytest.raises(ConfigError, match=r"differ in architecture: .*groks@150 \(gromov: width 96.* against "
                                          r".*wide@4 \(gromov: width 48"):
        straight_path(parse_checkpoint(f"{run}@last"), parse_checkpoint(f"{wide}@last"))
    other_task = tmp_path / "mul"
    train(GROKS.override(**{"task.op": "mul", "epochs": 4}), other_task)
    with pytest.raises(ConfigError, match="differ in task"):
        straight_path(parse_checkpoint(f"{run}@last"), parse_checkpoint(f"{other_task}@last"))
    a = parse_checkpoint(f"{run}@last")
    with pytest.raises(ConfigError, match="from 2 to 1001, got 1"):
        straight_path(a, a, points=1)
    with pytest.raises(ResourceError, match=r"needs about .* GiB .*--no-mechanism"):
        straight_path(a, a, max_memory_bytes=3_000_000)


def test_a_task_off_z_p_gets_losses_and_a_note(tmp_path: Path):
    from progsynth.runs.config import ModelConfig, RunConfig
    from progsynth.tasks.parity import ParityTask

    config = RunConfig(task=ParityTask(n_bits=5, k=2), model=ModelConfig(name="mlp", d_model=4, d_mlp=8),
                       epochs=6, metrics_every=2, max_checkpoints=3)
    train(config, tmp_path / "parity")
    result = straight_path(parse_checkpoint(f"{tmp_path}/parity@0"), parse_checkpoint(f"{tmp_path}/parity@last"),
                           points=3, align=True)
    assert "Fourier programs over Z_p; not for a parity task" in result.note and result.key_frequencies is None
    assert set(result.parameter.values) == {"train_loss", "test_loss", "train_accuracy", "test_accuracy", "weight_norm"}
    assert result.parameter.transitions == [] and not result.parameter.switch.exists
