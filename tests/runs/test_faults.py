"""Fault tests with real processes (README → Reliability): kill -9 at random moments of ``train``,
``analyze`` and ``llc``, then run again, and the result equals an uninterrupted run's; two writers
started together, and exactly one of them runs.

The kill moments come from a seeded ``random.Random``, so a failure reproduces. Subprocesses and
the in-process references run single-threaded (bit-identity holds for a fixed thread count).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from progsynth.interp.measures import measure_run
from progsynth.runs.store import MEASURES, METRICS, RunStore, read_rows
from progsynth.runs.train import train
from progsynth.slt.llc import SGLDConfig
from progsynth.slt.run_degeneracy import measure_run_degeneracy
from progsynth.slt.run_llc import estimate_run_llc
from tests.runs.test_train import TINY

LONG = TINY.override(epochs=400, max_checkpoints=40, resume_every_s=0.2)
"""About 3.5 s of training in a subprocess: long enough to be killed in the middle."""
LLC_FLAGS = ["--chains", "2", "--draws", "100", "--burnin", "20", "--epsilon", "1e-4", "--batch-size", "32"]
LLC_CONFIG = SGLDConfig(num_chains=2, num_draws=100, num_burnin=20, epsilon=1e-4, batch_size=32)
PROGSYNTH = [sys.executable, "-c", "from progsynth.cli import main; main()"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([*PROGSYNTH, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def finish(*argv: str) -> str:
    done = subprocess.run([*PROGSYNTH, *argv], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done.stdout


def kill_when(process: subprocess.Popen, file: Path, lines: int, timeout: float = 60) -> None:
    """SIGKILL ``process`` as soon as ``file`` holds ``lines`` newlines (or when it has ended)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if file.is_file() and file.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.002)
    process.kill()
    output = process.communicate()[0]
    assert "Traceback" not in output, output


def single_threaded(fn, *args, **kwargs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def rows_by_step(file: Path, analysis: str | None = None) -> dict[int, dict]:
    """measures.jsonl rows by step, each step exactly once, timing fields dropped."""
    rows = [r for r in read_rows(file) if analysis is None or r.get("analysis") == analysis]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"a step was measured twice: {sorted(steps)}"
    return {r["step"]: {k: v for k, v in r.items() if k not in ("seconds", "recorded")} for r in rows}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("faults") / "config.json"
    file.write_text(json.dumps(LONG.to_dict()))
    return file


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LONG trained without interruption, in this process."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    single_threaded(train, LONG, out)
    return out


def test_train_killed_at_random_moments_resumes_to_the_uninterrupted_result(
        tmp_path: Path, config_file: Path, reference: Path) -> None:
    rng = random.Random(11)
    run = tmp_path / "run"
    creating = start("train", "--config", str(config_file), "--out", str(run))
    time.sleep(rng.uniform(0.5, 2.5))  # often before the run directory exists, sometimes inside its creation
    creating.kill()
    creating.communicate()
    if not run.exists():  # killed before the directory appeared (it appears whole or not at all): again
        first = start("train", "--config", str(config_file), "--out", str(run))
        kill_when(first, run / METRICS, rng.randint(5, 40))
    assert not list(tmp_path.glob(".run.staging-*")), "a staging directory of a killed process stayed behind"
    for _ in range(2):
        kill_when(start("train", "--resume", str(run)), run / METRICS, rng.randint(45, 75))
        assert RunStore.open(run).load_checkpoint().step > 0  # resume points every 0.2 s
    finish("train", "--resume", str(run))
    ours, theirs = RunStore.open(run), RunStore.open(reference)
    assert ours.checkpoint_steps() == theirs.checkpoint_steps()
    mine, want = ours.load_checkpoint().tensors, theirs.load_checkpoint().tensors
    assert mine.keys() == want.keys()
    for key in want:
        assert torch.equal(mine[key], want[key]), key
    assert read_rows(run / METRICS) == read_rows(reference / METRICS)


def test_analyze_killed_then_run_again_measures_every_step_once(tmp_path: Path, reference: Path) -> None:
    rng = random.Random(12)
    whole, run = tmp_path / "whole", tmp_path / "run"
    for copy in (whole, run):
        shutil.copytree(reference, copy)
    single_threaded(measure_run, whole)
    single_threaded(measure_run_degeneracy, whole)
    for _ in range(2):  # the second kill may land in the degeneracy measures (written after the interp ones)
        kill_when(start("analyze", str(run)), run / MEASURES, rng.randint(1, 70))
    finish("analyze", str(run), "--json")
    for analysis in ("interp", "degeneracy"):
        assert rows_by_step(run / MEASURES, analysis) == rows_by_step(whole / MEASURES, analysis)


def test_llc_killed_then_run_again_gives_the_same_estimates(tmp_path: Path, reference: Path) -> None:
    steps = RunStore.open(reference).checkpoint_steps()[::15]
    whole, run = tmp_path / "whole", tmp_path / "run"
    for copy in (whole, run):
        shutil.copytree(reference, copy)
    single_threaded(estimate_run_llc, whole, steps, LLC_CONFIG)
    chosen = ["--checkpoints", ",".join(map(str, steps))]
    kill_when(start("llc", str(run), *chosen, *LLC_FLAGS), run / MEASURES, random.Random(13).randint(1, len(steps) - 1))
    finish("llc", str(run), *chosen, *LLC_FLAGS)
    ours, theirs = rows_by_step(run / MEASURES, "llc"), rows_by_step(whole / MEASURES, "llc")
    assert sorted(ours) == steps and ours == theirs


def test_two_trainers_started_together_exactly_one_runs(tmp_path: Path, config_file: Path) -> None:
    run = tmp_path / "run"
    single_threaded(train, LONG, run, should_stop=lambda step: step == 5)
    both = [start("train", "--resume", str(run)) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in both]
    codes = sorted(p.returncode for p in both)
    assert codes == [0, 1], outputs
    refused = outputs[[p.returncode for p in both].index(1)]
    assert "is being written by process" in refused and "Traceback" not in refused
    steps = [r["step"] for r in read_rows(run / METRICS)]
    assert steps == sorted(set(steps)) and steps[-1] == LONG.epochs


def test_two_analyses_at_once_never_measure_a_step_twice(tmp_path: Path, reference: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    both = [start("analyze", str(run)) for _ in range(2)]
    for process in both:
        output = process.communicate(timeout=120)[0]
        assert process.returncode == 0 or (process.returncode == 1 and "is being written by process" in output), output
    for analysis in ("interp", "degeneracy"):
        assert sorted(rows_by_step(run / MEASURES, analysis)) == RunStore.open(run).checkpoint_steps()
