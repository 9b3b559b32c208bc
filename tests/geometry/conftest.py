"""Fixtures for the geometry tests: two seeds of the tiny grokking run (tests/conftest.py) trained
together, and the two steps of it that paths start from."""

from __future__ import annotations

from pathlib import Path

import pytest

from progsynth.runs.train import train
from tests.conftest import GROKS

GROKS_PATH_STEPS = (12, 150)
"""Two checkpoints of the tiny run that also have metrics rows (metrics every 2 steps): one while it
memorises (train accuracy 0.83, test accuracy below chance) and the generalised end."""


@pytest.fixture(scope="session")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny grokking run's config trained for seeds 0 and 1 (``seed-0``, ``seed-1``)."""
    out = tmp_path_factory.mktemp("seeds") / "groks"
    train(GROKS, out, seeds=[0, 1])
    return out
