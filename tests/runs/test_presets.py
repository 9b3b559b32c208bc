"""The presets learn what they promise: memorise first, then generalise."""

from __future__ import annotations

from pathlib import Path

import pytest

from progsynth.errors import ConfigError
from progsynth.runs.config import preset
from progsynth.runs.store import RunStore
from progsynth.runs.train import train


def first_step(metrics, column: str, threshold: float) -> int | None:
    hits = metrics[metrics[column] >= threshold]["step"]
    return int(hits.iloc[0]) if len(hits) else None


def test_quick_preset_memorises_then_generalises(tmp_path: Path) -> None:
    """The quick preset's transformer on a smaller grid (p = 31, 70 % of pairs) that groks in
    seconds: train accuracy reaches 0.99 well before test accuracy does, and test accuracy ends
    ≥ 0.99."""
    config = preset("quick").override(**{"task.p": 31, "task.train_fraction": 0.7, "epochs": 950,
                                         "model.d_model": 32, "model.d_head": 8, "model.d_mlp": 128,
                                         "metrics_every": 25})
    run = train(config, tmp_path / "run").run_dirs[0]
    metrics = RunStore.open(run).metrics()
    memorised, generalised = first_step(metrics, "train_accuracy", 0.99), first_step(metrics, "test_accuracy", 0.99)
    assert memorised is not None and generalised is not None
    assert generalised > 2 * memorised
    assert metrics["test_accuracy"].iloc[-1] >= 0.99


def test_gromov_preset_groks_fast(tmp_path: Path) -> None:
    """Gromov's quadratic MLP (p = 97, 50 % train, wd 5): test accuracy ≥ 0.99 within 60 epochs
    (REFERENCE: epoch 40 on this machine)."""
    run = train(preset("gromov").override(epochs=60, metrics_every=5), tmp_path / "run").run_dirs[0]
    metrics = RunStore.open(run).metrics()
    assert metrics["train_accuracy"].iloc[-1] == 1.0
    assert first_step(metrics, "test_accuracy", 0.99) is not None


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="quick"):
        preset("fast")
