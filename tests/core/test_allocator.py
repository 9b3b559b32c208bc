"""The malloc tuning that keeps functional optimizer steps from page-faulting (core.allocator):
opt-in, never a side effect of importing progsynth."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from progsynth.core.allocator import keep_freed_memory

_ON_GLIBC = platform.libc_ver()[0] == "glibc"


def test_applies_on_glibc_and_respects_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    if _ON_GLIBC:
        assert keep_freed_memory() is True
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False  # a user's own malloc settings win


@pytest.mark.skipif(not _ON_GLIBC, reason="mallopt exists on glibc only; elsewhere the tuning is a no-op")
def test_importing_changes_nothing_and_the_training_loop_opts_in(tmp_path) -> None:
    script = f"""
import progsynth.core, progsynth.core.optim, progsynth.models, progsynth.slt.llc
from progsynth.core import allocator
from progsynth.runs.config import RunConfig
from progsynth.runs.train import train
print(allocator.applied())
train(RunConfig().override(epochs=1), r"{tmp_path / 'run'}")
print(allocator.applied())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]  # a fresh process: not on import, on by training
