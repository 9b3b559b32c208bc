"""Progress measures at every checkpoint of a run (Nanda et al. 2023; REFERENCE §3).

Per scheduled checkpoint, one row in the run's ``measures.jsonl`` with ``analysis = "interp"``:

- ``train_loss``, ``test_loss``, ``train_accuracy``, ``test_accuracy`` and ``weight_norm`` (the
  sum of squared weights), exactly as the training metrics compute them (``Experiment.evaluate``);
- ``restricted_loss``: the run's loss on all pairs of the logits restricted to the key
  frequencies' directions cos/sin(w_k(x + y)) plus each class's mean (``frequencies.key_logits``);
- ``excluded_loss``: the run's loss on the training pairs of the logits with those directions
  removed;
- ``key_energy``: the share of the logits' energy on the group's pairs (each class's mean over
  them removed) that lies along those directions: 1 when the logits are the key frequencies' program
  alone, near 2K/n² for logits that ignore them;
- ``gini_embedding`` and ``gini_neuron_logit``: Gini coefficients of the per-frequency Fourier
  norms of the operand embeddings and of the neuron-to-logit map (``network``), in group order;
- ``relabelling`` and ``key_frequencies``: what the restricted and excluded losses used.

The relabelling and key frequencies are those of the run's final checkpoint (its newest scheduled
one), read by ``extract.extract`` and used at every step, as Nanda et al. do: the measures then
track how the final algorithm forms, which frequencies an early checkpoint happens to favour would
not show. Checkpoints are read one at a time. A rerun skips every step already measured with the
same relabelling and key frequencies, so it only adds the new checkpoints; when more training
changes the final key frequencies, every step is measured again, and ``load_measures`` returns the
rows of the newest key set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from progsynth.errors import RunError
from progsynth.interp.extract import Extraction, extract, load_params
from progsynth.interp.fourier import DTYPE, gini
from progsynth.interp.frequencies import KEY_THRESHOLD, embedding_norms, key_logits, neuron_logit_norms
from progsynth.interp.network import loss_on
from progsynth.interp.relabel import GroupGrid
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore

__all__ = ["ANALYSIS", "logit_measures", "progress_measures", "RunMeasures", "measure_run", "load_measures"]

ANALYSIS = "interp"
"""The ``analysis`` value of this module's rows in measures.jsonl."""

ProgressFn = Callable[[int, int, int], None]
"""Called as (checkpoints done, checkpoints in all, step) after each checkpoint."""


@torch.no_grad()
def logit_measures(experiment: Experiment, logits: torch.Tensor, grid: GroupGrid, key: list[int]) -> dict[str, float]:
    """The measures read from the logits (N, p) alone: restricted and excluded loss, key energy
    (module docstring). They need no parameters, so they apply to any function, for example a
    convex combination of two networks' logits."""
    logits = logits.to(DTYPE)
    restricted, excluded = key_logits(logits, grid, key)
    on_grid = logits[grid.rows]
    mean = on_grid.mean((0, 1))
    total = float((on_grid - mean).pow(2).sum())
    kept = float((restricted[grid.rows] - mean).pow(2).sum())
    return {
        "restricted_loss": loss_on(experiment, restricted),
        "excluded_loss": loss_on(experiment, excluded, experiment.data.train_idx),
        "key_energy": kept / total if total > 0 else 0.0,
    }


@torch.no_grad()
def progress_measures(experiment: Experiment, params: dict[str, torch.Tensor], grid: GroupGrid,
                      key: list[int]) -> dict[str, Any]:
    """The measures of one checkpoint (module docstring), as a measures.jsonl row without ``step``."""
    return {
        "analysis": ANALYSIS,
        "relabelling": grid.relabelling.name,
        "key_frequencies": list(key),
        **experiment.evaluate(params),
        **logit_measures(experiment, experiment.logits(params), grid, key),
        "gini_embedding": gini(embedding_norms(experiment, params, grid)),
        "gini_neuron_logit": gini(neuron_logit_norms(experiment, params, grid)),
    }


@dataclass(frozen=True, eq=False)
class RunMeasures:
    """What ``measure_run`` did."""

    final: Extraction
    """The extraction at the final checkpoint, whose relabelling and key frequencies were used."""
    table: pd.DataFrame
    """The run's measures for that key set, one row per checkpoint (``load_measures``)."""
    computed: int
    """Checkpoints measured by this call."""
    skipped: int
    """Checkpoints already measured with the same key set."""


def _interp_rows(store: RunStore) -> pd.DataFrame:
    table = store.measures()
    if table.empty or "analysis" not in table.columns:
        return pd.DataFrame()
    return table[table["analysis"] == ANALYSIS]


def _matching(rows: pd.DataFrame, relabelling: str, key: list[int]) -> pd.DataFrame:
    if rows.empty:
        return rows
    same = (rows["relabelling"] == relabelling) & rows["key_frequencies"].map(lambda k: list(k) == list(key))
    return rows[same]


def measure_run(run: str | Path, progress: ProgressFn | None = None,
                key_threshold: float = KEY_THRESHOLD) -> RunMeasures:
    """Measure every scheduled checkpoint of ``run`` not yet measured with the final checkpoint's
    relabelling and key frequencies, appending rows to its measures.jsonl (module docstring)."""
    store = RunStore.open(run)
    with store.writer():  # one measuring process at a time, so no step is measured twice
        steps = store.checkpoint_steps()
        if not steps:
            raise RunError(f"run {str(store.path)!r} has no scheduled checkpoints to measure")
        experiment = Experiment(store.config())
        final = extract(experiment, load_params(store, experiment, steps[-1]), steps[-1], key_threshold)
        relabelling, key = final.program.relabelling.name, final.key_frequencies
        done = set(_matching(_interp_rows(store), relabelling, key).get("step", pd.Series(dtype=int)).tolist())
        todo = [s for s in steps if s not in done]
        for i, step in enumerate(todo, 1):
            row = progress_measures(experiment, load_params(store, experiment, step), final.grid, key)
            store.append_measures({"step": step, **row})
            if progress:
                progress(i, len(todo), step)
        return RunMeasures(final, load_measures(store.path), len(todo), len(steps) - len(todo))


def load_measures(run: str | Path) -> pd.DataFrame:
    """The run's interp measures for its newest key set (relabelling and key frequencies of the
    last row written), one row per step, ascending; empty if none were measured."""
    rows = _interp_rows(RunStore.open(run))
    if rows.empty:
        return rows
    last = rows.iloc[-1]
    rows = _matching(rows, last["relabelling"], list(last["key_frequencies"]))
    return rows.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
