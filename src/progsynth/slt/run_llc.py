"""λ̂ at the checkpoints of a run, written into the run's measures.jsonl.

For each chosen scheduled checkpoint (one loaded at a time), the network the run's config builds
(``runs.experiment.Experiment``) gets the checkpoint's parameters and ``estimate_llc_for_module``
samples around them on the run's *training* set, with the run's loss (``"cross_entropy"`` on the
class labels, or ``"mse"`` as ``llc.squared_error`` on the one-hot targets). Weight decay is not
part of that loss: a checkpoint trained with strong weight decay may sit off the minimum of the
loss alone, which the "below L_n(w*)" diagnostic then reports.

Each estimate is one row of measures.jsonl with ``analysis = "llc"``::

    {"step": 200, "analysis": "llc", "llc": 41.3, "llc_stderr": 0.9, "llc_std": 2.5,
     "llc_per_chain": [...], "llc_stderr_per_chain": [...], "epsilon": 3.1e-05, "nbeta": 523.1, "localization": 10.0,
     "init_loss": 0.0123, "acceptance": 0.93, "diverged_chains": [], "warnings": [],
     "seconds": 12.1, "llc_config": {"epsilon": "auto", "nbeta": null, ...}}

``step``, ``llc`` and ``llc_stderr`` are what the report plots (``report.phases._llc_rows``, the
newest row per step). ``llc_config`` holds the sampler settings that determine the estimate
(``SETTINGS``); a later call skips every checkpoint that already has a row with the same settings,
so rerunning after more training only estimates the new checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from progsynth.errors import ConfigError, RunError
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore, _summarise
from progsynth.slt.llc import LLCResult, SGLDConfig, estimate_llc_for_module

__all__ = ["ANALYSIS", "SETTINGS", "RunLLC", "estimate_run_llc", "estimate_steps", "llc_checkpoint", "load_llc", "parse_steps"]

ANALYSIS = "llc"
"""The ``analysis`` value of this module's rows in measures.jsonl."""

SETTINGS = ("epsilon", "nbeta", "localization", "num_chains", "num_draws", "num_burnin", "batch_size", "seed")
"""The ``SGLDConfig`` fields recorded in ``llc_config`` and compared to decide whether a step is done."""

ProgressFn = Callable[[int, int, int], None]
"""Called as (checkpoints done, checkpoints to do, step) after each estimate."""


@dataclass(frozen=True, eq=False)
class RunLLC:
    """What ``estimate_run_llc`` did."""

    table: pd.DataFrame
    """The run's llc rows with these settings for the chosen steps, one per step, ascending."""
    computed: tuple[int, ...]
    """Steps estimated by this call."""
    skipped: tuple[int, ...]
    """Steps that already had an estimate with the same settings."""


def parse_steps(text: str | None, available: Sequence[int]) -> list[int]:
    """``None``, ``""`` or ``"all"`` → every available step; else a comma list of steps, each of
    which must be a checkpoint on disk (``RunError`` naming the available ones otherwise)."""
    if text is None or text.strip().lower() in ("", "all"):
        return list(available)
    steps = []
    for part in text.split(","):
        try:
            steps.append(int(part.strip()))
        except ValueError:
            raise ConfigError(f"--checkpoints must be 'all' or a comma list of steps, got {text!r}") from None
    missing = [s for s in steps if s not in available]
    if missing:
        raise RunError(f"no checkpoint at step {', '.join(map(str, missing))}; available: {_summarise(list(available))}")
    return sorted(set(steps))


def settings_of(config: SGLDConfig) -> dict[str, Any]:
    """The ``llc_config`` entry of a row: the ``SETTINGS`` fields of ``config``."""
    values = asdict(config)
    return {name: values[name] for name in SETTINGS}


def llc_checkpoint(experiment: Experiment, store: RunStore, step: int, config: SGLDConfig) -> LLCResult:
    """λ̂ at the scheduled checkpoint ``step`` of ``store`` (module docstring)."""
    module = experiment.build_module(seed=0)
    params = store.load_checkpoint(step).params(experiment.init_params(0))
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])
    return estimate_llc_for_module(module, experiment.x_train, experiment.y_train, experiment.config.loss, config)


def _row(step: int, result: LLCResult, config: SGLDConfig) -> dict[str, Any]:
    d = result.diagnostics
    return {
        "step": step, "analysis": ANALYSIS, "llc": result.llc_mean, "llc_stderr": result.llc_stderr,
        "llc_std": result.llc_std, "llc_per_chain": result.llc_per_chain.tolist(), "epsilon": result.epsilon,
        "nbeta": result.nbeta, "localization": result.localization, "init_loss": result.init_loss,
        "llc_stderr_per_chain": result.llc_stderr_per_chain.tolist(), "acceptance": d.acceptance_mean,
        "diverged_chains": list(d.diverged), "warnings": list(d.warnings),
        "seconds": result.seconds, "llc_config": settings_of(config),
    }


def load_llc(run: str | Path, config: SGLDConfig | None = None) -> pd.DataFrame:
    """The run's llc rows (all, or only those with ``config``'s settings), newest per step, ascending."""
    table = RunStore.open(run).measures()
    if table.empty or "analysis" not in table.columns:
        return pd.DataFrame()
    rows = table[table["analysis"] == ANALYSIS]
    if config is not None and not rows.empty:
        wanted = settings_of(config)
        rows = rows[[isinstance(c, dict) and c == wanted for c in rows.get("llc_config", [None] * len(rows))]]
    return rows.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def estimate_run_llc(
    run: str | Path,
    steps: Sequence[int] | None = None,
    config: SGLDConfig = SGLDConfig(),
    progress: ProgressFn | None = None,
) -> RunLLC:
    """Estimate λ̂ at the chosen scheduled checkpoints of ``run`` (default: all of them) that have
    no estimate with the same settings yet, appending one row per step to measures.jsonl."""
    config.validate()
    store = RunStore.open(run)
    with store.writer():  # one estimating process at a time, so no step is estimated twice
        return estimate_steps(store, steps, config, progress)


def estimate_steps(store: RunStore, steps: Sequence[int] | None, config: SGLDConfig,
                   progress: ProgressFn | None = None) -> RunLLC:
    """``estimate_run_llc`` for a caller that already holds the run's write lock."""
    available = store.checkpoint_steps()
    if not available:
        raise RunError(f"run {str(store.path)!r} has no scheduled checkpoints to estimate the LLC at")
    chosen = parse_steps(None, available) if steps is None else parse_steps(",".join(map(str, steps)), available)
    done = set(load_llc(store.path, config).get("step", pd.Series(dtype=int)).tolist())
    todo = [s for s in chosen if s not in done]
    experiment = Experiment(store.config()) if todo else None
    for i, step in enumerate(todo, 1):
        store.append_measures(_row(step, llc_checkpoint(experiment, store, step, config), config))
        if progress:
            progress(i, len(todo), step)
    table = load_llc(store.path, config)
    table = table[table["step"].isin(chosen)].reset_index(drop=True) if not table.empty else table
    return RunLLC(table, tuple(todo), tuple(s for s in chosen if s in done))
