"""Every task family trains through the one loop into a run directory, from the library and from
``progsynth train``; analyses that do not apply say so in one line; old run directories still open."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.errors import NotApplicableError
from progsynth.interp.extract import extract_checkpoint
from progsynth.report.html import write_report
from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig, preset
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore
from progsynth.runs.train import resume, train
from progsynth.slt.llc import SGLDConfig
from progsynth.slt.run_llc import estimate_run_llc
from progsynth.tasks import make_task

runner = CliRunner()

SMALL = dict(model=ModelConfig(name="mlp", d_model=4, d_mlp=64), optim=OptimConfig(lr=3e-3, weight_decay=0.1),
             epochs=300, metrics_every=10, max_checkpoints=6)

TASKS = {
    "parity": make_task("parity", n_bits=6, k=2, train_fraction=0.5),
    "majority": make_task("boolean", n_bits=7, function="majority"),
    "circuit": make_task("boolean", n_bits=4, function="circuit:x0 & x1 ^ x3"),
    "expression": make_task("modular", p=7, op="a*b + a + b", train_fraction=0.6),
}


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    runs = {}
    for name, task in TASKS.items():
        train(RunConfig(task=task, **SMALL), root / name)
        runs[name] = root / name
    return runs


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_family_trains_into_a_run_directory_that_reopens(family_runs, name):
    store = RunStore.open(family_runs[name])
    config = store.config()
    assert config.task == TASKS[name]
    assert json.loads((family_runs[name] / "config.json").read_text())["task"]["family"] == TASKS[name].family
    metrics = store.metrics()
    assert metrics["train_accuracy"].iloc[-1] == 1.0  # each small task is fitted
    experiment = Experiment(config)
    assert experiment.data.n_classes == TASKS[name].n_classes
    assert store.checkpoint_steps()[-1] == 300


@pytest.mark.parametrize("name", ["parity", "majority"])
def test_fourier_analysis_says_it_does_not_apply(family_runs, name):
    with pytest.raises(NotApplicableError, match=f"applies to tasks on Z_p, not to this run's {TASKS[name].family}"):
        extract_checkpoint(family_runs[name])
    result = runner.invoke(app, ["analyze", str(family_runs[name])])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: reading a Fourier program applies to tasks on Z_p")


def test_report_and_llc_work_on_a_parity_run(family_runs, tmp_path):
    run = tmp_path / "parity"
    shutil.copytree(family_runs["parity"], run)
    written = write_report(run)
    assert written.figures[0] == "training"
    missing = {m.what: m for m in written.summary.missing}
    not_applicable = next(m for what, m in missing.items() if what.startswith("extracted program"))
    assert not_applicable.reason.startswith("not applicable") and not_applicable.command is None
    assert "progress measures" not in missing  # nothing to suggest: it does not apply
    result = estimate_run_llc(run, [300], SGLDConfig(num_chains=2, num_draws=30, num_burnin=10, epsilon=1e-4))
    assert result.computed == (300,) and result.table["llc"].notna().all()


def test_an_old_run_directory_opens_and_resumes(tmp_path):
    config = RunConfig(task=make_task("modular", p=5, train_fraction=0.6), **{**SMALL, "epochs": 20})
    run = tmp_path / "old"
    train(config.override(epochs=10), run)
    data = json.loads((run / "config.json").read_text())
    del data["task"]["family"]  # what runs written before task families hold
    data["epochs"] = 20
    (run / "config.json").write_text(json.dumps(data))
    assert RunStore.open(run).config().task == config.task
    assert resume(run).steps == 20


def test_train_command_takes_every_family(tmp_path):
    result = runner.invoke(app, ["train", "--task", "parity", "--n-bits", "6", "--k", "2", "--n-samples", "300",
                                 "--out", str(tmp_path / "p"), "--json"])
    assert result.exit_code == 0, result.output
    config = RunStore.open(tmp_path / "p").config()
    assert config.task == make_task("parity", n_bits=6, k=2, n_samples=300, train_fraction=0.8)
    assert config.model == preset("parity").model  # --task parity starts from the parity preset
    result = runner.invoke(app, ["train", "--task", "boolean", "--n-bits", "5", "--function", "circuit:x0|x4",
                                 "--epochs", "2", "--out", str(tmp_path / "b"), "--json"])
    assert result.exit_code == 0, result.output
    assert RunStore.open(tmp_path / "b").config().task.function == "circuit:x0 | x4"
    result = runner.invoke(app, ["train", "--op", "(a+b)^2 - b", "--p", "7", "--epochs", "2", "--out",
                                 str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    assert RunStore.open(tmp_path / "m").config().task.op == "(a + b)^2 - b"


@pytest.mark.parametrize("argv, message", [
    (["--task", "graph"], "unknown task family 'graph'; expected one of modular, parity, boolean"),
    (["--task", "parity", "--p", "7"], "'p' do not apply to the parity family; its fields are n_bits"),
    (["--op", "a ** b"], "unknown operation 'a \\*\\* b'; expected one of add, sub"),
    (["--task", "boolean", "--model", "transformer"], "choose the model 'mlp' or 'gromov'"),
])
def test_train_command_bad_task_flags_are_one_line(tmp_path, argv, message):
    result = runner.invoke(app, ["train", *argv, "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "x").exists()
