"""Many runs of one task, one comparison: do different seeds, architectures and optimizers converge on
the same program, and what does training on random labels learn?

``compare_runs(runs)`` reads each run at its newest scheduled checkpoint (a run still training is
compared there, and the result says so) and reports:

- **programs**: each run's extracted program (relabelling, key frequencies, bits, verdict; tasks on
  Z_p), the distribution of key frequencies across runs and a test of whether they are used
  uniformly. The test: the statistic is the largest number of runs sharing one frequency; under
  the null each run draws as many distinct frequencies as it has uniformly from 1..⌊n/2⌋ of its
  group; the p-value is the share of ``SIMULATIONS`` seeded draws whose statistic is at least the
  observed one (with the usual +1 correction). A small p-value says some frequencies are preferred;
- **functions**: pairwise agreement of the networks' answers (argmax) on the held-out pairs;
- **representations** at two sites (``representations.SITES``) on the same ``inputs`` data rows:
  pairwise linear CKA, mutual k-nearest-neighbour alignment and linear stitching (a map fitted from
  one run's site to another's on the rows in the training split, R² on the rows held out), from
  ``compare.similarity``;
- **over training**: the mean of each off-diagonal similarity and of the held-out agreement at
  every checkpoint step all runs share, one checkpoint per run in memory at a time;
- **grokking time against closeness**: each run's first step with held-out accuracy ≥ 0.99 beside
  the mean hidden-site CKA of its end point with the other runs', and their Spearman correlation;
- **groups**: for every setting in which the runs differ (model, optimizer, label noise), per value
  its runs, how many generalised and when, their key-frequency sets, and the mean hidden-site CKA
  within and between the groups: does the optimizer change the speed or the program?
- **random labels** (when some run trained with ``label_noise`` > 0): per run the fraction Q of
  training labels replaced, epochs to fit the training set (train accuracy ≥ 0.99), held-out
  accuracy, the sum of squared weights, λ̂ at the compared checkpoint when ``progsynth llc``
  measured it there, effective parameters (``effective_parameters``) and the extracted program's
  bits, or the verdict that there is none beside the lookup table's bits.

Runs of different tasks are refused (their inputs and answers do not correspond). Nothing is
written.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from progsynth.compare.representations import SITES, Snapshot, snapshot
from progsynth.compare.similarity import similarity_matrices
from progsynth.errors import ConfigError, NotApplicableError, RunError
from progsynth.interp.extract import extract, load_params
from progsynth.interp.network import hidden_activations
from progsynth.runs.config import RunConfig
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import CONFIG, RunStore, first_step_reaching
from progsynth.slt.run_llc import load_llc
from progsynth.tasks import task_to_dict
from progsynth.tasks.common import check_int, check_seed, sample_rows

__all__ = ["CompareConfig", "RunFacts", "Comparison", "find_runs", "common_parent", "compare_runs", "effective_parameters",
           "frequency_test", "THRESHOLD", "SIMULATIONS", "MEASURES_BY_NAME"]

THRESHOLD = 0.99
"""Train (held-out) accuracy from which a run counts as having fitted its training set (generalised)."""
SIMULATIONS = 10_000
"""Draws of the frequency-uniformity test's null distribution."""
MEASURES_BY_NAME = ("cka", "knn", "stitching")
"""The representation similarities, in the order reported."""

ProgressFn = Callable[[int, int, str], None]
"""Called as (units done, units in all, what): the final comparison, then each common step."""


@dataclass(frozen=True)
class CompareConfig:
    """Settings of a comparison (the CLI maps onto these one to one)."""

    inputs: int = 800
    """Data rows the representations are read on (drawn with ``seed``; all when fewer). The cost of
    each comparison grows as inputs², the precision of the stitching fit with the training rows
    among them; the default keeps 8 runs × 200 checkpoints of the quick preset within two minutes
    on 2 cores (``benchmarks/compare.py``)."""
    k: int = 10
    """Neighbours of the mutual k-NN alignment (Huh et al.'s default)."""
    seed: int = 0
    """Seeds the rows and the uniformity test's simulations."""
    ridge: float = 0.01
    """Ridge of the stitching fit, relative to the mean eigenvalue of the source's centred fit rows
    (``similarity.linear_stitching``). A few hundred fit rows for hundreds of hidden units leave an
    unregularised map free to interpolate the fit rows, and its held-out R² then measures the
    overfit rather than the representations (README → Results gives the figures)."""
    over_training: bool = True
    """Also compare at every checkpoint step the runs share."""

    def validate(self) -> None:
        """ConfigError naming the first bad field."""
        check_int("inputs", self.inputs, 2, 10**7)
        check_int("k", self.k, 1)
        check_seed("seed", self.seed)
        if isinstance(self.ridge, bool) or not isinstance(self.ridge, (int, float)) or not 0 <= self.ridge < math.inf:
            raise ConfigError(f"ridge must be a finite number ≥ 0, got {self.ridge!r}")
        if not isinstance(self.over_training, bool):
            raise ConfigError(f"over_training must be True or False, got {self.over_training!r}")


@dataclass(frozen=True)
class RunFacts:
    """One run at its compared checkpoint."""

    name: str
    run: str
    step: int
    total_steps: int
    still_training: bool
    model: str
    optimizer: str
    seed: int
    label_noise: float
    steps_per_epoch: int
    fitted_step: int | None
    generalised_step: int | None
    train_accuracy: float
    test_accuracy: float
    weight_norm: float
    parameters: int
    effective_parameters: int | None
    llc: float | None
    llc_stderr: float | None
    program: dict[str, Any] | None
    """relabelling, key_frequencies, description_bits, lookup_table_bits, verdict_kind, explained
    (None when no Fourier program applies to the task)."""


@dataclass(frozen=True, eq=False)
class Comparison:
    """Everything ``compare_runs`` found (module docstring)."""

    runs: list[RunFacts]
    rows: int
    """Data rows the representations were read on."""
    agreement: np.ndarray = field(repr=False)
    """(m, m) held-out agreement of the answers."""
    similarity: dict[str, dict[str, np.ndarray]] = field(repr=False)
    """measure → site → (m, m); stitching[i, j] maps run i's site onto run j's."""
    over_training: dict[str, Any] = field(repr=False)
    frequencies: dict[str, Any] | None
    grokking: dict[str, Any]
    groups: list[dict[str, Any]]
    random_labels: list[dict[str, Any]] | None
    notes: list[str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: matrices as nested lists (NaN as None)."""
        def clean(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return clean(value.tolist())
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        return clean({"runs": [asdict(r) for r in self.runs], "rows": self.rows, "agreement": self.agreement,
                      "similarity": self.similarity, "over_training": self.over_training,
                      "frequencies": self.frequencies, "grokking": self.grokking, "groups": self.groups,
                      "random_labels": self.random_labels, "notes": self.notes, "seconds": self.seconds})


def find_runs(paths: list[str | Path]) -> list[Path]:
    """The run directories named: each path is a run (it holds config.json) or a directory whose
    immediate subdirectories holding a config.json are taken, sorted. RunError for a path that is
    neither, and when fewer than two runs are found."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / CONFIG).is_file():
            found.append(path)
        elif path.is_dir():
            inner = sorted(p for p in path.iterdir() if (p / CONFIG).is_file())
            if not inner:
                raise RunError(f"{str(path)!r} is neither a run directory nor a directory holding runs (no "
                               f"{CONFIG} in it or in its subdirectories)")
            found += inner
        else:
            raise RunError(f"run directory {str(path)!r} does not exist")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if len(unique) < 2:
        raise RunError(f"compare needs at least two runs, found {len(unique)} in {[str(p) for p in paths]}")
    return [next(p for p in found if p.resolve() == u) for u in unique]


def common_parent(runs: list[Path]) -> Path:
    """The deepest directory holding every run (never one of the runs itself)."""
    parents = [p.resolve().parent.parts for p in runs]
    common: list[str] = []
    for items in zip(*parents):
        if len(set(items)) != 1:
            break
        common.append(items[0])
    return Path(*common) if common else Path("/")


def _names(runs: list[Path]) -> list[str]:
    """Short, distinct display names: the paths relative to their common parent."""
    parent = common_parent(runs)
    return [str(p.resolve().relative_to(parent)) for p in runs]


def _same_task(runs: list[Path], configs: list[RunConfig]) -> None:
    first = task_to_dict(configs[0].task)
    for run, config in zip(runs[1:], configs[1:]):
        if task_to_dict(config.task) != first:
            raise ConfigError(f"runs {str(runs[0])!r} ({configs[0].task.name}) and {str(run)!r} ({config.task.name}) "
                              "are of different tasks: their inputs and answers do not correspond; compare runs of "
                              "one task")


def _experiment_key(config: RunConfig) -> str:
    data = config.to_dict()
    data.pop("seed")
    return json.dumps(data, sort_keys=True)


def effective_parameters(experiment: Experiment, params: dict[str, torch.Tensor]) -> int | None:
    """Parameters left once the hidden units silent on every training input are removed (ReLU units
    that never fire; x² units whose input is zero there): each takes its incoming weights and bias
    and its outgoing weights with it, and the function on the training set is unchanged. Only the
    layer the analyses read (``interp.network.hidden_activations``) is counted; the other
    degeneracies (duplicate units, constant units, slt.degeneracy) are not. None for a model whose
    hidden units are not read there."""
    name = experiment.config.model.name
    activations = hidden_activations(experiment, params)[experiment.data.train_idx]
    silent = int((activations.abs().amax(0) == 0).sum())
    if name == "transformer":
        per_unit = params["W_in"].shape[0] + params["W_out"].shape[1] + (1 if "b_in" in params else 0)
    elif name == "gromov":
        per_unit = params["W_in"].shape[0] + params["W_out"].shape[1]
    elif name == "mlp":
        last = sum(1 for key in params if key.startswith("b_")) - 1
        if last < 0:
            return None
        per_unit = params[f"W_{last}"].shape[0] + 1 + params["W_U"].shape[1]
    else:
        return None
    return sum(t.numel() for t in params.values()) - silent * per_unit


def _llc_at(run: Path, step: int) -> tuple[float | None, float | None]:
    """λ̂ and its standard error at ``step`` from the run's newest llc row there (``slt.run_llc``)."""
    table = load_llc(run)
    if table.empty or step not in set(table["step"]):
        return None, None
    row = table[table["step"] == step].iloc[-1]
    return float(row["llc"]), float(row.get("llc_stderr", math.nan))


def _program(experiment: Experiment, params: dict[str, torch.Tensor], step: int) -> dict[str, Any] | None:
    try:
        e = extract(experiment, params, step)
    except NotApplicableError:
        return None
    return {"relabelling": e.program.relabelling.name, "n": e.grid.n, "key_frequencies": list(e.key_frequencies),
            "description_bits": e.description_bits, "lookup_table_bits": e.lookup_table_bits,
            "verdict_kind": e.verdict_kind, "explained": e.fit.explained}


def _facts(name: str, run: Path, store: RunStore, config: RunConfig, experiment: Experiment, step: int,
           params: dict[str, torch.Tensor]) -> RunFacts:
    metrics = store.metrics()
    evaluated = experiment.evaluate(params)
    total = config.epochs * experiment.steps_per_epoch
    llc, llc_stderr = _llc_at(run, step)
    return RunFacts(
        name=name, run=str(run), step=step, total_steps=total, still_training=step < total,
        model=config.model.name, optimizer=config.optim.name, seed=config.seed,
        label_noise=config.label_noise, steps_per_epoch=experiment.steps_per_epoch,
        fitted_step=first_step_reaching(metrics, "train_accuracy", THRESHOLD),
        generalised_step=first_step_reaching(metrics, "test_accuracy", THRESHOLD),
        train_accuracy=evaluated["train_accuracy"], test_accuracy=evaluated["test_accuracy"],
        weight_norm=evaluated["weight_norm"], parameters=sum(t.numel() for t in params.values()),
        effective_parameters=effective_parameters(experiment, params), llc=llc, llc_stderr=llc_stderr,
        program=_program(experiment, params, step))


def _off_diagonal_mean(matrix: np.ndarray) -> float:
    m = matrix.shape[0]
    values = matrix[~np.eye(m, dtype=bool)]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


class _Measures:
    """The pairwise measures of a list of snapshots (shared by the final comparison and each step)."""

    def __init__(self, rows: torch.Tensor, test_idx: torch.Tensor, train_idx: torch.Tensor, k: int, ridge: float):
        self.test_idx = test_idx
        self.ridge = ridge
        in_train = torch.isin(rows, train_idx)
        self.fit = in_train.nonzero().flatten()
        self.eval = (~in_train).nonzero().flatten()
        self.k = min(k, len(rows) - 1)

    def agreement(self, snaps: list[Snapshot]) -> np.ndarray:
        answers = [s.answers[self.test_idx] for s in snaps]
        m = len(snaps)
        out = np.full((m, m), math.nan)
        if self.test_idx.numel():
            for i in range(m):
                for j in range(m):
                    out[i, j] = float((answers[i] == answers[j]).double().mean())
        return out

    def similarity(self, snaps: list[Snapshot]) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {name: {} for name in MEASURES_BY_NAME}
        stitch = self.fit.numel() >= 2 and self.eval.numel() >= 1
        for site in SITES:
            matrices = similarity_matrices([s.representations[site] for s in snaps], self.k,
                                           self.fit if stitch else None, self.eval if stitch else None, self.ridge)
            for name in MEASURES_BY_NAME:
                out[name][site] = matrices[name]
        return out


def frequency_test(key_sets: list[list[int]], halves: list[int], seed: int,
                   simulations: int = SIMULATIONS) -> dict[str, Any]:
    """Whether the runs' key frequencies are used uniformly (module docstring): counts per
    frequency, the observed statistic (most runs sharing one frequency) and its p-value."""
    counts = Counter(k for keys in key_sets for k in keys)
    observed = max(counts.values()) if counts else 0
    rng = np.random.default_rng(seed)
    simulated = np.zeros(simulations, dtype=np.int64)
    width = max(halves) if halves else 0
    tally = np.zeros((simulations, width + 1), dtype=np.int64)
    for keys, half in zip(key_sets, halves):
        if not keys:
            continue
        chosen = np.argsort(rng.random((simulations, half)), axis=1)[:, :len(keys)] + 1
        np.add.at(tally, (np.arange(simulations)[:, None], chosen), 1)
    simulated = tally.max(1) if width else simulated
    p_value = float((1 + (simulated >= observed).sum()) / (1 + simulations))
    preferred = sorted(k for k, c in counts.items() if c == observed) if observed else []
    sets = Counter(tuple(sorted(keys)) for keys in key_sets)
    return {"counts": {str(k): c for k, c in sorted(counts.items())}, "runs": len(key_sets),
            "sets": [{"frequencies": list(s), "runs": c} for s, c in sets.most_common()],
            "statistic": observed, "p_value": p_value, "preferred": preferred if p_value < 0.05 else [],
            "simulations": simulations}


def _groups(facts: list[RunFacts], cka: np.ndarray) -> list[dict[str, Any]]:
    """Per setting the runs differ in: each value's runs, speed and programs, CKA within and between."""
    out = []
    for setting in ("model", "optimizer", "label_noise"):
        values = [getattr(f, setting) for f in facts]
        if len(set(values)) < 2:
            continue
        same = np.equal.outer(np.array(values, dtype=object), np.array(values, dtype=object)).astype(bool)
        off = ~np.eye(len(facts), dtype=bool)
        within, between = cka[same & off], cka[~same]
        groups = []
        for value in dict.fromkeys(values):
            members = [f for f in facts if getattr(f, setting) == value]
            steps = [f.generalised_step for f in members if f.generalised_step is not None]
            groups.append({"value": value, "runs": [f.name for f in members], "generalised": len(steps),
                           "mean_generalised_step": float(np.mean(steps)) if steps else None,
                           "key_sets": [f.program["key_frequencies"] if f.program else None for f in members]})
        out.append({"setting": setting, "groups": groups,
                    "cka_within": float(np.nanmean(within)) if within.size else math.nan,
                    "cka_between": float(np.nanmean(between)) if between.size else math.nan})
    return out


def _random_labels(facts: list[RunFacts]) -> list[dict[str, Any]] | None:
    if not any(f.label_noise > 0 for f in facts):
        return None
    clean = [f.fitted_step / f.steps_per_epoch for f in facts if f.label_noise == 0 and f.fitted_step is not None]
    reference = float(np.mean(clean)) if clean else None
    rows = []
    for f in sorted(facts, key=lambda f: (f.label_noise, f.name)):
        epochs = None if f.fitted_step is None else f.fitted_step / f.steps_per_epoch
        program = f.program
        has_program = program is not None and program["verdict_kind"] in ("program", "partial")
        rows.append({"run": f.name, "label_noise": f.label_noise, "fit_epochs": epochs,
                     "fit_ratio": None if epochs is None or not reference else epochs / reference,
                     "heldout_accuracy": f.test_accuracy, "train_accuracy": f.train_accuracy,
                     "weight_norm": f.weight_norm, "llc": f.llc, "llc_stderr": f.llc_stderr,
                     "parameters": f.parameters, "effective_parameters": f.effective_parameters,
                     "program_bits": program["description_bits"] if has_program else None,
                     "verdict": program["verdict_kind"] if program else None,
                     "lookup_table_bits": program["lookup_table_bits"] if program else None})
    return rows


def compare_runs(paths: list[str | Path], config: CompareConfig = CompareConfig(),
                 progress: ProgressFn | None = None) -> Comparison:
    """Compare the runs named by ``paths`` (``find_runs``) as the module docstring describes."""
    config.validate()
    started = time.perf_counter()
    runs = find_runs(paths)
    stores = [RunStore.open(run) for run in runs]
    configs = [store.config() for store in stores]
    _same_task(runs, configs)
    names = _names(runs)
    experiments: dict[str, Experiment] = {}
    for c in configs:
        experiments.setdefault(_experiment_key(c), Experiment(c))
    experiment_of = [experiments[_experiment_key(c)] for c in configs]
    data = experiment_of[0].data
    rows = sample_rows(len(data), config.inputs, config.seed)
    measures = _Measures(rows, data.test_idx, data.train_idx, config.k, config.ridge)
    steps_of = [store.checkpoint_steps() for store in stores]
    for run, steps in zip(runs, steps_of):
        if not steps:
            raise RunError(f"run {str(run)!r} has no scheduled checkpoints to compare")
    common = sorted(set.intersection(*(set(s) for s in steps_of))) if config.over_training else []
    total_units = 1 + len(common)
    facts, finals = [], []
    for name, run, store, c, experiment, steps in zip(names, runs, stores, configs, experiment_of, steps_of):
        params = load_params(store, experiment, steps[-1])
        facts.append(_facts(name, run, store, c, experiment, steps[-1], params))
        finals.append(snapshot(experiment, params, rows))
        del params
    if progress:
        progress(1, total_units, "final checkpoints")
    notes = [f"{f.name} is still training: compared at its newest checkpoint, step {f.step} of {f.total_steps}"
             for f in facts if f.still_training]
    for site in SITES:
        width = max(s.representations[site].shape[1] for s in finals)
        if measures.fit.numel() < 2 * width:
            notes.append(f"stitching at the {site} site is fitted on {measures.fit.numel()} training rows for up to "
                         f"{width} features: with fewer than two rows per feature the fit leans on the ridge "
                         f"({config.ridge:g}); raise --inputs for a firmer R²")
    agreement = measures.agreement(finals)
    similarity = measures.similarity(finals)
    over: dict[str, Any] = {"steps": common, "agreement": [],
                            **{f"{m}_{s}": [] for m in MEASURES_BY_NAME for s in SITES}}
    for i, step in enumerate(common, 2):
        snaps = []
        for store, experiment in zip(stores, experiment_of):
            snaps.append(snapshot(experiment, load_params(store, experiment, step), rows))
        over["agreement"].append(_off_diagonal_mean(measures.agreement(snaps)))
        for measure, by_site in measures.similarity(snaps).items():
            for site, matrix in by_site.items():
                over[f"{measure}_{site}"].append(_off_diagonal_mean(matrix))
        if progress:
            progress(i, total_units, f"step {step}")
    with_program = [f for f in facts if f.program is not None]
    frequencies = (frequency_test([f.program["key_frequencies"] for f in with_program],
                                  [f.program["n"] // 2 for f in with_program], config.seed)
                   if with_program else None)
    cka_hidden = similarity["cka"]["hidden"]
    others = ~np.eye(len(facts), dtype=bool)
    closeness = [float(np.nanmean(cka_hidden[i][others[i]])) for i in range(len(facts))]
    grokked = [(f.generalised_step, c) for f, c in zip(facts, closeness) if f.generalised_step is not None]
    rho = None
    if len(grokked) >= 3 and len({g for g, _ in grokked}) > 1:
        rho = float(spearmanr([g for g, _ in grokked], [c for _, c in grokked]).statistic)
    grokking = {"runs": [f.name for f in facts], "generalised_step": [f.generalised_step for f in facts],
                "closeness": closeness, "spearman": rho}
    return Comparison(facts, len(rows), agreement, similarity, over, frequencies, grokking,
                      _groups(facts, cka_hidden), _random_labels(facts), notes, time.perf_counter() - started)
