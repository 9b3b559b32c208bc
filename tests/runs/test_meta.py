"""Meta-training a learned optimizer, its artifact (round trip, every bad file one error), and
``progsynth meta-train`` / ``progsynth train --optim``."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.core.optim import momentum
from progsynth.errors import RunError
from progsynth.runs.meta import (
    FORMAT_VERSION,
    INFO_FILE,
    WEIGHTS_FILE,
    MetaConfig,
    load_learned,
    meta_loss,
    meta_train,
    sample_problem,
    save_learned,
    steps_to_target,
    unroll,
)

runner = CliRunner()
TINY = MetaConfig(family="regression", kind="momentum", steps=8, meta_iterations=12, meta_batch=2, meta_lr=0.1)


@pytest.fixture(scope="module")
def trained() -> object:
    return meta_train(TINY)


@pytest.fixture
def artifact(trained, tmp_path: Path) -> Path:
    out = tmp_path / "learned"
    save_learned(out, trained)
    return out


def test_meta_training_lowers_the_meta_loss_on_fresh_problems(trained) -> None:
    again = meta_train(TINY)  # the same seed gives the same φ
    for name, value in trained.optimizer.phi.items():
        torch.testing.assert_close(again.optimizer.phi[name], value, rtol=0, atol=0)
    gen = torch.Generator().manual_seed(99)
    problems = [sample_problem("regression", gen) for _ in range(6)]
    start = meta_train(replace(TINY, meta_iterations=1))  # φ after one outer step
    before = meta_loss(start.optimizer.phi, "momentum", {}, problems, TINY.steps)
    after = meta_loss(trained.optimizer.phi, "momentum", {}, problems, TINY.steps)
    assert float(after) < float(before) - 0.3
    assert trained.skipped == 0 and len(trained.meta_losses) == TINY.meta_iterations


def test_unroll_losses_are_those_of_the_same_rule_from_core_optim() -> None:
    """The momentum kind at SGD(0.05, 0.5) trains a problem exactly as core.optim.momentum does."""
    from progsynth.core.learned import init_phi, learned_optimizer

    problem = sample_problem("regression", torch.Generator().manual_seed(3), torch.float64)
    learned = learned_optimizer("momentum", init_phi("momentum", 0.05, 0.5, n_tensors=2, dtype=torch.float64))
    torch.testing.assert_close(unroll(learned, problem, 30), unroll(momentum(0.05, 0.5), problem, 30))
    assert steps_to_target(learned, problem, 30, 0.5) == steps_to_target(momentum(0.05, 0.5), problem, 30, 0.5)


def test_the_meta_gradient_through_a_sampled_problem_matches_finite_differences() -> None:
    from progsynth.core.learned import init_phi

    problems = [sample_problem("regression", torch.Generator().manual_seed(5), torch.float64)]
    phi = init_phi("momentum", 0.02, 0.5, n_tensors=2, dtype=torch.float64)
    grad = torch.func.grad(meta_loss)(phi, "momentum", {}, problems, 5, "mean")
    h = 1e-6
    for name in phi:
        for i in range(2):
            step = torch.zeros(2, dtype=torch.float64)
            step[i] = h
            up = meta_loss({**phi, name: phi[name] + step}, "momentum", {}, problems, 5, "mean")
            down = meta_loss({**phi, name: phi[name] - step}, "momentum", {}, problems, 5, "mean")
            assert float(grad[name][i]) == pytest.approx(float(up - down) / (2 * h), rel=1e-5)


def test_save_and_load_round_trip(trained, artifact: Path) -> None:
    loaded = load_learned(artifact / WEIGHTS_FILE)  # the folder or either file
    assert loaded.path == artifact and loaded.sha256 == load_learned(artifact).sha256
    for name, value in trained.optimizer.phi.items():
        torch.testing.assert_close(loaded.optimizer.phi[name], value, rtol=0, atol=0)
    info = loaded.info
    assert info["format_version"] == FORMAT_VERSION and info["kind"] == "momentum"
    assert info["meta"]["seed"] == 0 and info["family"]["name"] == "regression" and info["meta_train_seconds"] > 0
    problem = sample_problem("regression", torch.Generator().manual_seed(7))
    torch.testing.assert_close(unroll(loaded.optimizer, problem, 10), unroll(trained.optimizer, problem, 10))
    with pytest.raises(RunError, match="already holds a learned optimizer"):
        save_learned(artifact, trained)


def _rewrite_info(folder: Path, **changes) -> None:
    info = json.loads((folder / INFO_FILE).read_text())
    (folder / INFO_FILE).write_text(json.dumps({**info, **changes}))


def _rewrite_weights(folder: Path, change) -> None:
    tensors = load_file(folder / WEIGHTS_FILE)
    change(tensors)
    save_file(tensors, folder / WEIGHTS_FILE)


@pytest.mark.parametrize("spoil,needle", [
    (lambda f: _rewrite_info(f, format_version=0), "has format version 0; this progsynth reads version 1"),
    (lambda f: _rewrite_info(f, format_version="2"), "has format version '2'; this progsynth reads version 1"),
    (lambda f: (f / INFO_FILE).write_text("{not json"), "is not valid JSON"),
    (lambda f: (f / INFO_FILE).unlink(), "has no learned_optimizer.json"),
    (lambda f: (f / WEIGHTS_FILE).write_bytes(b"\x00garbage"), "is corrupt"),
    (lambda f: _rewrite_weights(f, lambda t: t.update({"phi.log_lr": torch.zeros(3)})),
     r"φ\['log_lr'\] must be a floating-point tensor of shape \(2,\)"),
    (lambda f: _rewrite_weights(f, lambda t: t.update({"phi.log_lr": torch.tensor([0.0, math.nan])})),
     r"φ\['log_lr'\] holds NaN or inf"),
    (lambda f: _rewrite_weights(f, lambda t: t.pop("phi.logit_momentum")), "φ has no entry 'logit_momentum'"),
    (lambda f: _rewrite_info(f, kind="adam"), "kind must be one of momentum, mlp"),
])
def test_every_bad_file_is_one_error_naming_it(artifact: Path, spoil, needle: str) -> None:
    spoil(artifact)
    with pytest.raises(RunError, match=needle) as error:
        load_learned(artifact)
    assert str(artifact) in str(error.value) and "\n" not in str(error.value)


def test_cli_meta_train_writes_the_artifact_and_refuses_bad_files(tmp_path: Path) -> None:
    out = tmp_path / "lo"
    result = runner.invoke(app, ["meta-train", str(out), "--family", "modular", "--steps", "4",
                                 "--meta-iterations", "3", "--meta-batch", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["sha256"] == load_learned(out).sha256 and summary["kind"] == "momentum"
    assert summary["meta_iterations_done"] == 3 and set(summary["rule"]) == {"lr", "momentum"}
    again = runner.invoke(app, ["meta-train", str(out), "--meta-iterations", "1"])
    assert again.exit_code == 1 and "already holds a learned optimizer" in again.output
    assert runner.invoke(app, ["meta-train", str(tmp_path / "x"), "--family", "nope"]).exit_code == 1
    assert runner.invoke(app, ["meta-train"]).exit_code == 2  # usage: no OUT

    run = tmp_path / "run"
    argv = ["train", "--task", "modular", "--p", "7", "--model", "gromov", "--epochs", "6", "--out", str(run)]
    trained = runner.invoke(app, [*argv, "--optim", str(out), "--json"])
    assert trained.exit_code == 0, trained.output
    contract = json.loads(trained.output.strip().splitlines()[-1])
    assert contract["steps"] == 6 and contract["stopped"] == ["budget"] and contract["run_dirs"] == [str(run)]
    optim = json.loads((run / "config.json").read_text())["optim"]
    assert optim["learned"] == str(out.resolve()) and optim["learned_sha256"] == summary["sha256"]

    _rewrite_info(out, meta_train_seconds=1.0)  # any change to the files: resume refuses them
    resumed = runner.invoke(app, ["train", "--resume", str(run)])
    assert resumed.exit_code == 1 and "changed since this run started" in resumed.output
    assert len(resumed.output.strip().splitlines()) == 1

    _rewrite_info(out, format_version=7)
    bad = runner.invoke(app, [*argv[:-1], str(tmp_path / "run2"), "--optim", str(out)])
    assert bad.exit_code == 1 and "has format version 7; this progsynth reads version 1" in bad.output
    assert str(out) in bad.output and not (tmp_path / "run2").exists()


def test_train_with_a_learned_optimizer_for_several_seeds_through_vmap(artifact: Path, tmp_path: Path) -> None:
    """The mlp kind fits any model; two seeds train together under vmap (check_finite off there)."""
    from progsynth.core.learned import init_phi, learned_optimizer
    from progsynth.runs.config import ModelConfig, RunConfig
    from progsynth.runs.meta import MetaResult, use_learned
    from progsynth.runs.train import train
    from progsynth.tasks import make_task

    mlp_kind = MetaResult(MetaConfig(kind="mlp"), learned_optimizer("mlp", init_phi("mlp", 0.01)), [], [0.0], 0, 0.1)
    save_learned(tmp_path / "mlp", mlp_kind)
    config = use_learned(RunConfig(task=make_task("modular", p=7, train_fraction=0.5),
                                   model=ModelConfig(name="mlp", d_model=8, d_mlp=16), epochs=30, metrics_every=10),
                         tmp_path / "mlp")
    result = train(config, tmp_path / "runs", seeds=[0, 1])
    assert result.steps == 30 and all(row["train_loss"] < 1.9 for row in result.final)  # log 7 = 1.95 at the start

    # Analyses never step the optimizer: the run opens without the learned optimizer's folder; training on does not.
    import shutil

    from progsynth.runs.experiment import Experiment
    from progsynth.runs.store import RunStore
    from progsynth.runs.train import resume

    shutil.rmtree(tmp_path / "mlp")
    store = RunStore.open(result.run_dirs[0])
    experiment = Experiment(store.config())
    row = experiment.evaluate(store.load_checkpoint().params(experiment.init_params(0)))
    assert row["train_loss"] == pytest.approx(result.final[0]["train_loss"], rel=1e-6)
    store.record_stop("interrupted", 30, 30.0)  # as if stopped early, so that resume trains on
    with pytest.raises(RunError, match="learned optimizer .*mlp' does not exist"):
        resume(result.run_dirs[0])
