"""The phases of a grokking run — memorisation, circuit formation, cleanup — detected from its metrics.

Nanda et al. (2023) split training into three phases (REFERENCE §3): the network memorises the
training set, then slowly forms the Fourier circuit while test loss stays high, then cleans up
(weight decay removes the memorising components, the weight norm falls) and test accuracy is
perfect. Nothing here is hard-coded to a run: the boundaries come from ``metrics.jsonl`` by the
rules below, each a parameter of ``detect_phases`` with its default documented there.

Rules (``threshold`` = 0.99, ``plateau_tolerance`` = 0.02, ``plateau_window`` = 0.25 by default):

- **memorised**: the first evaluated step with train accuracy ≥ ``threshold``.
- **generalised**: the first evaluated step with test accuracy ≥ ``threshold``.
- **memorisation** runs from step 0 to the peak of the test loss between *memorised* and
  *generalised*: once the training set is fitted, the test loss keeps rising until the circuit
  starts to pay off (in the paper's run this peak is the 1.4k-epoch boundary). In a run that never
  generalises, memorisation is the whole run (complete when it memorised) and the other phases are
  ``None``.
- **circuit formation** runs from the end of memorisation to *generalised*.
- **cleanup** runs from *generalised* until the weight norm (sum of squared weights) stops falling:
  the first evaluated step t at which it falls by less than ``plateau_tolerance`` (relative to its
  value at t) over the window [t, (1 + ``plateau_window``) t]. The window is multiplicative because
  the phases of grokking scale with the step count (the figures use a log axis). If the weight norm
  is still falling when the run ends, cleanup ends at the last step and is marked incomplete; if it
  was not falling at all once the network generalised, there was no cleanup (``None``).

The metrics are used rather than the analysis measures because they are dense (every
``metrics_every`` steps) while measures exist only at the log-spaced checkpoints, and the metrics'
``weight_norm`` is the measures' sum of squared weights.

``summary(run)`` gathers what a reader wants first — when the run memorised and generalised, its
phases, key frequencies and extracted program, and whether the network *is* that program
(``network_relation``: a program can answer correctly while being only a component of the logits
that does not set the network's answers) — together with the analyses on disk (interp measures,
LLC, the NTK spectrum, paths and contrasts) and a note, with the command to run, for each one that
is missing. It is what the report, ``progsynth report`` and ``progsynth demo`` show.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from progsynth.errors import ConfigError, NotApplicableError, ProgsynthError, RunError
from progsynth.geometry.contrast import default_steps, load_contrasts
from progsynth.geometry.paths import load_paths
from progsynth.geometry.run_ntk import load_ntk
from progsynth.interp.extract import PARTIAL, Extraction, extract_checkpoint
from progsynth.interp.measures import load_measures
from progsynth.runs.config import RunConfig
from progsynth.runs.store import RunStore
from progsynth.slt.run_degeneracy import load_degeneracy
from progsynth.slt.run_llc import estimates_of, refined_rows

METRIC_COLUMNS = ("step", "train_accuracy", "test_accuracy", "test_loss", "weight_norm")
"""The metrics.jsonl columns the phase rules read."""


@dataclass(frozen=True)
class Phase:
    """One phase of training: the steps it spans."""

    name: str
    """'memorisation', 'circuit formation' or 'cleanup'."""
    start: int
    """First step of the phase."""
    end: int
    """Last step of the phase (the next phase's start)."""
    complete: bool
    """False when the run ended before the phase did."""


@dataclass(frozen=True)
class Phases:
    """The detected phases of one run and the events that bound them (``None``: never happened)."""

    memorised: int | None
    """First step with train accuracy ≥ the threshold."""
    generalised: int | None
    """First step with test accuracy ≥ the threshold."""
    memorisation: Phase | None
    circuit_formation: Phase | None
    cleanup: Phase | None
    last_step: int
    """The last evaluated step of the run."""
    threshold: float
    """The accuracy threshold the events were detected with."""

    def spans(self) -> list[Phase]:
        """The phases that happened, in order."""
        return [p for p in (self.memorisation, self.circuit_formation, self.cleanup) if p is not None]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (phases as {start, end, complete} or None)."""
        return asdict(self)


def detect_phases(
    metrics: pd.DataFrame,
    threshold: float = 0.99,
    plateau_tolerance: float = 0.02,
    plateau_window: float = 0.25,
) -> Phases:
    """Detect the phases of a run from its metrics DataFrame (``RunStore.metrics()``) by the
    module's rules; ``threshold`` is the accuracy that counts as memorised/generalised,
    ``plateau_tolerance`` and ``plateau_window`` define when the weight norm has stopped falling."""
    _check_fraction("threshold", threshold, upper_inclusive=True)
    _check_fraction("plateau_tolerance", plateau_tolerance, upper_inclusive=False)
    if not (isinstance(plateau_window, (int, float)) and plateau_window > 0 and math.isfinite(plateau_window)):
        raise ConfigError(f"plateau_window must be a positive number, got {plateau_window!r}")
    missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
    if missing:
        raise RunError(f"the metrics have no column(s) {missing}; expected {list(METRIC_COLUMNS)} "
                       f"(got {list(metrics.columns)})")
    m = metrics.sort_values("step").drop_duplicates("step", keep="last").reset_index(drop=True)
    if m.empty:
        raise RunError("the metrics are empty: the run has not been evaluated yet")
    steps = m["step"].to_numpy(dtype=np.int64)
    last = int(steps[-1])
    memorised = _first_at_least(steps, m["train_accuracy"].to_numpy(dtype=float), threshold)
    generalised = _first_at_least(steps, m["test_accuracy"].to_numpy(dtype=float), threshold)

    if generalised is None:
        memorisation = Phase("memorisation", 0, last, complete=memorised is not None)
        return Phases(memorised, None, memorisation, None, None, last, threshold)

    # Test accuracy passes the threshold before train accuracy only by chance on a tiny test set;
    # the test-loss peak is then looked for from that step on.
    fitted = generalised if memorised is None else min(memorised, generalised)
    between = (steps >= fitted) & (steps <= generalised)
    test_loss = np.nan_to_num(m["test_loss"].to_numpy(dtype=float)[between], nan=-np.inf)
    peak = int(steps[between][int(np.argmax(test_loss))])
    memorisation = Phase("memorisation", 0, peak, complete=True)
    circuit = Phase("circuit formation", peak, generalised, complete=True)
    cleanup_end = _plateau(steps, m["weight_norm"].to_numpy(dtype=float), generalised,
                           plateau_tolerance, plateau_window)
    if cleanup_end == generalised:
        cleanup = None
    elif cleanup_end is None:
        cleanup = Phase("cleanup", generalised, last, complete=False)
    else:
        cleanup = Phase("cleanup", generalised, cleanup_end, complete=True)
    return Phases(memorised, generalised, memorisation, circuit, cleanup, last, threshold)


def _check_fraction(name: str, value: Any, upper_inclusive: bool) -> None:
    ok = isinstance(value, (int, float)) and 0 < value and (value <= 1 if upper_inclusive else value < 1)
    if not ok:
        bound = "(0, 1]" if upper_inclusive else "(0, 1)"
        raise ConfigError(f"{name} must lie in {bound}, got {value!r}")


def _first_at_least(steps: np.ndarray, values: np.ndarray, threshold: float) -> int | None:
    """The first step whose value is ≥ threshold (NaN never is), or None."""
    hits = np.flatnonzero(values >= threshold)
    return int(steps[hits[0]]) if hits.size else None


def _plateau(steps: np.ndarray, norm: np.ndarray, start: int, tolerance: float, window: float) -> int | None:
    """The first step t ≥ start at which ``norm`` falls by less than ``tolerance`` (relative to
    norm(t)) over [t, (1 + window) t]; None if the run ends before any window shows a plateau."""
    for i in np.flatnonzero(steps >= start):
        t = int(steps[i])
        horizon = t + max(window * t, 1)
        if horizon > steps[-1]:
            return None
        j = int(np.searchsorted(steps, horizon, side="right"))
        if norm[i] - np.nanmin(norm[i:j]) < tolerance * abs(norm[i]):
            return t
    return None


@dataclass(frozen=True)
class Missing:
    """An analysis the run does not have (yet), and how to get it."""

    what: str
    reason: str
    command: str | None
    """The command that produces it, or None when no command can (e.g. an unsupported model)."""


@dataclass(frozen=True, eq=False)
class RunSummary:
    """What a run learned and which analyses exist for it (module docstring)."""

    run: Path
    config: RunConfig
    metrics: pd.DataFrame = field(repr=False)
    """The training metrics (``RunStore.metrics()``)."""
    phases: Phases
    extraction: Extraction | None = field(repr=False)
    """The program extracted at the newest scheduled checkpoint; None when extraction failed."""
    measures: pd.DataFrame = field(repr=False)
    """The interp progress measures, one row per checkpoint (empty when not measured)."""
    llc: pd.DataFrame = field(repr=False)
    """Columns ``step``, ``llc`` (and ``llc_stderr`` when recorded), one row per checkpoint (empty when
    not estimated)."""
    ntk: pd.DataFrame = field(repr=False)
    """The NTK rows (``geometry.run_ntk.load_ntk``), one per checkpoint (empty when not measured)."""
    paths: list[dict[str, Any]] = field(repr=False)
    """The path rows written into this run (``geometry.paths.load_paths``)."""
    contrasts: list[dict[str, Any]] = field(repr=False)
    """The contrast rows (``geometry.contrast.load_contrasts``)."""
    missing: list[Missing]
    degeneracy: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    """The degeneracy rows (``slt.run_degeneracy.load_degeneracy``): effective size, units removed by
    kind, functional dimension, one per checkpoint (empty when not measured)."""
    refined_llc: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    """The refined (restricted) λ̂ rows (``slt.run_llc.refined_rows``): one per component, data and
    checkpoint (empty when none were estimated)."""

    @property
    def final(self) -> dict[str, float]:
        """The last row of the training metrics."""
        return {k: float(v) for k, v in self.metrics.iloc[-1].items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the fields a script needs)."""
        e = self.extraction
        return {
            "run": str(self.run),
            "last_step": self.phases.last_step,
            "memorised": self.phases.memorised,
            "generalised": self.phases.generalised,
            "phases": self.phases.to_dict(),
            "final": self.final,
            "key_frequencies": e.key_frequencies if e else None,
            "program": e.program.text() if e else None,
            "program_accuracy": e.accuracy if e else None,
            "program_heldout_accuracy": e.heldout_accuracy if e else None,
            "program_agreement": e.agreement if e else None,
            "program_heldout_agreement": e.heldout_agreement if e else None,
            "network_is": network_relation(e) if e else None,
            "description_bits": e.description_bits if e else None,
            "lookup_table_bits": e.lookup_table_bits if e else None,
            "verdict": e.verdict if e else None,
            "effective_params": {int(r.step): int(r.effective_params) for r in self.degeneracy.itertuples()}
            if not self.degeneracy.empty else {},
            "refined_llc": {f"{restrict} ({data})": {int(r.step): float(r.llc) for r in rows.itertuples()}
                            for (restrict, data), rows in self.refined_llc.groupby(["restrict", "data"])}
            if not self.refined_llc.empty else {},
            "ntk_steps": [int(s) for s in self.ntk["step"]] if not self.ntk.empty else [],
            "paths": [{"a": r["a"], "b": r["b"], "aligned": r["aligned"], "parameter_switch": r["parameter"]["switch"],
                       "function_switch": r["function"]["switch"]} for r in self.paths],
            "contrasts": [{"a": r["a"]["step"], "b": r["b"]["step"], "update_cosine": r["update_cosine"]}
                          for r in self.contrasts],
            "missing": [asdict(m) for m in self.missing],
        }

    def text(self) -> str:
        """A one-screen plain-text summary."""
        p, final = self.phases, self.final
        lines = [f"run {self.run}: {p.last_step} steps; final train accuracy {final['train_accuracy']:.3f}, "
                 f"test accuracy {final['test_accuracy']:.3f}"]
        lines.append(f"memorised (train accuracy ≥ {p.threshold:g}): "
                     + (f"step {p.memorised}" if p.memorised is not None else "never"))
        lines.append(f"generalised (test accuracy ≥ {p.threshold:g}): "
                     + (f"step {p.generalised}" if p.generalised is not None else "never"))
        lines.append("phases: " + "; ".join(
            f"{ph.name} {ph.start}–{ph.end}{'' if ph.complete else ' (ongoing)'}" for ph in p.spans()))
        e = self.extraction
        if e is not None:
            lines.append(f"key frequencies: {e.key_frequencies}")
            lines.append(f"extracted program (step {e.step}): accuracy {e.accuracy:.3f} on all pairs"
                         + (f", {e.heldout_accuracy:.3f} held out" if not math.isnan(e.heldout_accuracy) else "")
                         + f"; agreement with the network {e.agreement:.3f}"
                         + (f", {e.heldout_agreement:.3f} held out" if not math.isnan(e.heldout_agreement) else "")
                         + f"; {e.description_bits} bits vs {e.lookup_table_bits:.0f} for a lookup table")
            lines += ["  " + line for line in e.program.text().splitlines()]
            lines.append(network_relation(e))
            lines.append(e.verdict)
        if not self.degeneracy.empty:
            d = self.degeneracy
            least = d.loc[d["effective_params"].idxmin()]
            lines.append(f"effective size: {int(d['effective_params'].iloc[0]):,} parameters at step "
                         f"{int(d['step'].iloc[0])}, {int(d['effective_params'].iloc[-1]):,} at step "
                         f"{int(d['step'].iloc[-1])} (fewest {int(least['effective_params']):,} at step "
                         f"{int(least['step'])}; {int(d['params'].iloc[-1]):,} in all)")
        if not self.llc.empty:
            peak = self.llc.loc[self.llc["llc"].idxmax()]
            lines.append("local learning coefficient λ̂: " + ", ".join(
                f"{int(r.step)}: {r.llc:.3g}" for r in self.llc.itertuples())
                + f" (peak {peak['llc']:.3g} at step {int(peak['step'])})")
        if not self.ntk.empty:
            last = self.ntk.iloc[-1]
            lines.append(f"NTK measured at {len(self.ntk)} checkpoints; at step {int(last['step'])} λ1 = "
                         f"{last['eigenvalues'][0]:.4g}, effective rank {last['effective_rank']:.3g}")
        for row in self.paths:
            lines.append(f"path {row['a']} → {row['b']}{' (aligned)' if row['aligned'] else ''}: "
                         f"{row['parameter']['switch']['text']}")
        for row in self.contrasts:
            lines.append(f"contrast of steps {row['a']['step']} and {row['b']['step']}: answers agree on "
                         f"{row['train_agreement']:.1%} of training pairs and {row['heldout_agreement']:.1%} held out; "
                         f"one step moves them with cosine {row['update_cosine']['all']:.3f}")
        for m in self.missing:
            lines.append(f"missing: {m.what}: {m.reason}" + (f" (run: {m.command})" if m.command else ""))
        return "\n".join(lines)


def summary(run: str | Path) -> RunSummary:
    """Read ``run`` and summarise it: phases from its metrics, the program extracted at its newest
    scheduled checkpoint, the interp measures and LLC estimates on disk, and what is missing."""
    store = RunStore.open(run)
    config = store.config()
    metrics = store.metrics()
    if metrics.empty:
        raise RunError(f"run {str(store.path)!r} has no metrics yet (metrics.jsonl is missing or empty)")
    phases = detect_phases(metrics)
    missing: list[Missing] = []
    applies = True
    try:
        extraction = extract_checkpoint(store.path)
    except NotApplicableError as error:
        extraction, applies = None, False
        missing.append(Missing("extracted program, Fourier spectrum, neuron clusters and progress measures",
                               f"not applicable: {error}", None))
    except ProgsynthError as error:
        extraction = None
        missing.append(Missing("extracted program, Fourier spectrum and neuron clusters", str(error), None))
    measures = load_measures(store.path)
    if measures.empty and applies:
        missing.append(Missing("progress measures", "the run has not been measured",
                               f"progsynth analyze {shlex.quote(str(store.path))}"))
    degeneracy = load_degeneracy(store.path)
    quoted = shlex.quote(str(store.path))
    if degeneracy.empty and not measures.empty:
        missing.append(Missing("effective size over training", "the degeneracy measures have not been taken",
                               f"progsynth analyze {quoted}"))
    llc = _llc_rows(store.measures())
    if llc.empty:
        missing.append(Missing("local learning coefficient", "λ̂ has not been estimated", f"progsynth llc {quoted}"))
    refined = refined_rows(store.measures())
    if refined.empty:
        missing.append(Missing("refined λ̂ by component", "no component's λ̂ has been estimated",
                               f"progsynth llc {quoted} --restrict all-components"))
    ntk = load_ntk(store.path)
    if ntk.empty:
        missing.append(Missing("NTK spectrum over training", "the neural tangent kernel has not been measured",
                               f"progsynth ntk {quoted}"))
    paths, contrasts = load_paths(store.path), load_contrasts(store.path)
    if not paths or not contrasts:
        try:
            first, last = default_steps(store)
        except ProgsynthError:
            steps = store.checkpoint_steps()
            first, last = (steps[0], steps[-1]) if steps else (0, 0)
        if not paths:
            missing.append(Missing("paths between checkpoints", "no straight path from this run has been measured",
                                   f"progsynth path {shlex.quote(f'{store.path}@{first}')} "
                                   f"{shlex.quote(f'{store.path}@{last}')}"))
        if not contrasts:
            missing.append(Missing("contrast of two checkpoints", "no two checkpoints have been contrasted",
                                   f"progsynth contrast {quoted} --a {first} --b {last}"))
    return RunSummary(store.path, config, metrics, phases, extraction, measures, llc, ntk, paths, contrasts, missing,
                      degeneracy, refined)


def network_relation(e: Extraction) -> str:
    """In words, which of the two the network is: the extracted program, or not (its answers set by
    something else while the program is at most a component of its logits), read on held-out pairs
    (``interp.extract``'s verdict thresholds)."""
    if math.isnan(e.heldout_agreement):
        return ("No pairs are held out, so whether the network runs this program or recalls its answers cannot "
                "be told.")
    agree, network, chance = e.heldout_agreement, e.network_heldout_accuracy, 1 / e.program.p
    if e.verdict_kind == "program":
        return f"The network is this program: their answers agree on {agree:.1%} of the held-out pairs."
    if e.verdict_kind == "partial":
        return (f"The network is only partly this program: their answers agree on {agree:.1%} of the held-out pairs, "
                f"and the network answers {network:.1%} of them correctly.")
    if agree >= PARTIAL:
        return (f"The network follows this program on {agree:.1%} of the held-out pairs, but the program answers only "
                f"{e.heldout_accuracy:.1%} of them correctly: neither generalises (chance {chance:.1%}).")
    return (f"The network is not this program: their answers agree on only {agree:.1%} of the held-out pairs, so the "
            f"program is at most a component of the logits that does not yet set the network's answers; the "
            f"network itself answers {network:.1%} of them correctly (chance {chance:.1%}).")


def _llc_rows(measures: pd.DataFrame) -> pd.DataFrame:
    """The whole-network, training-set llc rows of the measures (``slt.run_llc``), the newest per
    step, ascending."""
    if measures.empty or "llc" not in measures.columns:
        return pd.DataFrame()
    columns = [c for c in ("step", "llc", "llc_stderr") if c in measures.columns]
    rows = measures.loc[measures["llc"].notna() & estimates_of(measures, None, "train"), columns]
    return rows.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
