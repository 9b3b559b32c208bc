"""Fixtures for the interp tests: Gromov's analytic network, and tiny trained runs (each a second or
two, trained once per session and shared).

``TINY`` is Gromov's quadratic MLP on (a + b) mod 31 with 40 hidden units: it memorises, then
generalises to every held-out pair within 300 epochs, using most but not all of the 15
frequencies, so the ablations that keep only the key frequencies remove something. The variants
change one thing each: the task, or the data and weight decay (memorising only).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import pytest
import torch

from progsynth.interp.analytic import gromov_solution, gromov_width
from progsynth.interp.extract import Extraction, extract_checkpoint
from progsynth.interp.relabel import Relabelling, candidate_relabellings
from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig
from progsynth.tasks.modular import ModularTask
from progsynth.runs.experiment import Experiment
from progsynth.runs.train import train

TINY = RunConfig(
    task=ModularTask(p=31, train_fraction=0.5),
    model=ModelConfig(name="gromov", d_mlp=40),
    optim=OptimConfig(lr=1e-2, weight_decay=5.0),
    loss="mse",
    epochs=300,
    metrics_every=10,
    max_checkpoints=6,
)

VARIANTS = {
    "addition": {},
    # 30 % of the pairs and no weight decay: train accuracy 1, test accuracy below chance.
    "memorising": {"task.p": 23, "model.d_mlp": 96, "task.train_fraction": 0.3, "optim.weight_decay": 0.0,
                   "epochs": 60},
    "mul": {"task.op": "mul", "task.p": 23, "model.d_mlp": 96, "epochs": 150},
    # a² + b² generalises (about 95 % of held-out pairs) but has no cyclic relabelling.
    "squares": {"task.op": "x2+y2", "task.p": 23, "model.d_mlp": 96, "epochs": 150},
    # Cross-entropy at a lower rate: memorised, a Fourier component forming, few held-out pairs right yet.
    "forming": {"task.p": 23, "model.d_mlp": 96, "loss": "cross_entropy", "optim.lr": 3e-3,
                "optim.weight_decay": 1.0},
    # Every pair in training: nothing is held out.
    "all pairs": {"task.p": 11, "task.train_fraction": 1.0, "epochs": 30},
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``trained(name)``: the run directory of variant ``name`` of ``TINY`` (trained on first use)."""
    root = tmp_path_factory.mktemp("interp-runs")

    @lru_cache(maxsize=None)
    def run(name: str) -> Path:
        out = root / name
        train(TINY.override(**VARIANTS[name]), out)
        return out

    return run


@pytest.fixture(scope="session")
def extraction(trained: Callable[[str], Path]) -> Callable[[str], Extraction]:
    """``extraction(name)``: the extraction at the final checkpoint of ``trained(name)`` (cached)."""
    return lru_cache(maxsize=None)(lambda name: extract_checkpoint(trained(name)))


def analytic_network(op, relabelling: Relabelling | tuple[int, str], frequencies: Sequence[int],
                     train_fraction: float = 0.5, amplitudes: Sequence[float] | None = None,
                     default_class: int | None = None) -> tuple[Experiment, dict[str, torch.Tensor]]:
    """Gromov's analytic network for ``frequencies`` in ``relabelling`` (a Relabelling, or (p, name) of a
    candidate), with the Experiment of task ``op`` on its p (float64, as wide as the construction needs)."""
    if isinstance(relabelling, tuple):
        p, name = relabelling
        relabelling = next(r for r in candidate_relabellings(p) if r.name == name)
    config = RunConfig(task=ModularTask(op=op, p=relabelling.p, train_fraction=train_fraction),
                       model=ModelConfig(name="gromov", d_mlp=gromov_width(relabelling, frequencies)),
                       loss="mse", dtype="float64")
    return Experiment(config), gromov_solution(relabelling, frequencies, amplitudes, default_class)


@pytest.fixture(scope="session")
def analytic() -> Callable[..., tuple[Experiment, dict[str, torch.Tensor]]]:
    """``analytic(op, relabelling, frequencies, ...)``: see ``analytic_network``."""
    return analytic_network
