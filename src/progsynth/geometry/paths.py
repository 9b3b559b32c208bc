"""Straight paths between two checkpoints, in parameter space and in function space.

The representation problem: a memorising network and a generalising one can compute the same
function on the training data yet be different programs, and along a continuous path between them
nothing marks a canonical point where one program becomes the other. ``straight_path`` measures
that on the two straight paths between checkpoints A and B of the same architecture and task:

- the **parameter path** w(t) = (1 − t) w_A + t w_B, t ∈ [0, 1] (w(0) = w_A and w(1) = w_B
  exactly, so the endpoints reproduce the checkpoints' training metrics);
- the **function path** f(t) = (1 − t) f_A + t f_B, the convex combination of the two networks'
  outputs (logits) on every input. For a loss convex in the outputs (cross-entropy, squared error)
  this path has no barrier: L(f(t)) ≤ (1 − t) L(f_A) + t L(f_B).

At each of ``points`` evenly spaced t it records the train/test loss and accuracy and, for tasks on
Z_p, the mechanism measures of ``interp.measures``: restricted and excluded loss and the key energy
(read from the logits, so on both paths) and the Gini coefficient of the embedding's Fourier norms
(parameter path only). The key frequencies and relabelling are those of the endpoint whose
extracted Fourier program explains more of its held-out logits (B on a tie).

**Barrier** of a loss along a path: max over t of L(t) − [(1 − t) L(0) + t L(1)], the height above
the chord between the endpoints (≤ 0 when there is none), and where it peaks.

**Transitions and the switch point.** For each mechanism measure m, its progress u(t) =
(m(t) − m(0)) / (m(1) − m(0)) goes from 0 to 1. Its transition runs from the last t with u ≤ 0.1
before it first reaches u ≥ 0.9, to that first t; its width is the difference and its midpoint the
first t with u ≥ 0.5. A measure has no transition when it is *flat* (its endpoints differ by less
than ``FLAT_CHANGE``, 1 %, of the larger) or when it *wanders* (its endpoints differ by less than
``WANDER`` times its range along the path: it rises or falls in between, as a loss over a barrier,
more than it moves from A's value to B's). A **switch point** exists when some measure moves and
every moving measure's transition is at most ``SWITCH_WIDTH`` (a tenth of the path) wide: the path
then has a narrow place where one program becomes the other, at the median of their midpoints.
Otherwise the widest transition says over how much of the path the mechanism changes gradually;
when nothing moves, the endpoints share their mechanism. The resolution is the grid spacing
1/(points − 1).

``--align`` first permutes B's hidden units to match A's (``geometry.align``): between two seeds
the raw straight path crosses a region where units of A meet unrelated units of B, a weak
baseline. Between two steps of one run the units already correspond.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from progsynth.errors import ConfigError, NotApplicableError, ResourceError
from progsynth.geometry.checkpoints import CheckpointRef, open_checkpoint, same_setup
from progsynth.interp.extract import Extraction, extract
from progsynth.interp.fourier import DTYPE, gini
from progsynth.interp.frequencies import embedding_norms
from progsynth.interp.measures import logit_measures
from progsynth.interp.network import loss_on
from progsynth.interp.relabel import GroupGrid
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore

__all__ = ["ANALYSIS", "DEFAULT_POINTS", "MAX_POINTS", "SWITCH_WIDTH", "FLAT_CHANGE", "MECHANISM", "Transition",
           "Switch", "PathCurve", "PathResult", "straight_path", "transition", "barrier", "path_bytes",
           "common_program", "record_path", "load_paths"]

ANALYSIS = "path"
"""The ``analysis`` value of a path's row in measures.jsonl (written into A's run)."""
DEFAULT_POINTS = 51
"""Points along each path, endpoints included."""
MAX_POINTS = 1001
"""Most points a path may ask for."""
SWITCH_WIDTH = 0.1
"""Widest transition (as a fraction of the path) that still counts as a switch point."""
FLAT_CHANGE = 0.01
"""A measure whose endpoints differ by less than this fraction of the larger is flat."""
WANDER = 0.5
"""A measure whose endpoints differ by less than this fraction of its range along the path wanders."""
LOW, MID, HIGH = 0.1, 0.5, 0.9
"""Progress levels that bound a transition and mark its midpoint."""
MECHANISM = ("restricted_loss", "excluded_loss", "key_energy", "gini_embedding")
"""The mechanism measures whose transitions locate a switch point."""
MAX_MEMORY_BYTES = 4 << 30
"""Default memory budget of a path (``path_bytes`` above it is refused)."""

ProgressFn = Callable[[int, int], None]
"""Called as (points evaluated, points in all)."""


@dataclass(frozen=True)
class Transition:
    """Where along the path one measure moves from A's value to B's (module docstring)."""

    measure: str
    start: float
    end: float
    kind: str
    """'moves' (it has a transition), 'flat' or 'wanders' (module docstring)."""
    t_low: float | None
    t_high: float | None
    width: float | None
    midpoint: float | None
    overshoot: float
    """How far the progress u(t) leaves [0, 1] (0 for a monotone measure)."""


@dataclass(frozen=True)
class Switch:
    """Whether the mechanism measures switch together in a narrow interval (module docstring)."""

    exists: bool
    point: float | None
    width: float | None
    """The widest transition (None when no measure moves)."""
    text: str


def transition(measure: str, t: list[float], values: list[float]) -> Transition:
    """The transition of one measure along a path (module docstring)."""
    start, end = values[0], values[-1]
    change = end - start
    if not all(math.isfinite(v) for v in values) or abs(change) <= FLAT_CHANGE * max(abs(start), abs(end)):
        return Transition(measure, start, end, "flat", None, None, None, None, 0.0)
    u = [(v - start) / change for v in values]
    overshoot = max(0.0, max(u) - 1.0, -min(u))
    if abs(change) < WANDER * (max(values) - min(values)):
        return Transition(measure, start, end, "wanders", None, None, None, None, overshoot)
    high = next(i for i, x in enumerate(u) if x >= HIGH)  # exists: u[-1] == 1
    low = max(i for i in range(high + 1) if u[i] <= LOW)  # exists: u[0] == 0
    mid = next(i for i, x in enumerate(u) if x >= MID)
    return Transition(measure, start, end, "moves", t[low], t[high], t[high] - t[low], t[mid], overshoot)


def _switch(transitions: list[Transition]) -> Switch:
    if not transitions:
        return Switch(False, None, None, "no switch point measured: the path has no mechanism measures")
    moving = [tr for tr in transitions if tr.kind == "moves"]
    if not moving:
        return Switch(False, None, None, "no switch point: no mechanism measure moves from A's value to B's (the "
                                         "endpoints share their mechanism)")
    widest = max(moving, key=lambda tr: tr.width)
    if widest.width <= SWITCH_WIDTH:
        point = statistics.median(tr.midpoint for tr in moving)
        return Switch(True, point, widest.width,
                      f"switch point at t = {point:.2f}: every mechanism measure moves from A's value to B's "
                      f"within {widest.width:.2f} of the path")
    return Switch(False, None, widest.width,
                  f"no switch point: {widest.measure} moves from A's value to B's gradually, over "
                  f"t = {widest.t_low:.2f}–{widest.t_high:.2f} ({widest.width:.0%} of the path)")


def barrier(t: list[float], values: list[float]) -> tuple[float, float]:
    """(height, t at the peak) of ``values`` above the chord between its endpoints."""
    above = [v - ((1 - s) * values[0] + s * values[-1]) for s, v in zip(t, values)]
    i = max(range(len(above)), key=lambda j: above[j])
    return above[i], t[i]


@dataclass(frozen=True, eq=False)
class PathCurve:
    """One path's measures at every t."""

    kind: str
    """'parameter' or 'function'."""
    t: list[float]
    values: dict[str, list[float]] = field(repr=False)
    barriers: dict[str, dict[str, float]]
    """{'train_loss': {'height', 't'}, 'test_loss': ...}."""
    transitions: list[Transition]
    switch: Switch

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "values": self.values, "barriers": self.barriers,
                "transitions": [vars(tr) for tr in self.transitions], "switch": vars(self.switch)}


@dataclass(frozen=True, eq=False)
class PathResult:
    """Both straight paths between two checkpoints (module docstring)."""

    a: CheckpointRef
    b: CheckpointRef
    aligned: bool
    alignment: dict[str, Any] | None
    """``geometry.align.Alignment.to_dict()`` without the permutations, when aligned."""
    relabelling: str | None
    key_frequencies: list[int] | None
    key_from: str | None
    """'a' or 'b': whose extracted program gave the key frequencies (None without mechanism)."""
    note: str
    """Why mechanism measures are absent, or ''."""
    parameter: PathCurve
    function: PathCurve
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The measures.jsonl row (without ``step``): every value along both paths."""
        return {"analysis": ANALYSIS, "a": str(self.a), "b": str(self.b), "aligned": self.aligned,
                "alignment": self.alignment, "relabelling": self.relabelling,
                "key_frequencies": self.key_frequencies, "key_from": self.key_from, "note": self.note,
                "parameter": self.parameter.to_dict(), "function": self.function.to_dict(),
                "seconds": self.seconds}


def path_bytes(experiment: Experiment, mechanism: bool) -> int:
    """Estimated peak memory of a path: one forward pass over every data row (activations as wide
    as the widest layer, a few copies) plus, with mechanism measures, about eight float64 copies of
    all the logits (both endpoints, their combination, restricted, excluded, the 2-D transform)."""
    rows, classes = experiment.inputs.shape[0], experiment.data.n_classes
    m = experiment.config.model
    width = max(m.d_mlp, m.d_model, classes)
    need = rows * (width + classes) * 8 * 4
    if mechanism:
        need += rows * classes * 8 * 8
    return need


def common_program(a: Extraction, b: Extraction) -> tuple[Extraction, str]:
    """Of the two endpoints' extractions, the one both are measured with (its relabelling and key
    frequencies): the one whose program explains more of its held-out logits, B on a tie; and
    which endpoint it was ('a' or 'b')."""
    return (a, "a") if a.fit.explained > b.fit.explained else (b, "b")


def _function_row(experiment: Experiment, logits: torch.Tensor, grid: GroupGrid | None,
                  key: list[int] | None) -> dict[str, float]:
    row: dict[str, float] = {}
    for split, rows in (("train", experiment.data.train_idx), ("test", experiment.data.test_idx)):
        if rows.numel() == 0:
            row[f"{split}_loss"] = row[f"{split}_accuracy"] = math.nan
            continue
        row[f"{split}_loss"] = loss_on(experiment, logits, rows)
        row[f"{split}_accuracy"] = float((logits[rows].argmax(1) == experiment.labels[rows]).double().mean())
    if grid is not None:
        row.update(logit_measures(experiment, logits, grid, key))
    return row


def _parameter_row(experiment: Experiment, params: dict[str, torch.Tensor], grid: GroupGrid | None,
                   key: list[int] | None) -> dict[str, float]:
    row = dict(experiment.evaluate(params))
    if grid is not None:
        row.update(logit_measures(experiment, experiment.logits(params), grid, key))
        row["gini_embedding"] = gini(embedding_norms(experiment, params, grid))
    return row


def _curve(kind: str, t: list[float], rows: list[dict[str, float]]) -> PathCurve:
    values = {name: [row[name] for row in rows] for name in rows[0]}
    barriers = {}
    for name in ("train_loss", "test_loss"):
        if all(math.isfinite(v) for v in values[name]):
            height, where = barrier(t, values[name])
            barriers[name] = {"height": height, "t": where}
    transitions = [transition(name, t, values[name]) for name in MECHANISM if name in values]
    return PathCurve(kind, t, values, barriers, transitions, _switch(transitions))


def _interpolate(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(1 − t) a + t b, exactly a at t = 0 and b at t = 1."""
    return a if t == 0 else b if t == 1 else torch.lerp(a, b, t)


@torch.no_grad()
def straight_path(a: CheckpointRef, b: CheckpointRef, points: int = DEFAULT_POINTS, align: bool = False,
                  mechanism: bool = True, max_memory_bytes: int = MAX_MEMORY_BYTES,
                  progress: ProgressFn | None = None) -> PathResult:
    """Measure both straight paths from checkpoint ``a`` to ``b`` (module docstring). Checks the
    request before any work: same setup (ConfigError naming both), 2 ≤ points ≤ ``MAX_POINTS``,
    memory within ``max_memory_bytes`` (ResourceError with the size and the option that shrinks
    it). Nothing is written; ``record_path`` stores the result."""
    if isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= MAX_POINTS:
        raise ConfigError(f"--points must be an integer from 2 to {MAX_POINTS}, got {points!r}")
    started = time.perf_counter()
    config_a, config_b = RunStore.open(a.run).config(), RunStore.open(b.run).config()
    same_setup(a, config_a, b, config_b)
    experiment = Experiment(config_a)
    note = "" if mechanism else "not asked for (--no-mechanism)"
    if mechanism and experiment.task.domain != "residues":
        mechanism, note = False, f"mechanism measures read Fourier programs over Z_p; not for a {experiment.task.family} task"
    need = path_bytes(experiment, mechanism)
    if need > max_memory_bytes:
        lean = path_bytes(experiment, False)
        shrink = (f"; --no-mechanism (losses and accuracies only) needs {lean / 2**30:.2f} GiB" if mechanism
                  and lean <= max_memory_bytes else "")
        raise ResourceError(f"a path on {a} needs about {need / 2**30:.2f} GiB ({experiment.inputs.shape[0]:,} rows × "
                            f"{experiment.data.n_classes} classes), more than the {max_memory_bytes / 2**30:.2f} GiB "
                            f"allowed{shrink}")
    params_a = open_checkpoint(experiment, a).params
    params_b = open_checkpoint(experiment, b).params
    alignment = None
    if align:
        from progsynth.geometry.align import apply_permutation, permutation_spec, weight_matching

        spec = permutation_spec(experiment.module_template)
        matched = weight_matching(spec, params_a, params_b)
        params_b = apply_permutation(spec, params_b, matched.perms)
        alignment = {k: v for k, v in matched.to_dict().items() if k != "perms"}
    grid = key = key_from = relabelling = None
    if mechanism:
        try:
            program, key_from = common_program(extract(experiment, params_a), extract(experiment, params_b))
        except NotApplicableError as error:
            mechanism, note = False, str(error)
        else:
            grid, key, relabelling = program.grid, program.key_frequencies, program.grid.relabelling.name
    t = [i / (points - 1) for i in range(points)]
    total, done = 2 * points, 0
    parameter_rows = []
    for s in t:
        params = {name: _interpolate(params_a[name], params_b[name], s) for name in params_a}
        parameter_rows.append(_parameter_row(experiment, params, grid, key))
        done += 1
        if progress:
            progress(done, total)
    logits_a, logits_b = experiment.logits(params_a).to(DTYPE), experiment.logits(params_b).to(DTYPE)
    function_rows = []
    for s in t:
        function_rows.append(_function_row(experiment, _interpolate(logits_a, logits_b, s), grid, key))
        done += 1
        if progress:
            progress(done, total)
    return PathResult(a, b, align, alignment, relabelling, key, key_from, note, _curve("parameter", t, parameter_rows),
                      _curve("function", t, function_rows), time.perf_counter() - started)


def record_path(result: PathResult) -> None:
    """Append the path's row to A's run measures.jsonl, holding that run's write lock."""
    store = RunStore.open(result.a.run)
    with store.writer():
        store.append_measures({"step": result.a.step, **result.to_dict()})


def load_paths(run: Any) -> list[dict[str, Any]]:
    """The run's path rows, the newest per (A, B, aligned), in the order written."""
    table = RunStore.open(run).measures()
    if table.empty or "analysis" not in table.columns:
        return []
    rows = [row for row in table[table["analysis"] == ANALYSIS].to_dict("records")]
    newest: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        newest.pop((row["a"], row["b"], row["aligned"]), None)
        newest[(row["a"], row["b"], row["aligned"])] = row
    return list(newest.values())
