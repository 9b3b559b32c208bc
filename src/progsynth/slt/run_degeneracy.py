"""Degeneracy over training: effective size, the degeneracies behind it, functional dimension.

Per scheduled checkpoint, one row in the run's ``measures.jsonl`` with ``analysis = "degeneracy"``:

- ``params`` and ``effective_params``: the network's trainable parameters, and those of the
  smallest network of its family that ``slt.compress.compress`` finds computing the same outputs
  on every input of the task (the full grid: the effective size of the function, not of its fit
  to the training pairs); ``widths_before``/``widths_after`` the hidden layers' units;
  ``max_output_diff`` the check (largest |Δ output| over those inputs);
- ``units_<kind>``: how many units each degeneracy removed (``slt.compress.KINDS``: dead,
  zero-out, constant, duplicate, linear-pairs, negligible);
- ``functional_dimension``: the rank of the Jacobian of parameters → outputs on a fixed subset of
  ``functional_inputs`` inputs (``functional_rows`` = inputs × outputs rows;
  ``slt.degeneracy.jacobian_rank``). It can be at most ``functional_rows``: below that, the
  outputs on the subset move in fewer directions than they have coordinates; at it, the subset is
  too small to see the degeneracy, which on networks with 10⁴–10⁵ parameters a per-checkpoint
  Jacobian cannot afford to be. The subset is the same at every checkpoint
  (``tasks.common.sample_rows`` with seed 0), so the curve compares like with like.

The question the rows answer (the report plots them beside the weight norm): does the effective
size fall during cleanup, when the memorising program is removed? ``compress``'s tolerance and the
subset's size are the settings; a rerun skips every step that already has a row with the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from progsynth.errors import ConfigError
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore
from progsynth.slt.compress import compress
from progsynth.slt.degeneracy import jacobian_rank
from progsynth.slt.run_llc import chosen_steps
from progsynth.tasks.common import sample_rows

__all__ = ["ANALYSIS", "DegeneracySettings", "RunDegeneracy", "degeneracy_row", "measure_run_degeneracy",
           "load_degeneracy"]

ANALYSIS = "degeneracy"
"""The ``analysis`` value of this module's rows in measures.jsonl."""

ProgressFn = Callable[[int, int, int], None]
"""Called as (checkpoints done, checkpoints to do, step) after each checkpoint."""


@dataclass(frozen=True)
class DegeneracySettings:
    """What determines a degeneracy row besides the checkpoint."""

    tolerance: float = 1e-6
    """``compress``'s relative tolerance (its module docstring says what is compared with what)."""
    functional_inputs: int = 4
    """Inputs in the fixed subset the Jacobian rank is taken on (rows = inputs × outputs)."""

    def validate(self) -> None:
        if not (isinstance(self.tolerance, (int, float)) and self.tolerance > 0 and self.tolerance < float("inf")):
            raise ConfigError(f"--tolerance must be a finite number > 0, got {self.tolerance!r}")
        if isinstance(self.functional_inputs, bool) or not isinstance(self.functional_inputs, int) \
                or self.functional_inputs < 0:
            raise ConfigError(f"--functional-inputs must be an integer ≥ 0 (0: skip the Jacobian rank), "
                              f"got {self.functional_inputs!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"tolerance": float(self.tolerance), "functional_inputs": self.functional_inputs}


@dataclass(frozen=True, eq=False)
class RunDegeneracy:
    """What ``measure_run_degeneracy`` did."""

    table: pd.DataFrame
    """The run's degeneracy rows with these settings for the chosen steps, one per step, ascending."""
    computed: tuple[int, ...]
    skipped: tuple[int, ...]


def degeneracy_row(experiment: Experiment, params: dict[str, torch.Tensor],
                   settings: DegeneracySettings = DegeneracySettings()) -> dict[str, Any]:
    """The degeneracy measures of one set of parameters (module docstring), without ``step``."""
    module = experiment.build_module(seed=0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])
    found = compress(module, experiment.inputs, settings.tolerance)
    row: dict[str, Any] = {
        "analysis": ANALYSIS, "params": found.params_before, "effective_params": found.params_after,
        "widths_before": list(found.widths_before), "widths_after": list(found.widths_after),
        "max_output_diff": found.max_output_diff,
        **{f"units_{kind.replace('-', '_')}": count for kind, count in found.counts.items()},
        "degeneracy_config": settings.to_dict(),
    }
    if settings.functional_inputs:
        subset = sample_rows(experiment.inputs.shape[0], min(settings.functional_inputs, experiment.inputs.shape[0]), 0)
        x = experiment.inputs[subset]
        row["functional_dimension"] = jacobian_rank(module, x, experiment.config.loss)
        row["functional_rows"] = int(subset.numel()) * experiment.n_outputs
    return row


def load_degeneracy(run: str | Path, settings: DegeneracySettings | None = None) -> pd.DataFrame:
    """The run's degeneracy rows with ``settings`` (default: those of the row written last, so a
    curve never mixes tolerances), newest per step, ascending."""
    table = RunStore.open(run).measures()
    if table.empty or "analysis" not in table.columns:
        return pd.DataFrame()
    rows = table[table["analysis"] == ANALYSIS]
    if not rows.empty:
        wanted = settings.to_dict() if settings is not None else rows["degeneracy_config"].iloc[-1]
        rows = rows[[isinstance(c, dict) and c == wanted for c in rows["degeneracy_config"]]]
    return rows.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def measure_run_degeneracy(run: str | Path, steps: Sequence[int] | None = None,
                           settings: DegeneracySettings = DegeneracySettings(),
                           progress: ProgressFn | None = None) -> RunDegeneracy:
    """Measure the chosen scheduled checkpoints of ``run`` (default: all) that have no degeneracy
    row with these settings yet, appending one row per step to measures.jsonl."""
    settings.validate()
    store = RunStore.open(run)
    with store.writer():  # one measuring process at a time, so no step is measured twice
        chosen = chosen_steps(store, steps, "measure")
        done = set(load_degeneracy(store.path, settings).get("step", pd.Series(dtype=int)).tolist())
        todo = [s for s in chosen if s not in done]
        experiment = Experiment(store.config()) if todo else None
        for i, step in enumerate(todo, 1):
            params = store.load_checkpoint(step).params(experiment.init_params(0))
            store.append_measures({"step": step, **degeneracy_row(experiment, params, settings)})
            if progress:
                progress(i, len(todo), step)
        table = load_degeneracy(store.path, settings)
        table = table[table["step"].isin(chosen)].reset_index(drop=True) if not table.empty else table
        return RunDegeneracy(table, tuple(todo), tuple(s for s in chosen if s in done))
