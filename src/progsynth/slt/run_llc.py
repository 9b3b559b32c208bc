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

Refined LLCs (``slt.restrict``; Wang et al. 2024). ``restrict`` names a component of the model
(``embedding``, ``head0`` …, ``mlp``, ``unembedding`` for the transformer) or parameter-name
patterns: SGLD moves only those weights, the others stay at the checkpoint; ``ALL_COMPONENTS``
estimates every component in turn. ``data`` chooses the loss's rows: ``"train"`` (the default, the
set the network was trained on), ``"test"`` (the held-out pairs) or ``"all"``; nβ = n / log n with
that set's n. Each row records ``restrict`` (None: every weight), ``data`` and ``params_sampled``
(d_subset); the whole-network rows on the training set are the ones the main λ̂ curve plots, and
the report draws each component's λ̂ over training from the restricted ones. Rows written before
these fields existed read as whole-network, training-set rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from progsynth.errors import ConfigError, NotApplicableError, RunError
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore, _summarise
from progsynth.slt.llc import LLCResult, SGLDConfig, estimate_llc_for_module
from progsynth.slt.restrict import ALL_COMPONENTS, component_names, resolve, restricted_module

__all__ = ["ANALYSIS", "SETTINGS", "DATA", "RunLLC", "chosen_steps", "estimate_run_llc", "estimate_steps", "estimates_of", "llc_checkpoint",
           "load_llc", "parse_steps", "refined_rows", "restrictions"]

ANALYSIS = "llc"
"""The ``analysis`` value of this module's rows in measures.jsonl."""

SETTINGS = ("epsilon", "nbeta", "localization", "num_chains", "num_draws", "num_burnin", "batch_size", "seed")
"""The ``SGLDConfig`` fields recorded in ``llc_config`` and compared to decide whether a step is done."""

DATA = ("train", "test", "all")
"""The rows the loss may be taken on (module docstring)."""

ProgressFn = Callable[[int, int, int], None]
"""Called as (checkpoints done, checkpoints to do, step) after each estimate."""


@dataclass(frozen=True, eq=False)
class RunLLC:
    """What ``estimate_run_llc`` did."""

    table: pd.DataFrame
    """The run's llc rows with these settings for the chosen steps, one per step and restriction,
    ascending by step within each restriction."""
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


def chosen_steps(store: RunStore, steps: Sequence[int] | None, purpose: str) -> list[int]:
    """The scheduled checkpoints of ``store`` that ``steps`` names (None: all of them): RunError when
    the run has none (``purpose`` says for what) or a step is not on disk."""
    available = store.checkpoint_steps()
    if not available:
        raise RunError(f"run {str(store.path)!r} has no scheduled checkpoints to {purpose}")
    return parse_steps(None if steps is None else ",".join(map(str, steps)), available)


def settings_of(config: SGLDConfig) -> dict[str, Any]:
    """The ``llc_config`` entry of a row: the ``SETTINGS`` fields of ``config``."""
    values = asdict(config)
    return {name: values[name] for name in SETTINGS}


def _data(experiment: Experiment, data: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (inputs, targets) of the chosen rows: the training set, the held-out pairs or all."""
    if data == "train":
        return experiment.x_train, experiment.y_train
    if data == "test":
        if experiment.x_test.shape[0] == 0:
            raise NotApplicableError("--data test: this run holds no pairs out (train_fraction 1); use train or all")
        return experiment.x_test, experiment.y_test
    return experiment.inputs, experiment.targets


def llc_checkpoint(experiment: Experiment, store: RunStore, step: int, config: SGLDConfig,
                   restrict: str | None = None, data: str = "train") -> tuple[LLCResult, int]:
    """λ̂ at the scheduled checkpoint ``step`` of ``store`` (module docstring), and the number of
    weights sampled."""
    module = experiment.build_module(seed=0)
    params = store.load_checkpoint(step).params(experiment.init_params(0))
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])
    if restrict is not None:
        module = restricted_module(module, resolve(module, restrict))
    x, y = _data(experiment, data)
    sampled = sum(p.numel() for p in module.parameters())
    return estimate_llc_for_module(module, x, y, experiment.config.loss, config), sampled


def _row(step: int, result: LLCResult, config: SGLDConfig, restrict: str | None, data: str,
         sampled: int) -> dict[str, Any]:
    d = result.diagnostics
    return {
        "step": step, "analysis": ANALYSIS, "restrict": restrict, "data": data, "params_sampled": sampled,
        "llc": result.llc_mean, "llc_systematic": result.llc_systematic, "llc_stderr": result.llc_stderr,
        "llc_std": result.llc_std, "llc_per_chain": result.llc_per_chain.tolist(), "epsilon": result.epsilon,
        "nbeta": result.nbeta, "localization": result.localization, "init_loss": result.init_loss,
        "llc_stderr_per_chain": result.llc_stderr_per_chain.tolist(), "acceptance": d.acceptance_mean,
        "diverged_chains": list(d.diverged), "warnings": list(d.warnings),
        "seconds": result.seconds, "llc_config": settings_of(config),
    }


def estimates_of(rows: pd.DataFrame, restrict: str | None, data: str) -> pd.Series:
    """Which llc rows estimate ``restrict`` on ``data`` (rows without the fields: every weight, train)."""
    restricts = rows["restrict"] if "restrict" in rows.columns else pd.Series([None] * len(rows), index=rows.index)
    datas = rows["data"] if "data" in rows.columns else pd.Series([None] * len(rows), index=rows.index)
    same_restrict = restricts.map(lambda r: (None if not isinstance(r, str) else r) == restrict)
    same_data = datas.map(lambda d: (d if isinstance(d, str) else "train") == data)
    return same_restrict & same_data


def load_llc(run: str | Path, config: SGLDConfig | None = None, restrict: str | None = None,
             data: str = "train") -> pd.DataFrame:
    """The run's llc rows for ``restrict`` (None: every weight) on ``data`` (all settings, or only
    ``config``'s), newest per step, ascending."""
    table = RunStore.open(run).measures()
    if table.empty or "analysis" not in table.columns:
        return pd.DataFrame()
    rows = table[table["analysis"] == ANALYSIS]
    rows = rows[estimates_of(rows, restrict, data)] if not rows.empty else rows
    if config is not None and not rows.empty:
        wanted = settings_of(config)
        rows = rows[[isinstance(c, dict) and c == wanted for c in rows.get("llc_config", [None] * len(rows))]]
    return rows.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def refined_rows(measures: pd.DataFrame) -> pd.DataFrame:
    """The restricted llc rows of a measures table (columns ``restrict``, ``data``, ``step``, ``llc``,
    ``llc_stderr``), the newest per (restriction, data, step), sorted; empty if there are none."""
    if measures.empty or "restrict" not in measures.columns or "llc" not in measures.columns:
        return pd.DataFrame()
    rows = measures[measures["llc"].notna() & measures["restrict"].map(lambda r: isinstance(r, str))].copy()
    if rows.empty:
        return pd.DataFrame()
    rows["data"] = rows["data"].map(lambda d: d if isinstance(d, str) else "train")
    rows = rows[["restrict", "data", "step", "llc", "llc_stderr"]]
    return rows.drop_duplicates(["restrict", "data", "step"], keep="last").sort_values(
        ["restrict", "data", "step"]).reset_index(drop=True)


def restrictions(experiment: Experiment, restrict: str | None) -> list[str | None]:
    """The restrictions ``restrict`` asks for: [None] (every weight), every component for
    ``ALL_COMPONENTS``, else [restrict], checked against the run's model (ConfigError listing its
    components and parameters when it matches nothing)."""
    if restrict is None:
        return [None]
    module = experiment.build_module(seed=0)
    if restrict.strip() == ALL_COMPONENTS:
        return list(component_names(module))
    return [resolve(module, restrict).name]


def _check_data(data: str) -> None:
    if data not in DATA:
        raise ConfigError(f"--data must be one of {list(DATA)}, got {data!r}")


def estimate_run_llc(
    run: str | Path,
    steps: Sequence[int] | None = None,
    config: SGLDConfig = SGLDConfig(),
    progress: ProgressFn | None = None,
    restrict: str | None = None,
    data: str = "train",
) -> RunLLC:
    """Estimate λ̂ at the chosen scheduled checkpoints of ``run`` (default: all of them) that have
    no estimate with the same settings, restriction and data yet, appending one row per step (and
    per component, for ``ALL_COMPONENTS``) to measures.jsonl."""
    config.validate()
    _check_data(data)
    store = RunStore.open(run)
    with store.writer():  # one estimating process at a time, so no step is estimated twice
        return estimate_steps(store, steps, config, progress, restrict, data)


def estimate_steps(store: RunStore, steps: Sequence[int] | None, config: SGLDConfig,
                   progress: ProgressFn | None = None, restrict: str | None = None,
                   data: str = "train") -> RunLLC:
    """``estimate_run_llc`` for a caller that already holds the run's write lock."""
    _check_data(data)
    chosen = chosen_steps(store, steps, "estimate the LLC at")
    experiment = Experiment(store.config())
    todo: list[tuple[str | None, int]] = []
    skipped: list[int] = []
    names = restrictions(experiment, restrict)
    for name in names:
        done = set(load_llc(store.path, config, name, data).get("step", pd.Series(dtype=int)).tolist())
        todo += [(name, s) for s in chosen if s not in done]
        skipped += [s for s in chosen if s in done]
    for i, (name, step) in enumerate(todo, 1):
        result, sampled = llc_checkpoint(experiment, store, step, config, name, data)
        store.append_measures(_row(step, result, config, name, data, sampled))
        if progress:
            progress(i, len(todo), step)
    tables = [load_llc(store.path, config, name, data) for name in names]
    tables = [t[t["step"].isin(chosen)] for t in tables if not t.empty]
    table = pd.concat(tables).reset_index(drop=True) if tables else pd.DataFrame()
    return RunLLC(table, tuple(step for _, step in todo), tuple(skipped))
