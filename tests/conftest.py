"""Fixtures shared across test directories: one tiny grokking run, trained once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig
from progsynth.tasks.modular import ModularTask
from progsynth.runs.train import train

GROKS = RunConfig(
    task=ModularTask(p=23, train_fraction=0.5),
    model=ModelConfig(name="gromov", d_mlp=96),
    optim=OptimConfig(lr=1e-2, weight_decay=5.0),
    loss="mse",
    epochs=150,
    metrics_every=2,
    max_checkpoints=12,
)
"""Gromov's quadratic MLP on (a + b) mod 23: memorises by step ~20 and generalises by ~120, in ~2 s."""


@pytest.fixture(scope="session")
def grokked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run that memorises then generalises, without measures (tests copy it to add them)."""
    out = tmp_path_factory.mktemp("runs") / "groks"
    train(GROKS, out)
    return out


@pytest.fixture
def run(grokked_run: Path, tmp_path: Path) -> Path:
    """A private copy of ``grokked_run`` that a test may write measures into."""
    out = tmp_path / "groks"
    shutil.copytree(grokked_run, out)
    return out
