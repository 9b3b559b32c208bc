"""Naming and opening the checkpoints the geometry analyses compare: ``RUN@STEP``.

A path or a contrast reads two checkpoints, of one run (two steps) or of two runs (two seeds).
They must be of the same architecture and task, so that one ``Experiment`` (data, model, loss)
serves both and their parameters live in one space; anything else is refused with one line that
describes both. A checkpoint is opened as the parameters its network *uses*: the optimizer lens's
get (Nesterov's look-ahead; the stored parameters for every other optimizer), exactly what the
training metrics were computed from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from progsynth.core.learner import TrainState
from progsynth.errors import ConfigError, RunError
from progsynth.runs.config import RunConfig
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore, _summarise
from progsynth.tasks import task_to_dict

__all__ = ["CheckpointRef", "parse_checkpoint", "Opened", "open_checkpoint", "same_setup"]


@dataclass(frozen=True)
class CheckpointRef:
    """A scheduled checkpoint: run directory and step."""

    run: Path
    step: int

    def __str__(self) -> str:
        return f"{self.run}@{self.step}"


def parse_checkpoint(text: str) -> CheckpointRef:
    """``RUN@STEP`` (STEP an integer, or ``last`` for the newest scheduled checkpoint) as a
    reference to a checkpoint that exists; RunError listing the steps on disk otherwise."""
    if not isinstance(text, str) or "@" not in text:
        raise ConfigError(f"a checkpoint is written RUN@STEP (e.g. runs/quick@1300 or runs/quick@last), got {text!r}")
    run, _, step_text = text.rpartition("@")
    if not run:
        raise ConfigError(f"a checkpoint is written RUN@STEP with a run directory before the @, got {text!r}")
    steps = RunStore.open(run).checkpoint_steps()
    if not steps:
        raise RunError(f"run {run!r} has no scheduled checkpoints")
    if step_text.strip().lower() == "last":
        return CheckpointRef(Path(run), steps[-1])
    try:
        step = int(step_text)
    except ValueError:
        raise ConfigError(f"the step after @ must be an integer or 'last', got {step_text!r} in {text!r}") from None
    if step not in steps:
        raise RunError(f"run {run!r} has no checkpoint at step {step}; available: {_summarise(steps)}")
    return CheckpointRef(Path(run), step)


_ARCHITECTURE = {"transformer": ("d_model", "n_heads", "d_head", "d_mlp"), "gromov": ("d_mlp",),
                 "mlp": ("d_model", "d_mlp", "activation")}
"""The ``ModelConfig`` fields that shape each model (the others it ignores; its init does not matter)."""


def _setup(config: RunConfig) -> dict:
    """What must agree for two checkpoints to share one parameter space and one data set."""
    m = config.model
    return {"task": task_to_dict(config.task), "model": m.name,
            "sizes": tuple(getattr(m, field) for field in _ARCHITECTURE[m.name]), "loss": config.loss,
            "dtype": config.dtype}


def _describe(ref: CheckpointRef, config: RunConfig) -> str:
    m = config.model
    sizes = {"transformer": f"d_model {m.d_model}, {m.n_heads} heads × {m.d_head}, d_mlp {m.d_mlp}",
             "gromov": f"width {m.d_mlp}", "mlp": f"embedding {m.d_model}, hidden {m.d_mlp}"}[m.name]
    return f"{ref} ({m.name}: {sizes}; task {config.task.name}; loss {config.loss}; {config.dtype})"


def same_setup(a: CheckpointRef, config_a: RunConfig, b: CheckpointRef, config_b: RunConfig) -> None:
    """ConfigError naming both checkpoints unless they share architecture, task, loss and dtype."""
    setup_a, setup_b = _setup(config_a), _setup(config_b)
    differing = [key for key in setup_a if setup_a[key] != setup_b[key]]
    if differing:
        what = "architecture" if {"model", "sizes"} & set(differing) else "task" if "task" in differing else differing[0]
        raise ConfigError(f"the checkpoints differ in {what}: {_describe(a, config_a)} against "
                          f"{_describe(b, config_b)}; compare checkpoints of the same model and task")


@dataclass(frozen=True, eq=False)
class Opened:
    """A checkpoint opened in an experiment: the optimizer state and parameters it stores, and the
    parameters its network uses (the optimizer's get)."""

    ref: CheckpointRef
    state: TrainState
    params: dict[str, torch.Tensor]


def open_checkpoint(experiment: Experiment, ref: CheckpointRef) -> Opened:
    """Load ``ref`` into ``experiment`` (which must be built from a config of the same setup)."""
    checkpoint = RunStore.open(ref.run).load_checkpoint(ref.step)
    fresh = experiment.learner.init(experiment.init_params(0))
    params = checkpoint.params(fresh.params)
    state = TrainState(checkpoint.opt_state(fresh.opt_state), params, ref.step)
    return Opened(ref, state, experiment.learner.optimizer.get(state.opt_state, params))
