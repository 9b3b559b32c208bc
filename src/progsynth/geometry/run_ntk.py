"""The empirical NTK at the checkpoints of a run, written into the run's measures.jsonl.

For each chosen scheduled checkpoint (one loaded at a time), the network the run's config builds
(``runs.experiment.Experiment``) gets the checkpoint's parameters and ``ntk.ntk_spectrum`` computes
the top of Θ's spectrum on ``NTKConfig.inputs`` data rows (the same rows at every step: drawn with
the config's seed, sorted). For modular tasks the top eigenvectors' Fourier content is measured
against the relabelling and key frequencies of the run's *final* checkpoint (``interp.extract``),
used at every step as ``interp.measures`` does, so the rows track how the kernel's top eigenspace
comes to line up with the final program. Each row also checks the factorisation ∇_w L = J_fᵀ ∇ℓ
(``factorisation``) on the run's training set in float64, with the run's loss lens, and records
the norms of the function-space gradient ∇ℓ at f_w and of the parameter gradient beside it.

Each checkpoint is one row of measures.jsonl with ``analysis = "ntk"``::

    {"step": 200, "analysis": "ntk", "eigenvalues": [...], "effective_rank": 7.9, "trace": 4.1e6,
     "trace_stderr": 1.2e5, "top_share": 0.41, "method": "lanczos", "matvecs": 97, "seconds": 12.1,
     "inputs": 1000, "relabelling": "identity", "key_frequencies": [14, 35, 41],
     "frequency_content": [[...], ...], "key_share": [...], "eigenspace_content": [...],
     "eigenspace_key_share": 0.62, "factorisation_error": 2e-16, "function_gradient_norm": 0.003,
     "gradient_norm": 0.41,
     "ntk_config": {"inputs": 1000, "top": 20, ...}}

``eigenvalues`` are descending; ``frequency_content`` holds, per top eigenvector, the ⌊n/2⌋ shares
of frequencies 1..⌊n/2⌋ and ``key_share`` its share in the key frequencies' joint span;
``eigenspace_content`` and ``eigenspace_key_share`` read the other way, the share of each
frequency's (and of the key frequencies') program functions lying in the span of the top
eigenvectors, which degenerate eigenvalues do not scramble (``ntk.frequency_content``); these,
``relabelling`` and ``key_frequencies`` are None for a task with no Fourier program (parity,
Boolean functions). ``inputs`` is the number of rows used and
``seconds`` the wall time of the whole row (spectrum, Fourier content and factorisation check).
``ntk_config`` holds the settings that determine the row (``SETTINGS``). A later call skips every
checkpoint that already has a row with the same ``ntk_config``, relabelling and key frequencies, so
rerunning after more training measures only the new checkpoints (and all of them again when more
training changed the final key frequencies).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from progsynth.core.smooth import from_module
from progsynth.errors import NotApplicableError
from progsynth.geometry.factorisation import Factorisation, check_factorisation
from progsynth.geometry.ntk import NTKConfig, choose_method, estimate_memory, frequency_content, ntk_spectrum
from progsynth.interp.extract import extract, load_params
from progsynth.interp.relabel import GroupGrid, RelabelError
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import MEASURES, RunStore, read_rows
from progsynth.slt.run_llc import chosen_steps

__all__ = ["ANALYSIS", "SETTINGS", "settings_of", "RunNTK", "measure_run_ntk", "ntk_row", "factorisation",
           "load_ntk"]

ANALYSIS = "ntk"
"""The ``analysis`` value of this module's rows in measures.jsonl."""

SETTINGS = ("inputs", "top", "probes", "seed", "method")
"""The ``NTKConfig`` fields recorded in ``ntk_config`` and compared to decide whether a step is done.
``max_memory_bytes`` is a guard, not a setting: the ``method`` of a row says what ran."""

ProgressFn = Callable[[int, int, int], None]
"""Called as (checkpoints done, checkpoints to do, step) after each checkpoint."""


@dataclass(frozen=True, eq=False)
class RunNTK:
    """What ``measure_run_ntk`` did."""

    table: pd.DataFrame
    """The run's ntk rows with these settings and the final program's key set for the chosen steps,
    one per step, ascending."""
    computed: tuple[int, ...]
    """Steps measured by this call."""
    skipped: tuple[int, ...]
    """Steps that already had a row with the same settings and key set."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the steps computed and skipped, and the rows."""
        return {"computed": list(self.computed), "skipped": list(self.skipped),
                "rows": self.table.to_dict(orient="records")}


@dataclass(frozen=True)
class _Program:
    """The final checkpoint's relabelling, key frequencies and group grid (None when none applies)."""

    relabelling: str | None
    key: list[int] | None
    grid: GroupGrid | None


def settings_of(config: NTKConfig) -> dict[str, Any]:
    """The ``ntk_config`` entry of a row: the ``SETTINGS`` fields of ``config``."""
    values = config.to_dict()
    return {name: values[name] for name in SETTINGS}


def _final_program(experiment: Experiment, store: RunStore, step: int) -> _Program:
    try:
        final = extract(experiment, load_params(store, experiment, step), step)
    except (NotApplicableError, RelabelError):
        return _Program(None, None, None)
    return _Program(final.program.relabelling.name, list(final.key_frequencies), final.grid)


def _float64(value: torch.Tensor) -> torch.Tensor:
    return value.to(torch.float64) if value.is_floating_point() else value


def factorisation(experiment: Experiment, module: nn.Module, params: dict[str, torch.Tensor]) -> Factorisation:
    """∇_w L = J_fᵀ ∇ℓ checked on the run's training set, in float64 copies, with the run's loss lens
    (``factorisation.check_factorisation``): the loss, ‖∇ℓ‖ in function space, ‖∇_w L‖, the error."""
    model = from_module(copy.deepcopy(module).to(torch.float64))
    params64 = {name: value.detach().to(torch.float64) for name, value in params.items()}
    return check_factorisation(model, experiment.loss, params64, _float64(experiment.x_train),
                               _float64(experiment.y_train))


def ntk_row(experiment: Experiment, params: dict[str, torch.Tensor], rows: torch.Tensor, config: NTKConfig,
            grid: GroupGrid | None = None, key: list[int] | None = None) -> dict[str, Any]:
    """The measures.jsonl row of one checkpoint's parameters, without ``step`` (module docstring).

    ``rows`` are the data rows used (``NTKConfig.rows``); ``grid`` and ``key`` are the final
    checkpoint's group grid and key frequencies (None for a task with no Fourier program)."""
    start = time.perf_counter()
    module = experiment.module_template
    check = factorisation(experiment, module, params)
    spectrum = ntk_spectrum(module, params, experiment.inputs[rows], top=config.top, method=config.method,
                            probes=config.probes, seed=config.seed, max_memory_bytes=config.max_memory_bytes)
    shares = key_share = eigenspace = eigenspace_key = None
    if grid is not None:
        content = frequency_content(spectrum.eigenvectors, grid, rows, list(key or []))
        shares, key_share = content.shares.tolist(), content.key_share.tolist()
        eigenspace, eigenspace_key = content.eigenspace_shares.tolist(), content.eigenspace_key_share
    return {
        "analysis": ANALYSIS, "eigenvalues": spectrum.eigenvalues.tolist(),
        "effective_rank": spectrum.effective_rank, "trace": spectrum.trace, "trace_stderr": spectrum.trace_stderr,
        "top_share": spectrum.top_share, "method": spectrum.method, "matvecs": spectrum.matvecs,
        "inputs": spectrum.rows, "relabelling": None if grid is None else grid.relabelling.name,
        "key_frequencies": None if grid is None else list(key or []),
        "frequency_content": shares, "key_share": key_share, "eigenspace_content": eigenspace,
        "eigenspace_key_share": eigenspace_key,
        "factorisation_error": check.relative_error, "function_gradient_norm": check.function_gradient_norm,
        "gradient_norm": check.gradient_norm,
        "seconds": time.perf_counter() - start, "ntk_config": settings_of(config),
    }


def load_ntk(run: str | Path, config: NTKConfig | None = None) -> pd.DataFrame:
    """The run's ntk rows (all, or only those with ``config``'s settings), newest per step, ascending;
    only their own columns (not those of other analyses' rows)."""
    store = RunStore.open(run)
    found = [row for row in read_rows(store.path / MEASURES) if row.get("analysis") == ANALYSIS]
    if config is not None:
        found = [row for row in found if row.get("ntk_config") == settings_of(config)]
    if not found:
        return pd.DataFrame()
    return pd.DataFrame(found).drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def _same_program(rows: pd.DataFrame, program: _Program) -> pd.DataFrame:
    if rows.empty:
        return rows

    def same(relabelling: Any, key: Any) -> bool:
        relabelling = None if not isinstance(relabelling, str) else relabelling
        key = list(key) if isinstance(key, (list, tuple)) else None
        return relabelling == program.relabelling and key == program.key

    return rows[[same(r, k) for r, k in zip(rows["relabelling"], rows["key_frequencies"])]]


def measure_run_ntk(
    run: str | Path,
    steps: Sequence[int] | None = None,
    config: NTKConfig = NTKConfig(),
    progress: ProgressFn | None = None,
) -> RunNTK:
    """Measure the NTK at the chosen scheduled checkpoints of ``run`` (default: all of them) that
    have no row with the same settings and final key set yet, appending one row per step to
    measures.jsonl (module docstring). ``ResourceError`` before any work when the request exceeds
    ``config.max_memory_bytes``."""
    config.validate()
    store = RunStore.open(run)
    with store.writer():  # one measuring process at a time, so no step is measured twice
        chosen = chosen_steps(store, steps, "measure the NTK at")
        experiment = Experiment(store.config())
        rows = config.rows(int(experiment.inputs.shape[0]))
        estimate = estimate_memory(experiment.module_template, experiment.init_params(0), experiment.inputs[rows],
                                   config.top)
        choose_method(estimate, config.method, config.top, config.max_memory_bytes)  # refuses before any work
        program = _final_program(experiment, store, store.checkpoint_steps()[-1])
        done_rows = _same_program(load_ntk(store.path, config), program)
        done = set(done_rows.get("step", pd.Series(dtype=int)).tolist())
        todo = [s for s in chosen if s not in done]
        for i, step in enumerate(todo, 1):
            row = ntk_row(experiment, load_params(store, experiment, step), rows, config, program.grid, program.key)
            store.append_measures({"step": step, **row})
            if progress:
                progress(i, len(todo), step)
        table = _same_program(load_ntk(store.path, config), program)
        table = table[table["step"].isin(chosen)].reset_index(drop=True) if not table.empty else table
        return RunNTK(table, tuple(todo), tuple(s for s in chosen if s in done))
