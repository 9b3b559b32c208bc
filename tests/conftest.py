"""Fixtures shared across test directories: one tiny grokking run trained once per session, a private
copy of it per test, two seeds of it, and a tracker of the checkpoints loaded."""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import pytest

from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig
from progsynth.tasks.modular import ModularTask
from progsynth.runs.store import RunStore
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


@pytest.fixture(scope="session")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny grokking run's config trained for seeds 0 and 1 together (``seed-0``, ``seed-1``)."""
    out = tmp_path_factory.mktemp("seeds") / "groks"
    train(GROKS, out, seeds=[0, 1])
    return out


class LoadTracker:
    """Wraps RunStore.load_checkpoint: counts loads and how many loaded checkpoints' tensors are alive."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.steps: list[int] = []
        self.max_alive = 0
        self._loaded: list[list[weakref.ref]] = []
        original = RunStore.load_checkpoint

        def load(store: RunStore, step: int | None = None):
            checkpoint = original(store, step)
            self._loaded.append([weakref.ref(t) for t in checkpoint.tensors.values()])
            self.steps.append(checkpoint.step)
            self.max_alive = max(self.max_alive, self.alive())
            return checkpoint

        monkeypatch.setattr(RunStore, "load_checkpoint", load)

    def alive(self) -> int:
        return sum(any(ref() is not None for ref in refs) for refs in self._loaded)
