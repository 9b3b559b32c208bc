"""Training runs: resume equality, multi-seed vmap, atomic run directories, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from progsynth.errors import ConfigError, RunError
from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig
from progsynth.tasks.modular import ModularTask
from progsynth.runs.store import RunStore
from progsynth.runs.train import parse_seeds, resume, train

TINY = RunConfig(
    task=ModularTask(p=11, train_fraction=0.5),
    model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32),
    optim=OptimConfig(lr=3e-3, weight_decay=1.0),
    epochs=30,
    metrics_every=5,
    max_checkpoints=8,
)


def final_params(run: Path) -> dict[str, torch.Tensor]:
    return RunStore.open(run).load_checkpoint().tensors


def test_run_directory_layout(tmp_path: Path) -> None:
    result = train(TINY, tmp_path / "run")
    store = RunStore.open(result.run_dirs[0])
    assert store.config() == TINY
    steps = store.checkpoint_steps()
    assert steps[0] == 0 and steps[-1] == 30 and len(steps) <= 8
    metrics = store.metrics()
    assert list(metrics["step"]) == list(range(0, 31, 5))
    assert {"train_loss", "test_loss", "train_accuracy", "test_accuracy", "weight_norm"} <= set(metrics.columns)
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    assert not list((tmp_path).glob(".*staging*"))


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    train(TINY, tmp_path / "full")
    stopped = train(TINY, tmp_path / "part", should_stop=lambda step: step == 13)
    assert stopped.interrupted and stopped.steps == 13
    resumed = resume(tmp_path / "part")
    assert not resumed.interrupted and resumed.steps == 30
    full, part = final_params(tmp_path / "full"), final_params(tmp_path / "part")
    assert full.keys() == part.keys()
    for key in full:
        assert torch.equal(full[key], part[key]), key
    a, b = RunStore.open(tmp_path / "full").metrics(), RunStore.open(tmp_path / "part").metrics()
    assert a.equals(b)


def test_resuming_a_finished_run_changes_nothing(tmp_path: Path) -> None:
    done = train(TINY, tmp_path / "run")
    before = RunStore.open(tmp_path / "run").metrics()
    again = resume(tmp_path / "run")
    assert again.steps == 30 and not again.interrupted
    assert again.final[0]["test_loss"] == pytest.approx(done.final[0]["test_loss"])
    assert RunStore.open(tmp_path / "run").metrics().equals(before)  # no step logged twice


def test_minibatch_resume_is_bit_identical(tmp_path: Path) -> None:
    config = TINY.override(batch_size=16, epochs=4)
    train(config, tmp_path / "full")
    train(config, tmp_path / "part", should_stop=lambda step: step == 9)  # mid-epoch
    resume(tmp_path / "part")
    full, part = final_params(tmp_path / "full"), final_params(tmp_path / "part")
    assert all(torch.equal(full[k], part[k]) for k in full)


def test_vmap_seeds_match_seeds_run_alone(tmp_path: Path) -> None:
    """Eight... here three seeds trained together through vmap equal each seed trained alone,
    to float32 round-off (vmap batches the matmuls, so summation order may differ: atol 1e-5)."""
    together = train(TINY, tmp_path / "group", seeds=[0, 1, 2])
    assert [d.name for d in together.run_dirs] == ["seed-0", "seed-1", "seed-2"]
    for seed in (0, 2):
        alone = train(TINY.override(seed=seed), tmp_path / f"alone{seed}")
        a, b = final_params(alone.run_dirs[0]), final_params(tmp_path / "group" / f"seed-{seed}")
        for key in a:
            if key.startswith("params"):
                torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    p0, p1 = final_params(tmp_path / "group" / "seed-0"), final_params(tmp_path / "group" / "seed-1")
    assert not torch.equal(p0["params['W_E']"], p1["params['W_E']"])


def test_bad_input_leaves_no_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prime"):
        train(TINY.override(**{"task.op": "div", "task.p": 12}), tmp_path / "bad")
    with pytest.raises(ConfigError, match="train_fraction"):
        train(TINY.override(**{"task.train_fraction": 0.0}), tmp_path / "bad")
    with pytest.raises(ConfigError, match="unknown operation|expected one of"):
        train(TINY.override(**{"task.op": "pow"}), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    train(TINY.override(epochs=2), tmp_path / "run")
    with pytest.raises(RunError, match="already exists"):
        train(TINY.override(epochs=2), tmp_path / "run")


def test_missing_and_corrupted_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="does not exist"):
        resume(tmp_path / "nowhere")
    run = train(TINY.override(epochs=3), tmp_path / "run").run_dirs[0]
    store = RunStore.open(run)
    with pytest.raises(RunError, match="no checkpoint at step 7"):
        store.load_checkpoint(7)
    newest = run / "checkpoints" / "step_00000003.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.raises(RunError, match="corrupted"):
        resume(run)


def test_config_file_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    file = tmp_path / "c.json"
    file.write_text(json.dumps(TINY.to_dict()))
    assert RunConfig.load(file) == TINY
    file.write_text(json.dumps({**TINY.to_dict(), "epoks": 3}))
    with pytest.raises(ConfigError, match="epoks"):
        RunConfig.load(file)


def test_parse_seeds() -> None:
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("1,4,9") == [1, 4, 9]
    with pytest.raises(ConfigError):
        parse_seeds("a-b")
