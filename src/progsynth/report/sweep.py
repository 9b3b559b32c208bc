"""The sweep page (``progsynth sweep-report SWEEP``): every run of a sweep directory on one
self-contained page — a phase diagram, time to generalise against data fraction, the key
frequencies the runs found, and one row per grid point and seed.

A sweep directory is a spec plus run directories (DESIGN.md; written by ``progsynth sweep``)::

    sweep.json        {"version": 1, "base": <config.json>, "grid": {field: [values, ...]}, "seeds": [...], ...}
    <point>/          one per grid point
      point.json      {"name": <point>, "values": {field: value, ...}}
      seed-N/         a run directory (``runs.store.RunStore``), with stop.json once it stopped
      failed.json     only when the point failed: {"message": ..., "seeds": [...]}

Phases (Liu et al. 2022, REFERENCE §5; thresholds in ``PhaseCriteria``). A split *reaches* at the
first logged step at which its accuracy is ≥ ``reach`` (0.9). With t_train and t_test those steps:

- **comprehension**: both reach and t_test − t_train < ``gap`` (1,000 steps);
- **grokking**: both reach and t_test − t_train ≥ ``gap``;
- **memorisation**: only the training split reaches;
- **confusion**: the training split does not reach (in practice neither does the test split).

Liu et al. give each run a budget of 10⁵ steps; here a run's budget is its own (``epochs``). A run
counts as *unfinished* while it has no ``stop.json`` or stopped because it was interrupted
(resumable), and as *failed* when it stopped on an error, its directory cannot be read, or its
point has a ``failed.json``; its phase so far is kept beside it (``RunPhase.metrics_phase``).
A grid point's cell shows the phase of most of its seeds (a tie goes to the phase earlier in
``ORDER``) and the count of each phase. A grid point without a directory is unfinished, "not started".

The diagram's axes are two swept fields (``x``, ``y``; default the first two of the grid). Every
other swept field facets it: one diagram per combination of their values. With one swept field
the diagram is a single row; with none there is no diagram, and the page says so.

Time to generalise: the first logged step with test accuracy ≥ ``generalised`` (0.99, the
threshold of ``runs.config.GENERALISED_ACCURACY``), per point its mean, standard deviation (over
seeds, n − 1) and range over the seeds that generalised, against ``task.train_fraction`` when it is
swept (Power et al. 2022's figure), else against ``x``.

Key frequencies: the ``analysis = "interp"`` rows that ``progsynth analyze RUN`` writes into a
run's measures.jsonl carry the key frequencies read from its final checkpoint
(``interp.measures.load_measures``); the page lists them per run and counts how many runs use each.
"""

from __future__ import annotations

import itertools
import json
import math
import shlex
from collections import Counter
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import progsynth
from progsynth.errors import ConfigError, ProgsynthError, RunError, os_error
from progsynth.interp.measures import load_measures
from progsynth.report.figures import ReportFigure, to_svg
from progsynth.report.html import STYLE, _table
from progsynth.report.phases import _check_fraction
from progsynth.report.sweep_figures import frequency_counts_figure, generalisation_figure, value_label
from progsynth.runs.config import GENERALISED_ACCURACY, MAX_STEPS
from progsynth.runs.store import RunStore, atomic_write, first_step_reaching
from progsynth.runs.sweep import FAILED, POINT, point_name, read_json
from progsynth.runs.sweep import SPEC as SWEEP_SPEC
from progsynth.runs.train import SEED_DIR
from progsynth.tasks.common import check_int

__all__ = ["SWEEP_SPEC", "SWEEP_PAGE", "PHASES", "ORDER", "PhaseCriteria", "Classification", "classify_phase",
           "RunPhase", "Cell", "GeneralisationTime", "SweepPhases", "sweep_phases", "SweepReport",
           "write_sweep_report"]

SEED_PREFIX = SEED_DIR.format("")
"""A point's run directories are ``seed-N``."""
SWEEP_PAGE = "report.html"
"""The page's file name in the sweep directory when no ``out`` is given."""
DATA_FRACTION = "task.train_fraction"
"""The field that time to generalise is drawn against when it is swept."""

PHASES = ("comprehension", "grokking", "memorisation", "confusion")
"""Liu et al.'s phases, read from a run's metrics."""
UNFINISHED = "unfinished"
FAILED_PHASE = "failed"
ORDER = PHASES + (UNFINISHED, FAILED_PHASE)
"""Every phase a run can be given, in the order ties and tables use."""
CELL_COLOURS = {"comprehension": "#7bc67b", "grokking": "#5fa8d3", "memorisation": "#f2c14e",
                "confusion": "#e8877f", UNFINISHED: "#e4e4e4", FAILED_PHASE: "#8c8c8c"}
"""The phase diagram's cell colour of each phase."""


@dataclass(frozen=True)
class PhaseCriteria:
    """The thresholds of the phases (module docstring); invalid values are refused at construction."""

    reach: float = 0.9
    """Accuracy at which a split reaches (Liu et al.: 0.9), in (0, 1]."""
    gap: int = 1000
    """Steps from train reaching to test reaching at and beyond which the run grokked rather than
    comprehended (Liu et al.: 10³), an integer ≥ 1."""
    generalised: float = GENERALISED_ACCURACY
    """Test accuracy at which a run counts as generalised for time to generalise (0.99), in (0, 1]."""
    grokked_loss: float = 0.1
    """Test loss under which a run counts as grokked in Nanda et al.'s sense (their grokking epoch:
    test loss < 0.1), reported beside time to generalise; a finite number > 0."""

    def __post_init__(self) -> None:
        _check_fraction("reach (the accuracy at which a split reaches)", self.reach, upper_inclusive=True)
        check_int("gap (steps from train reaching to test reaching)", self.gap, 1, MAX_STEPS)
        _check_fraction("generalised (the test accuracy that counts as generalised)", self.generalised,
                        upper_inclusive=True)
        if isinstance(self.grokked_loss, bool) or not isinstance(self.grokked_loss, (int, float)) \
                or not math.isfinite(self.grokked_loss) or self.grokked_loss <= 0:
            raise ConfigError(f"grokked_loss (the test loss under which a run grokked) must be a finite number "
                              f"> 0, got {self.grokked_loss!r}")


@dataclass(frozen=True)
class Classification:
    """A run's phase read from its metrics, and the steps it was read from."""

    phase: str
    """One of ``PHASES``."""
    train_step: int | None
    """First logged step with train accuracy ≥ ``reach`` (None: never)."""
    test_step: int | None
    """First logged step with test accuracy ≥ ``reach`` (None: never)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify_phase(metrics: pd.DataFrame, criteria: PhaseCriteria = PhaseCriteria()) -> Classification:
    """Liu et al.'s phase of a run from its metrics (``RunStore.metrics()``: ``step``,
    ``train_accuracy``, ``test_accuracy``), by the rules of the module docstring. A missing column
    never reaches."""
    train = first_step_reaching(metrics, "train_accuracy", criteria.reach)
    test = first_step_reaching(metrics, "test_accuracy", criteria.reach)
    if train is None:
        phase = "confusion"
    elif test is None:
        phase = "memorisation"
    else:
        phase = "comprehension" if test - train < criteria.gap else "grokking"
    return Classification(phase, train, test)


@dataclass(frozen=True)
class RunPhase:
    """One seed of one grid point: its phase, the steps it was read from, and how it ended."""

    point: str
    seed: int
    path: str | None
    """The run directory (None when it does not exist)."""
    status: str
    """'finished' (stop.json says budget or generalised), 'unfinished' or 'failed'."""
    phase: str
    """One of ``ORDER``: the metrics' phase when finished, else the status."""
    metrics_phase: str | None
    """The phase the metrics show so far (None: no metrics)."""
    train_step: int | None
    test_step: int | None
    generalised_step: int | None
    """First logged step with test accuracy ≥ ``generalised``."""
    grokked_step: int | None
    """First logged step with test loss < ``grokked_loss`` (Nanda et al.'s grokking epoch)."""
    last_step: int | None
    """The last logged step (None: no metrics)."""
    train_accuracy: float | None
    """Final train accuracy."""
    test_accuracy: float | None
    """Final test accuracy."""
    stop_reason: str | None
    """stop.json's reason, None when there is none."""
    message: str | None
    """Why it failed, or 'not started'."""
    key_frequencies: list[int] | None
    """Key frequencies of the final checkpoint from ``progsynth analyze`` (None: not analysed)."""
    relabelling: str | None
    key_step: int | None
    """The last checkpoint step the key frequencies' measures cover."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cell:
    """One grid point of the phase diagram."""

    point: str
    values: dict[str, Any]
    """The value of every swept field at this point."""
    phase: str
    """The phase of most of its seeds ('failed' for a failed point)."""
    counts: dict[str, int]
    """Seeds per phase, in ``ORDER``."""
    seeds: int
    tie: bool
    """True when another phase has as many seeds as ``phase``."""
    message: str | None
    """failed.json's message for a failed point, 'not started' for a point without a directory."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GeneralisationTime:
    """Time to generalise at one grid point, over the seeds that generalised."""

    point: str
    value: Any
    """The value of the field it is drawn against."""
    series: dict[str, Any]
    """The values of the other swept fields (one line of the figure per combination)."""
    seeds: int
    generalised: int
    """Seeds that reached ``generalised`` test accuracy."""
    unfinished: int
    """Seeds still training or not started (they may generalise later)."""
    failed: int
    """Failed seeds: left out of every other number here (their metrics stop short)."""
    mean: float | None
    std: float | None
    """Standard deviation over the seeds that generalised (n − 1; None with fewer than two)."""
    min: int | None
    max: int | None
    last_step: int | None
    """The last logged step over its seeds that did not fail: a lower bound on the time of a point
    that never generalised."""
    grokked: int = 0
    """Seeds whose test loss fell under ``grokked_loss``."""
    grokked_mean: float | None = None
    grokked_std: float | None = None
    """Mean and standard deviation (n − 1) of their first step under it."""
    grokked_min: int | None = None
    grokked_max: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class SweepPhases:
    """Every run of a sweep, classified; what the page shows (module docstring)."""

    sweep: Path
    spec: dict[str, Any] = field(repr=False)
    """sweep.json."""
    fields: list[str]
    """The swept fields: the grid's, then any other that a point.json sets."""
    x: str | None
    y: str | None
    facets: list[str]
    """The swept fields beyond x and y: one diagram per combination of their values."""
    along: str | None
    """The field time to generalise is drawn against (``task.train_fraction`` when swept, else x)."""
    criteria: PhaseCriteria
    cells: list[Cell]
    runs: list[RunPhase]
    times: list[GeneralisationTime]

    @property
    def counts(self) -> dict[str, int]:
        """Runs per phase, over the whole sweep (every phase in ``ORDER``, zeros included)."""
        counted = Counter(r.phase for r in self.runs)
        return {phase: counted.get(phase, 0) for phase in ORDER}

    @property
    def frequency_counts(self) -> list[dict[str, Any]]:
        """How many analysed runs use each key frequency: rows {relabelling, frequency, runs},
        most used first."""
        counted = Counter((r.relabelling, k) for r in self.runs if r.key_frequencies is not None
                          for k in r.key_frequencies)
        return [{"relabelling": rel, "frequency": k, "runs": n}
                for (rel, k), n in sorted(counted.items(), key=lambda item: (-item[1], str(item[0][0]), item[0][1]))]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"sweep": str(self.sweep), "fields": self.fields, "x": self.x, "y": self.y, "facets": self.facets,
                "along": self.along, "criteria": asdict(self.criteria), "counts": self.counts,
                "cells": [c.to_dict() for c in self.cells], "runs": [r.to_dict() for r in self.runs],
                "time_to_generalise": [t.to_dict() for t in self.times],
                "key_frequencies": self.frequency_counts,
                "analysed": sum(r.key_frequencies is not None for r in self.runs)}


# ---- reading a sweep directory -----------------------------------------------------------------
def read_spec(sweep: Path) -> dict[str, Any]:
    """sweep.json, checked: a grid of field → list of values, and seeds as a list of integers."""
    if not sweep.is_dir():
        raise RunError(f"sweep directory {str(sweep)!r} does not exist")
    file = sweep / SWEEP_SPEC
    if not file.is_file():
        raise RunError(f"{str(sweep)!r} is not a sweep directory: it has no {SWEEP_SPEC} (progsynth sweep writes one)")
    spec = read_json(file, "sweep spec")
    grid = spec.get("grid", {}) if isinstance(spec, dict) else None
    if not isinstance(grid, dict) or not all(isinstance(k, str) and isinstance(v, list) and v for k, v in grid.items()):
        raise RunError(f"{str(file)!r} is not a sweep spec: expected a JSON object whose grid maps each field to a "
                       f"non-empty list of values, got grid {str(grid)[:80]}")
    seeds = spec.get("seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise RunError(f"{str(file)!r}: seeds must be a list of integers, got {str(seeds)[:80]}")
    return spec


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _base_value(base: Any, dotted: str) -> Any:
    """The value of a dotted field (``optim.weight_decay``) in the base config dict, None when absent."""
    for part in dotted.split("."):
        if not isinstance(base, dict) or part not in base:
            return None
        base = base[part]
    return base


@dataclass(frozen=True)
class _Point:
    name: str
    values: dict[str, Any]
    directory: Path | None
    failed: dict[str, Any] | None


def _points(sweep: Path, spec: dict[str, Any]) -> list[_Point]:
    """The grid's points in grid order (with their directories where they exist), then any other
    point directory found."""
    on_disk: dict[str, _Point] = {}
    for directory in sorted(p for p in sweep.iterdir() if p.is_dir() and (p / POINT).is_file()):
        data = read_json(directory / POINT, "point file")
        if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
            raise RunError(f"{str(directory / POINT)!r} is not a point file: expected a JSON object with the point's "
                           "values as a mapping of field to value")
        failed = None
        if (directory / FAILED).is_file():
            try:
                failed = read_json(directory / FAILED, "failure record")
            except RunError as error:
                failed = {"message": str(error)}
            if not isinstance(failed, dict):
                failed = {"message": f"{FAILED} is not a JSON object"}
        name = data.get("name") if isinstance(data.get("name"), str) else directory.name
        on_disk[_canonical(data["values"])] = _Point(name, data["values"], directory, failed)
    grid = spec.get("grid", {})
    points = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        points.append(on_disk.pop(_canonical(values), None) or _Point(point_name(values), values, None, None))
    return points + list(on_disk.values())


def _seeds(spec: dict[str, Any], point: _Point) -> list[int]:
    seeds = set(spec.get("seeds", []))
    if point.directory is not None:
        for run in point.directory.glob(f"{SEED_PREFIX}*"):
            suffix = run.name[len(SEED_PREFIX):]
            if run.is_dir() and suffix.isascii() and suffix.isdigit():
                seeds.add(int(suffix))
    return sorted(seeds)


def _key_frequencies(run: Path) -> tuple[list[int] | None, str | None, int | None]:
    try:
        rows = load_measures(run)
    except ProgsynthError:
        return None, None, None
    if rows.empty:
        return None, None, None
    last = rows.iloc[-1]
    return [int(k) for k in last["key_frequencies"]], str(last["relabelling"]), int(last["step"])


def _final(metrics: pd.DataFrame, column: str) -> float | None:
    """The column's value at the last logged step (None when absent or not finite)."""
    if column not in metrics.columns:
        return None
    value = float(metrics.sort_values("step", kind="stable")[column].iloc[-1])
    return value if math.isfinite(value) else None


def _run_phase(point: _Point, seed: int, criteria: PhaseCriteria) -> RunPhase:
    """Read and classify one run (the module docstring's statuses); a run that cannot be read is
    failed, with the one-line error as its message."""
    run = point.directory / f"{SEED_PREFIX}{seed}" if point.directory is not None else None
    failed = point.failed
    if failed is not None and isinstance(failed.get("seeds"), list) and seed not in failed["seeds"]:
        failed = None
    message = None if failed is None else str(failed.get("message") or "the point failed (no message)")
    status = FAILED_PHASE if failed else UNFINISHED
    empty = RunPhase(point=point.name, seed=seed, path=None, status=status, phase=status, metrics_phase=None,
                     train_step=None, test_step=None, generalised_step=None, grokked_step=None, last_step=None, train_accuracy=None,
                     test_accuracy=None, stop_reason=None, message=message or "not started", key_frequencies=None,
                     relabelling=None, key_step=None)
    if run is None or not run.is_dir():
        return empty
    try:
        store = RunStore(run)
        metrics, stop = store.metrics(), store.stop()
    except ProgsynthError as error:
        return RunPhase(**{**asdict(empty), "path": str(run), "status": FAILED_PHASE, "phase": FAILED_PHASE,
                           "message": message or str(error)})
    reason = stop["reason"] if stop else None
    if failed is not None or reason == "failed":
        status = FAILED_PHASE
        message = message or str(stop.get("message") or "training failed (no message)")
    elif reason in ("budget", "generalised"):
        status = "finished"
    else:
        status = UNFINISHED
        message = ("interrupted (resumable)" if reason == "interrupted" else
                   "still training, or stopped without a stop.json")
    has_metrics = not metrics.empty and "step" in metrics.columns
    if status == "finished" and not has_metrics:
        status, message = FAILED_PHASE, f"stopped ({reason}) without logging any metrics"
    c = classify_phase(metrics, criteria) if has_metrics else None
    keys, relabelling, key_step = _key_frequencies(run)
    return RunPhase(
        point=point.name, seed=seed, path=str(run), status=status,
        phase=c.phase if status == "finished" else status, metrics_phase=c.phase if c else None,
        train_step=c.train_step if c else None, test_step=c.test_step if c else None,
        generalised_step=first_step_reaching(metrics, "test_accuracy", criteria.generalised) if c else None,
        grokked_step=first_step_reaching(metrics, "test_loss", criteria.grokked_loss, below=True) if c else None,
        last_step=int(metrics["step"].max()) if c else None,
        train_accuracy=_final(metrics, "train_accuracy") if c else None,
        test_accuracy=_final(metrics, "test_accuracy") if c else None, stop_reason=reason, message=message,
        key_frequencies=keys, relabelling=relabelling, key_step=key_step)


def _cell(point: _Point, values: dict[str, Any], runs: list[RunPhase]) -> Cell:
    counted = Counter(r.phase for r in runs)
    counts = {phase: counted[phase] for phase in ORDER if counted[phase]}
    if point.failed is not None:
        return Cell(point.name, values, FAILED_PHASE, counts, len(runs), False,
                    str(point.failed.get("message") or "the point failed (no message)"))
    if not counts:
        return Cell(point.name, values, UNFINISHED, counts, 0, False,
                    "not started" if point.directory is None else "no seeds")
    top = max(counts.values())
    leaders = [p for p in ORDER if counts.get(p) == top]
    message = "not started" if point.directory is None else None
    return Cell(point.name, values, leaders[0], counts, len(runs), len(leaders) > 1, message)


def _sort_key(value: Any) -> tuple:
    """Numbers in numeric order before anything else, in the order of their text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, value_label(value))


def _summary(steps: list[int | None]) -> tuple[int, float | None, float | None, int | None, int | None]:
    """(count, mean, std with n − 1, min, max) of the steps that are not None."""
    values = np.array([s for s in steps if s is not None], dtype=float)
    if not values.size:
        return 0, None, None, None, None
    return (int(values.size), float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else None,
            int(values.min()), int(values.max()))


def _times(cells: list[Cell], runs: list[list[RunPhase]], along: str | None) -> list[GeneralisationTime]:
    """Time to generalise at each point (``cells[i]``, seeds ``runs[i]``) against ``along``."""
    if along is None:
        return []
    times = []
    for c, seeds in zip(cells, runs):
        kept = [r for r in seeds if r.status != FAILED_PHASE]
        steps = _summary([r.generalised_step for r in kept])
        lasts = [r.last_step for r in kept if r.last_step is not None]
        grokked = _summary([r.grokked_step for r in kept])
        times.append(GeneralisationTime(
            c.point, c.values.get(along), {k: v for k, v in c.values.items() if k != along}, len(seeds),
            steps[0], sum(r.status == UNFINISHED for r in seeds), len(seeds) - len(kept), *steps[1:],
            max(lasts) if lasts else None, *grokked))
    return times


def sweep_phases(sweep: str | Path, x: str | None = None, y: str | None = None,
                 criteria: PhaseCriteria = PhaseCriteria()) -> SweepPhases:
    """Read every run of ``sweep`` and classify it (module docstring). ``x`` and ``y`` are swept
    fields (default: the first two of the grid; with ``x`` alone, ``y`` is the first other field)."""
    sweep = Path(sweep)
    spec = read_spec(sweep)
    points = _points(sweep, spec)
    fields = list(spec.get("grid", {}))
    for p in points:
        fields += [k for k in p.values if k not in fields]
    for name, value in (("x", x), ("y", y)):
        if value is not None and value not in fields:
            raise ConfigError(f"--{name} {value!r} is not a swept field of {str(sweep)!r}; swept: "
                              + (", ".join(fields) if fields else "none (the sweep has a single point)"))
    if x is not None and x == y:
        raise ConfigError(f"--x and --y are both {x!r}; give two different swept fields")
    rest = [f for f in fields if f not in (x, y)]
    x = x if x is not None else (rest.pop(0) if rest else None)
    y = y if y is not None else (rest.pop(0) if rest else None)
    if x is None and y is not None:
        x, y = y, None
    base = spec.get("base")
    cells, runs = [], []
    for p in points:
        values = {f: p.values[f] if f in p.values else _base_value(base, f) for f in fields}
        runs.append([_run_phase(p, seed, criteria) for seed in _seeds(spec, p)])
        cells.append(_cell(p, values, runs[-1]))
    along = DATA_FRACTION if DATA_FRACTION in fields else x
    return SweepPhases(sweep, spec, fields, x, y, rest, along, criteria, cells, [r for seeds in runs for r in seeds],
                       _times(cells, runs, along))


# ---- the page ----------------------------------------------------------------------------------
SWEEP_STYLE = """
table.diagram td.cell { text-align: center; vertical-align: middle; min-width: 7.5em; border: 2px solid #fff; padding: 0.4em 0.5em; }
table.diagram td.cell b { display: block; } table.diagram td.cell small { display: block; color: #333; line-height: 1.3; }
table.diagram td.failed, table.diagram td.failed small { color: #fff; }
table.diagram th.axis { color: #555; font-weight: normal; font-style: italic; }
table.diagram caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
.note { background: #f6f8fa; border-left: 4px solid #5fa8d3; padding: 0.4em 1em; }
"""
"""What the sweep page adds to the shared style sheet."""


@dataclass(frozen=True, eq=False)
class SweepReport:
    """What ``write_sweep_report`` wrote."""

    path: Path
    figures: list[str]
    """Names of the figures in the page, in order."""
    phases: SweepPhases = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the page, its figures, counts per phase, the cells (and everything else
        ``SweepPhases.to_dict`` holds)."""
        return {"report": str(self.path), "figures": self.figures, **self.phases.to_dict()}


def _step(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _cell_html(cell: Cell | None) -> str:
    if cell is None:
        return "<td class=cell>—</td>"
    colour = CELL_COLOURS[cell.phase]
    css = "cell failed" if cell.phase == FAILED_PHASE else "cell"
    seeds = max(cell.seeds, 1)
    head = f"{cell.phase} {cell.counts.get(cell.phase, 0)}/{seeds}" if cell.seeds else cell.phase
    lines = [f"{p} {n}/{seeds}" for p, n in cell.counts.items() if p != cell.phase]
    if cell.tie:
        head += " (tie)"
    if cell.message:
        lines.append(cell.message)
    small = "".join(f"<small>{escape(line)}</small>" for line in lines)
    return (f'<td class="{css}" style="background:{colour}" title="{escape(cell.point)}"><b>{escape(head)}</b>'
            f"{small}</td>")


def _diagrams(s: SweepPhases) -> str:
    """One HTML table per facet: x across, y down (largest at the top)."""
    if s.x is None:
        return ("<p class=note>The sweep sweeps no field, so there is no phase diagram: its one point is in the "
                "table of runs below.</p>")
    facets: dict[str, list[Cell]] = {}
    for c in s.cells:
        facets.setdefault(_canonical({f: c.values.get(f) for f in s.facets}), []).append(c)
    parts = []
    for cells in facets.values():
        xs = sorted({_canonical(c.values.get(s.x)): c.values.get(s.x) for c in cells}.values(), key=_sort_key)
        ys = (sorted({_canonical(c.values.get(s.y)): c.values.get(s.y) for c in cells}.values(), key=_sort_key,
                     reverse=True) if s.y is not None else [None])
        at = {(_canonical(c.values.get(s.x)), _canonical(c.values.get(s.y) if s.y else None)): c for c in cells}
        caption = ", ".join(f"{f} = {value_label(cells[0].values.get(f))}" for f in s.facets)
        corner = f"{s.y} ↓ · {s.x} →" if s.y is not None else f"{s.x} →"
        head = f"<th class=axis>{escape(corner)}</th>" + "".join(f"<th>{escape(value_label(v))}</th>" for v in xs)
        rows = "".join(
            f"<tr><th>{escape(value_label(yv)) if s.y is not None else ''}</th>"
            + "".join(_cell_html(at.get((_canonical(xv), _canonical(yv)))) for xv in xs) + "</tr>"
            for yv in ys)
        parts.append(f"<table class=diagram>{f'<caption>{escape(caption)}</caption>' if caption else ''}"
                     f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return "".join(parts)


def _phases_section(s: SweepPhases) -> str:
    c = s.criteria
    swatches = " ".join(f'<span class="swatch" style="background:{CELL_COLOURS[p]}"></span>{escape(p)}'
                        for p in ORDER)
    counts = ", ".join(f"{p} {n}" for p, n in s.counts.items() if n) or "no runs"
    facets = (f" Each combination of {', '.join(s.facets)} has a diagram of its own." if s.facets else "")
    return ("<section id=phases><h2>Phase diagram</h2>"
            f"<p>Each cell is one grid point: the phase of most of its seeds and how many seeds showed each "
            f"phase (Liu et al. 2022's criteria). Runs: {escape(counts)}.{escape(facets)}</p>"
            + _diagrams(s)
            + f"<p>{swatches}</p>"
            + f"<p class=meta>A split <b>reaches</b> at the first logged step at which its accuracy is ≥ {c.reach:g}. "
              f"<b>Comprehension</b>: train and test both reach, test less than {c.gap:,} steps after train "
              f"(t<sub>test</sub> − t<sub>train</sub> &lt; {c.gap:,}). <b>Grokking</b>: both reach, test {c.gap:,} "
              "or more steps after train. <b>Memorisation</b>: only train reaches. <b>Confusion</b>: train does "
              f"not reach. The thresholds are Liu et al.'s (accuracy 0.9, gap 10³ steps; change them with "
              "<code>--reach</code> and <code>--gap</code>); they gave every run 10⁵ steps, here each run has its "
              "own budget. A run with no <code>stop.json</code>, or one interrupted, is <b>unfinished</b>; one "
              "stopped on an error, unreadable, or of a point with <code>failed.json</code> is <b>failed</b>. A "
              "tie goes to the phase named first in the legend.</p></section>")


def _generalisation_section(s: SweepPhases, figure: ReportFigure | None) -> str:
    if s.along is None:
        return ""
    c = s.criteria
    against = (f"the data fraction <code>{escape(s.along)}</code>" if s.along == DATA_FRACTION else
               f"<code>{escape(s.along)}</code> (the x field: <code>{DATA_FRACTION}</code> is not swept)")
    rows = []
    for t in s.times:
        series = ", ".join(f"{k}={value_label(v)}" for k, v in t.series.items())
        if t.generalised:
            spread = f"{_step(t.min)}–{_step(t.max)}"
        elif t.unfinished:
            spread = f"not yet ({t.unfinished} unfinished)"
        elif t.failed == t.seeds:
            spread = "failed"
        else:
            spread = "never" + (f" (by step {_step(t.last_step)})" if t.last_step is not None else "")
        grokked = (f"{_step(t.grokked_mean)} ± {_step(t.grokked_std)} ({t.grokked}/{t.seeds})" if t.grokked > 1 else
                   f"{_step(t.grokked_mean)} ({t.grokked}/{t.seeds})" if t.grokked else "—")
        rows.append([value_label(t.value), series, f"{t.generalised}/{t.seeds}", _step(t.mean), _step(t.std), spread,
                     grokked])
    figure_html = (f"<figure>{to_svg(figure)}<figcaption>{escape(figure.caption)}</figcaption></figure>"
                   if figure is not None else "<p class=note>No run has logged metrics yet, so there is nothing "
                                              "to draw.</p>")
    return (f"<section id=generalisation><h2>Time to generalise</h2><p>The first logged step at which test "
            f"accuracy is ≥ {c.generalised:g} (generalised), against {against}: mean and standard deviation over "
            "the seeds that generalised, and their range. The last column is Nanda et al.'s grokking step, the "
            f"first logged step with test loss &lt; {c.grokked_loss:g}: mean ± standard deviation over the seeds "
            "that reached it. Failed runs are left out.</p>" + figure_html
            + _table([s.along, "other fields", "generalised", "mean step", "std", "min–max",
                      f"test loss < {c.grokked_loss:g}"], rows, frozenset({2, 3, 4}))
            + "</section>")


def _frequencies_section(s: SweepPhases, figure: ReportFigure | None) -> str:
    analysed = [r for r in s.runs if r.key_frequencies is not None]
    if not analysed:
        return ("<section id=frequencies><h2>Key frequencies</h2><p class=note>No run of this sweep has its key "
                "frequencies extracted yet. <code>progsynth analyze RUN</code> adds them to a run (e.g. "
                f"<code>progsynth analyze {escape(shlex.quote(str(s.sweep / '<point>' / 'seed-0')))}</code>), or "
                "run the sweep with <code>progsynth sweep --analyze</code>.</p></section>")
    per_run = [[r.point, str(r.seed), ", ".join(map(str, r.key_frequencies)) or "none", r.relabelling or "",
                _step(r.key_step)] for r in analysed]
    counts = [[c["relabelling"] or "", str(c["frequency"]), f"{c['runs']} of {len(analysed)}"]
              for c in s.frequency_counts]
    return ("<section id=frequencies><h2>Key frequencies</h2>"
            f"<p>{len(analysed)} of {len(s.runs)} runs have their key frequencies extracted (by "
            "<code>progsynth analyze RUN</code>, from each run's final checkpoint); the others are not analysed "
            "yet.</p>"
            + (f"<figure>{to_svg(figure)}<figcaption>{escape(figure.caption)}</figcaption></figure>"
               if figure is not None else "")
            + "<h3>How often each frequency appears</h3>"
            + _table(["relabelling", "frequency k", "runs"], counts, frozenset({1, 2}))
            + "<h3>Per run</h3>"
            + _table(["point", "seed", "key frequencies", "relabelling", "at step"], per_run, frozenset({1, 4}))
            + "</section>")


def _runs_section(s: SweepPhases) -> str:
    def accuracy(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    rows = []
    for r in s.runs:
        phase = r.phase if r.metrics_phase in (None, r.phase) else f"{r.phase} (so far: {r.metrics_phase})"
        gap = "—" if r.train_step is None or r.test_step is None else f"{r.test_step - r.train_step:,}"
        rows.append([r.point, str(r.seed), phase, _step(r.train_step), _step(r.test_step), gap,
                     _step(r.generalised_step), accuracy(r.train_accuracy), accuracy(r.test_accuracy),
                     _step(r.last_step), r.stop_reason or "none", r.message or ""])
    c = s.criteria
    return ("<section id=runs><h2>Every run</h2>"
            + _table(["point", "seed", "phase", f"train ≥ {c.reach:g}", f"test ≥ {c.reach:g}", "gap",
                      f"test ≥ {c.generalised:g}", "final train acc.", "final test acc.", "last step", "stop reason",
                      "note"], rows, frozenset({1, 3, 4, 5, 6, 7, 8, 9}))
            + "<p class=meta>Steps are the first logged step at which the accuracy reaches the threshold (— : never); "
              "stop reason from the run's <code>stop.json</code> (none: still training, or killed).</p></section>")


def render_sweep_html(s: SweepPhases, figures: dict[str, ReportFigure | None]) -> str:
    """The page for ``s`` with ``figures`` (name → ``ReportFigure`` or None) inlined as SVG."""
    title = f"progsynth sweep: {s.sweep.resolve().name}"
    spec = json.dumps(s.spec, indent=2, default=str)
    sections = [("phases", "Phase diagram"), ("generalisation", "Time to generalise"),
                ("frequencies", "Key frequencies"), ("runs", "Every run"), ("spec", "Sweep spec")]
    if s.along is None:
        sections.remove(("generalisation", "Time to generalise"))
    nav = "".join(f'<a href="#{name}">{escape(text)}</a>' for name, text in sections)
    seeds = len({r.seed for r in s.runs})
    body = "".join([
        f"<header><h1>{escape(title)}</h1><p class=meta>{escape(str(s.sweep))} · {len(s.cells)} points × {seeds} "
        f"seeds · swept: {escape(', '.join(s.fields) or 'nothing')} · progsynth {escape(progsynth.__version__)}</p>"
        f"<nav>{nav}</nav></header>",
        _phases_section(s),
        _generalisation_section(s, figures.get("generalisation")),
        _frequencies_section(s, figures.get("frequencies")),
        _runs_section(s),
        f"<section id=spec><h2>Sweep spec</h2><p>The sweep's <code>{SWEEP_SPEC}</code>:</p>"
        f"<pre>{escape(spec, quote=False)}</pre></section>",
    ])
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{STYLE}{SWEEP_STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def write_sweep_report(sweep: str | Path, out: str | Path | None = None, x: str | None = None, y: str | None = None,
                       criteria: PhaseCriteria = PhaseCriteria()) -> SweepReport:
    """Classify every run of ``sweep`` (``sweep_phases``) and write the page atomically to ``out``
    (default ``SWEEP/report.html``): a half-written page never appears."""
    s = sweep_phases(sweep, x, y, criteria)
    figures = {"generalisation": generalisation_figure(s.times, s.along, criteria.generalised) if s.along else None,
               "frequencies": frequency_counts_figure(s.frequency_counts, sum(r.key_frequencies is not None
                                                                                for r in s.runs))}
    page = render_sweep_html(s, figures)
    path = Path(out) if out is not None else s.sweep / SWEEP_PAGE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(error, "create", path.parent) from None
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return SweepReport(path, [name for name, f in figures.items() if f is not None], s)
