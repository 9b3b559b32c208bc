"""The switches between our `nanda` preset and the paper's code (REFERENCE §6): p + 1 output logits
(``model.unembed_equals``), a linear learning-rate warm-up (``optim.warmup_steps``) and the paper's
split (``task.split``); the ``nanda-paper`` preset; overrides, validation, config.json; what the
metrics and analyses see; tiny training runs with each switch on."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.errors import ConfigError
from progsynth.interp.network import loss_on, neuron_to_logit
from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig, preset
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore
from progsynth.runs.train import resume, train
from progsynth.tasks import make_task

TINY = RunConfig(
    task=make_task("modular", p=11, train_fraction=0.5),
    model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32),
    optim=OptimConfig(lr=3e-3, weight_decay=1.0),
    epochs=30,
    metrics_every=5,
    max_checkpoints=8,
)
SWITCHES = {"unembed_equals": {"model.unembed_equals": True}, "warmup": {"optim.warmup_steps": 10},
            "paper_split": {"task.split": "paper"}}
ALL = {key: value for switch in SWITCHES.values() for key, value in switch.items()}


def final_tensors(run: Path) -> dict[str, torch.Tensor]:
    return RunStore.open(run).load_checkpoint().tensors


def test_nanda_paper_is_nanda_with_the_three_switches() -> None:
    nanda, paper = preset("nanda"), preset("nanda-paper")
    assert (paper.model.unembed_equals, paper.optim.warmup_steps, paper.task.split) == (True, 10, "paper")
    assert paper.model.init == "nanda"
    assert paper == replace(nanda, task=replace(nanda.task, split="paper"),
                            model=replace(nanda.model, unembed_equals=True),
                            optim=replace(nanda.optim, warmup_steps=10))
    assert (nanda.model.unembed_equals, nanda.optim.warmup_steps, nanda.task.split) == (False, 0, "random")
    assert nanda.override(**ALL) == paper


def test_overrides_reach_the_fields_and_validate_them() -> None:
    config = TINY.override(**ALL)
    assert (config.model.unembed_equals, config.optim.warmup_steps, config.task.split) == (True, 10, "paper")
    assert config.override(**{"task.p": 13}).task.split == "paper"  # other task changes keep the split
    cases = [
        ({"model.unembed_equals": "yes"}, r"model\.unembed_equals must be true or false, got 'yes'"),
        ({"model.unembed_equals": 1}, r"model\.unembed_equals must be true or false, got 1"),
        ({"optim.warmup_steps": -1}, r"optim\.warmup_steps \(0: no warm-up\) must be an integer from 0"),
        ({"optim.warmup_steps": 2.5}, r"optim\.warmup_steps .* must be an integer"),
        ({"optim.warmup_steps": True}, r"optim\.warmup_steps .* must be an integer"),
        ({"task.split": "shuffle"}, r"split must be one of 'random', 'paper', got 'shuffle'"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            TINY.override(**change)
    for name in ("gromov", "mlp"):
        with pytest.raises(ConfigError, match=f"model.unembed_equals .* transformer only, not to '{name}'"):
            TINY.override(**{"model.name": name, "model.unembed_equals": True})
    with pytest.raises(ConfigError, match="'split' do not apply to the parity family"):
        preset("parity").override(**{"task.split": "paper"})


def test_config_json_records_the_switches_and_old_files_read_as_off(tmp_path: Path) -> None:
    config = TINY.override(**ALL)
    data = config.to_dict()
    assert data["model"]["unembed_equals"] is True and data["optim"]["warmup_steps"] == 10
    assert data["task"]["split"] == "paper"
    (tmp_path / "new.json").write_text(json.dumps(data))
    assert RunConfig.load(tmp_path / "new.json") == config
    old = TINY.to_dict()  # as written before the switches existed
    del old["model"]["unembed_equals"], old["optim"]["warmup_steps"], old["task"]["split"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert RunConfig.load(tmp_path / "old.json") == TINY
    bad = {**data, "model": {**data["model"], "unembed_equals": "true"}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="unembed_equals must be true or false"):
        RunConfig.load(tmp_path / "bad.json")


def test_with_p_plus_one_outputs_training_sees_all_and_analyses_see_the_residues() -> None:
    """The module outputs p + 1 columns and the loss trains over all of them; ``logits`` (what
    analyses read) has the p residue columns; metrics: loss over p + 1, accuracy over p."""
    experiment = Experiment(TINY.override(**{"model.unembed_equals": True}))
    p = experiment.task.p
    params = experiment.init_params(0)
    with torch.no_grad():
        # Make the '=' logit win everywhere (the stream at '=' starts as W_E[p] + W_pos[2]), so that
        # dropping it matters.
        params["W_U"][:, p] = 100 * (params["W_E"][p] + params["W_pos"][2])
    outputs = experiment.model.get(params, experiment.inputs)
    assert outputs.shape == (p * p, p + 1) and experiment.n_outputs == p + 1
    logits = experiment.logits(params)
    assert torch.equal(logits, outputs[:, :p])
    row = experiment.evaluate(params)
    train = experiment.data.train_idx
    full_loss = torch.nn.functional.cross_entropy(outputs[train].double(), experiment.labels[train].long())
    assert row["train_loss"] == pytest.approx(float(full_loss), rel=1e-5)
    accuracy = float((outputs[train].argmax(1) == experiment.labels[train]).double().mean())
    assert accuracy == 0.0  # over p + 1 outputs the '=' logit wins everywhere
    assert row["train_accuracy"] == float((logits[train].argmax(1) == experiment.labels[train]).double().mean())
    assert row["train_accuracy"] > 0
    assert loss_on(experiment, logits, train) < row["train_loss"]  # the residues only, as the paper's analyses
    assert neuron_to_logit(experiment, params).shape == (32, p)
    off = Experiment(TINY)
    assert off.n_outputs == p and off.logits(off.init_params(0)).shape == (p * p, p)
    # The same seed gives the same weights but W_U's extra column.
    assert all(torch.equal(off.init_params(0)[k], experiment.init_params(0)[k]) for k in params if k != "W_U")


def test_mse_with_p_plus_one_outputs_targets_the_equals_output_with_zero() -> None:
    experiment = Experiment(TINY.override(**{"model.unembed_equals": True, "loss": "mse"}))
    p = experiment.task.p
    assert experiment.targets.shape == (p * p, p + 1) and float(experiment.targets[:, p].abs().sum()) == 0
    params = experiment.init_params(0)
    row = experiment.evaluate(params)
    assert math.isfinite(row["train_loss"]) and math.isfinite(loss_on(experiment, experiment.logits(params)))


def test_the_first_warm_up_step_moves_no_parameter() -> None:
    experiment = Experiment(TINY.override(**{"optim.warmup_steps": 10}))
    state = experiment.learner.init(experiment.init_params(0))
    once, _ = experiment.learner.step(state, experiment.x_train, experiment.y_train)
    assert all(torch.equal(once.params[k], state.params[k]) for k in state.params)
    twice, _ = experiment.learner.step(once, experiment.x_train, experiment.y_train)
    assert any(not torch.equal(twice.params[k], state.params[k]) for k in state.params)
    assert int(twice.opt_state["step"]) == 2


@pytest.mark.parametrize("switch", [*SWITCHES, "all"])
def test_a_tiny_run_with_the_switch_trains_with_finite_metrics(tmp_path: Path, switch: str) -> None:
    config = TINY.override(**(ALL if switch == "all" else SWITCHES[switch]))
    run = train(config, tmp_path / "run").run_dirs[0]
    store = RunStore.open(run)
    assert store.config() == config
    metrics = store.metrics()
    columns = ["train_loss", "test_loss", "train_accuracy", "test_accuracy", "weight_norm"]
    assert list(metrics["step"]) == list(range(0, 31, 5))
    assert all(math.isfinite(v) for v in metrics[columns].to_numpy().ravel())
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]


def test_with_every_switch_on_resume_is_bit_identical_and_vmap_matches_seeds_alone(tmp_path: Path) -> None:
    """The warm-up reads the optimizer's own step count: interrupted inside the warm-up and resumed
    equals uninterrupted; seeds trained together through vmap equal each seed alone."""
    config = TINY.override(**ALL, epochs=16)
    train(config, tmp_path / "full")
    stopped = train(config, tmp_path / "part", should_stop=lambda step: step == 4)
    assert stopped.interrupted and stopped.steps == 4
    resume(tmp_path / "part")
    full, part = final_tensors(tmp_path / "full"), final_tensors(tmp_path / "part")
    assert full.keys() == part.keys() and all(torch.equal(full[k], part[k]) for k in full)
    train(config, tmp_path / "group", seeds=[0, 1])
    alone = final_tensors(tmp_path / "full")
    together = final_tensors(tmp_path / "group" / "seed-0")
    for key in alone:
        if key.startswith("params"):
            torch.testing.assert_close(alone[key], together[key], atol=1e-5, rtol=1e-4)


def test_the_cli_trains_the_nanda_paper_preset(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--preset", "nanda-paper", "--p", "7", "--epochs", "2",
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    config = RunStore.open(out).config()
    assert (config.model.unembed_equals, config.optim.warmup_steps, config.task.split) == (True, 10, "paper")
    assert "nanda-paper" in CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
