"""The report's figures: matplotlib ``Figure`` objects built from a run's data, as SVG or PNG.

Every function takes plain data (DataFrames, arrays, the detected ``Phases``) and returns a
``ReportFigure``; nothing here reads a run directory or prints. Figures are made with
``matplotlib.figure.Figure`` directly, never through pyplot, so no global figure state or GUI
backend is involved and a figure is freed as soon as it is dropped; each is built and saved
inside the shared style ``RC``. SVG output draws text as paths (``svg.fonttype = 'path'``), so a
figure needs no font and no file besides itself.

The step axis is symmetric-log (linear up to the first evaluated step after 0, logarithmic
beyond): grokking's phases scale multiplicatively with the step count, and step 0 stays visible.
Every figure over steps shades the phases in the same colours, named in a legend above it.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from progsynth.report.phases import Phases

PHASE_COLOURS = {"memorisation": "#f2c14e", "circuit formation": "#5fa8d3", "cleanup": "#7bc67b"}
"""Shading of each phase (memorisation amber, circuit formation blue, cleanup green)."""

RC = {
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
}
"""Style shared by every figure."""

PNG_DPI = 200
"""Resolution of exported PNGs (dots per inch)."""


@dataclass(frozen=True, eq=False)
class ReportFigure:
    """A figure of the report with the words around it."""

    name: str
    """File stem (``figures/<name>.png``) and HTML anchor."""
    title: str
    caption: str
    figure: Figure


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False).ravel().tolist()


def _step_axis(ax: Axes, steps: np.ndarray) -> None:
    """Symmetric-log step axis, linear up to the first positive step."""
    positive = steps[steps > 0]
    ax.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0, linscale=0.3)
    ax.set_xlim(0, max(float(steps.max()), 1.0))
    ax.set_xlabel("step")


def _shade_phases(ax: Axes, phases: Phases) -> None:
    """Shade each phase's steps in its colour."""
    for phase in phases.spans():
        ax.axvspan(phase.start, phase.end, color=PHASE_COLOURS[phase.name], alpha=0.18, lw=0, zorder=0)


def _phase_legend(fig: Figure, phases: Phases) -> None:
    """A legend above the axes naming the shaded phases (an ongoing one says so)."""
    handles = [Patch(color=PHASE_COLOURS[p.name], alpha=0.35,
                     label=p.name if p.complete else f"{p.name} (ongoing at the end)") for p in phases.spans()]
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)


@matplotlib.rc_context(RC)
def training_curves(metrics: pd.DataFrame, phases: Phases) -> ReportFigure:
    """Train/test loss (log scale) and accuracy over steps, the phases shaded and named."""
    fig, (loss_ax, acc_ax) = _figure(9, 3.4, ncols=2)
    steps = metrics["step"].to_numpy(dtype=float)
    for split, colour in (("train", "#1f77b4"), ("test", "#d62728")):
        loss_ax.plot(steps, metrics[f"{split}_loss"], color=colour, lw=1.4, label=f"{split}")
        acc_ax.plot(steps, metrics[f"{split}_accuracy"], color=colour, lw=1.4, label=f"{split}")
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("loss")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(-0.02, 1.02)
    for ax in (loss_ax, acc_ax):
        _step_axis(ax, steps)
        _shade_phases(ax, phases)
        ax.legend(loc="center left", frameon=False)
    _phase_legend(fig, phases)
    return ReportFigure("training", "Loss and accuracy",
                        "Train and test loss (log scale) and accuracy over training; the shaded bands are the "
                        "detected phases.", fig)


MEASURE_PANELS = (
    ("Losses", "log", (("train_loss", "train"), ("test_loss", "test"), ("restricted_loss", "restricted"),
                       ("excluded_loss", "excluded"))),
    ("Fourier sparsity (Gini)", "linear", (("gini_embedding", "embedding"),
                                            ("gini_neuron_logit", "neuron → logit"))),
    ("Sum of squared weights", "linear", (("weight_norm", "Σ w²"),)),
)
"""The progress-measure panels: title, y scale, and the (measures column, legend label) pairs."""


@matplotlib.rc_context(RC)
def progress_measures(measures: pd.DataFrame, phases: Phases) -> ReportFigure | None:
    """The interp progress measures over the checkpoints (``MEASURE_PANELS``); None when no panel
    has a column in ``measures``."""
    panels = [(title, scale, [(c, lab) for c, lab in columns if c in measures.columns])
              for title, scale, columns in MEASURE_PANELS]
    panels = [panel for panel in panels if panel[2]]
    if not panels:
        return None
    fig, axes = _figure(3.3 * len(panels), 3.2, ncols=len(panels))
    steps = measures["step"].to_numpy(dtype=float)
    for ax, (title, scale, columns) in zip(axes, panels):
        for column, label in columns:
            ax.plot(steps, measures[column], marker=".", ms=3, lw=1.2, label=label)
        ax.set_yscale(scale)
        ax.set_title(title)
        _step_axis(ax, steps)
        _shade_phases(ax, phases)
        if len(columns) > 1:
            ax.legend(frameon=False, fontsize=8)
    _phase_legend(fig, phases)
    key = measures["key_frequencies"].iloc[-1] if "key_frequencies" in measures.columns else None
    keys = f" for the key frequencies {list(key)}" if key is not None else ""
    return ReportFigure("measures", "Progress measures",
                        f"Progress measures at each checkpoint{keys} (Nanda et al. 2023): the restricted loss keeps "
                        "only the key frequencies' directions of the logits, the excluded loss removes them "
                        "(on the training pairs); Gini coefficients of the per-frequency Fourier norms measure "
                        "sparsity. Shading: the detected phases.", fig)


@matplotlib.rc_context(RC)
def fourier_spectrum(steps: list[int], norms: np.ndarray, key: list[int], phases: Phases) -> ReportFigure:
    """Heatmap of the embedding's Fourier spectrum over training: ``norms`` (frequencies ×
    checkpoints) is normalised per checkpoint to each frequency's share of the squared norm.
    Columns are checkpoints in order (the schedule is log-spaced); phase ends are marked."""
    energy = np.asarray(norms, dtype=float) ** 2
    total = energy.sum(0, keepdims=True)
    share = np.divide(energy, total, out=np.zeros_like(energy), where=total > 0)
    n_freq, n_ckpt = share.shape
    fig, (ax,) = _figure(9, 3.6)
    image = ax.imshow(share, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                      extent=(-0.5, n_ckpt - 0.5, 0.5, n_freq + 0.5))
    fig.colorbar(image, ax=ax, label="share of squared norm", pad=0.01)
    ticks = np.unique(np.linspace(0, n_ckpt - 1, min(n_ckpt, 8)).round().astype(int))
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks])
    ax.set_xlabel("checkpoint (step)")
    ax.set_ylabel("frequency k")
    ax.set_yticks(sorted({1, n_freq, *key}))
    for phase in phases.spans():
        if phase.complete:
            x = float(np.interp(phase.end, steps, np.arange(n_ckpt)))
            ax.axvline(x, color=PHASE_COLOURS[phase.name], lw=1.5, ls="--")
            ax.text(x, 1.01, f"end of {phase.name}", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8)
    return ReportFigure("spectrum", "Fourier spectrum of the embedding",
                        "Each frequency's share of the operand embeddings' Fourier norm at every checkpoint "
                        "(brighter: more). Y ticks: the key frequencies of the final checkpoint and the extremes; "
                        "dashed lines: "
                        "where each detected phase ends.", fig)


@matplotlib.rc_context(RC)
def neuron_frequencies(frequency: np.ndarray, fraction: np.ndarray, threshold: float, key: list[int],
                       n_frequencies: int) -> ReportFigure:
    """Neurons grouped by frequency: for each frequency, the neurons it dominates, split into those
    it explains to at least ``threshold`` of their variance (clustered) and the rest; and every
    neuron's explained share, sorted. ``frequency`` is each neuron's dominant frequency (0: none)."""
    fig, (count_ax, share_ax) = _figure(9, 3.2, ncols=2)
    clustered = fraction >= threshold
    ks = np.arange(1, n_frequencies + 1)
    strong = np.bincount(frequency[clustered], minlength=n_frequencies + 1)[1:]
    weak = np.bincount(frequency[~clustered], minlength=n_frequencies + 1)[1:]
    colours = np.array(["#d62728" if k in key else "#7f7f7f" for k in ks])
    count_ax.bar(ks, strong, color=colours, width=0.8, label=f"share ≥ {threshold:g}")
    count_ax.bar(ks, weak, bottom=strong, color=colours, alpha=0.35, width=0.8, label=f"share < {threshold:g}")
    count_ax.set_xlabel("dominant frequency k (red: key)")
    count_ax.set_ylabel("neurons")
    count_ax.legend(frameon=False, fontsize=8)
    count_ax.set_title(f"{int((clustered & (frequency > 0)).sum())} of {frequency.size} neurons cluster")
    share_ax.plot(np.arange(fraction.size), np.sort(fraction)[::-1], color="#1f77b4", lw=1.4)
    share_ax.axhline(threshold, color="#555555", ls="--", lw=1)
    share_ax.set_ylim(0, 1.02)
    share_ax.set_xlabel("neuron (sorted)")
    share_ax.set_ylabel("variance explained by its frequency")
    return ReportFigure("neurons", "Neurons grouped by frequency",
                        "Left: neurons per dominant frequency (the frequency explaining most of the neuron's "
                        "variance over the input grid); solid: explained to at least the threshold (clustered). "
                        "Right: every neuron's share of variance explained by its dominant frequency, sorted; "
                        "dashed: the threshold.", fig)


@matplotlib.rc_context(RC)
def llc_curve(llc: pd.DataFrame, phases: Phases) -> ReportFigure:
    """The local learning coefficient λ̂ over checkpoints (``step``, ``llc`` and, when present,
    ``llc_stderr`` as error bars), the phases shaded."""
    fig, (ax,) = _figure(9, 3.0)
    steps = llc["step"].to_numpy(dtype=float)
    errors = llc["llc_stderr"].to_numpy(dtype=float) if "llc_stderr" in llc.columns else None
    ax.errorbar(steps, llc["llc"].to_numpy(dtype=float), yerr=errors, marker="o", ms=3, lw=1.4, capsize=2,
                color="#9467bd")
    ax.set_ylabel("λ̂ (local learning coefficient)")
    _step_axis(ax, steps)
    _shade_phases(ax, phases)
    _phase_legend(fig, phases)
    return ReportFigure("llc", "Local learning coefficient",
                        "The SGLD estimate of the local learning coefficient at each checkpoint it was measured "
                        "at (error bars: standard error over chains).", fig)


@matplotlib.rc_context(RC)
def degeneracy_curves(rows: pd.DataFrame, metrics: pd.DataFrame, phases: Phases) -> ReportFigure:
    """Effective size over training beside the weight norm, the units each degeneracy removed, and
    the functional dimension (``slt.run_degeneracy`` rows; the weight norm from the metrics)."""
    fig, (size_ax, kinds_ax, rank_ax) = _figure(10, 3.2, ncols=3)
    steps = rows["step"].to_numpy(dtype=float)
    size_ax.plot(steps, rows["effective_params"], marker=".", ms=3, lw=1.4, color="#1f77b4", label="effective")
    size_ax.plot(steps, rows["params"], lw=1.0, ls="--", color="#1f77b4", alpha=0.6, label="all")
    size_ax.set_title("parameters (effective and all)")
    size_ax.legend(frameon=False, fontsize=8, loc="lower left")
    if "weight_norm" in metrics.columns:
        norm_ax = size_ax.twinx()
        norm_ax.plot(metrics["step"].to_numpy(dtype=float), metrics["weight_norm"], lw=1.0, color="#d62728")
        norm_ax.set_ylabel("weight norm (Σ w²)", color="#d62728")
    kinds = [c for c in rows.columns if c.startswith("units_")]
    for column in kinds:
        if rows[column].fillna(0).any():
            kinds_ax.plot(steps, rows[column], marker=".", ms=3, lw=1.2, label=column.removeprefix("units_"))
    kinds_ax.set_title("hidden units removed, by degeneracy")
    if kinds_ax.get_legend_handles_labels()[0]:
        kinds_ax.legend(frameon=False, fontsize=8)
    if "functional_dimension" in rows.columns:
        rank_ax.plot(steps, rows["functional_dimension"], marker=".", ms=3, lw=1.2, label="rank of J")
        rank_ax.plot(steps, rows["functional_rows"], lw=1.0, ls="--", color="grey", label="rows of J")
        rank_ax.legend(frameon=False, fontsize=8)
    rank_ax.set_title("functional dimension (input subset)")
    for ax in (size_ax, kinds_ax, rank_ax):
        _step_axis(ax, steps)
        _shade_phases(ax, phases)
    _phase_legend(fig, phases)
    return ReportFigure("degeneracy", "Effective size and degeneracies",
                        "Left: parameters of the smallest network of the same family computing the same outputs "
                        "on every input (slt.compress), against all parameters, with the weight norm (red, right "
                        "axis). Middle: hidden units removed by each kind of degeneracy. Right: rank of the "
                        "Jacobian of the outputs on a fixed input subset (at most its rows). "
                        "Shading: the detected phases.", fig)


@matplotlib.rc_context(RC)
def refined_llc_curves(rows: pd.DataFrame, phases: Phases) -> ReportFigure:
    """Each component's refined λ̂ over checkpoints (``slt.run_llc.refined_rows``: one line per
    restriction and data set, standard errors as bars), the phases shaded."""
    fig, (ax,) = _figure(9, 3.4)
    steps = rows["step"].to_numpy(dtype=float)
    for (restrict, data), part in rows.groupby(["restrict", "data"], sort=True):
        label = restrict if data == "train" else f"{restrict} ({data})"
        ax.errorbar(part["step"].to_numpy(dtype=float), part["llc"].to_numpy(dtype=float),
                    yerr=part["llc_stderr"].to_numpy(dtype=float), marker="o", ms=3, lw=1.2, capsize=2, label=label)
    ax.set_ylabel("refined λ̂ (symmetric log)")
    ax.set_yscale("symlog", linthresh=1.0)  # components differ by orders of magnitude; 0 stays visible
    ax.legend(fontsize=7, ncol=4, loc="best")
    _step_axis(ax, steps)
    _shade_phases(ax, phases)
    return ReportFigure("refined-llc", "Refined local learning coefficient by component",
                        "λ̂ with SGLD moving only one component's weights, the rest frozen at the checkpoint "
                        "(Wang et al. 2024; progsynth llc --restrict). Error bars: standard error over chains.", fig)


_SVG_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.S)
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SVG_NAMESPACES = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')


def to_svg(figure: ReportFigure) -> str:
    """The figure as an ``<svg>`` element to inline in HTML5. The XML prologue, DOCTYPE, metadata
    and namespace declarations are dropped (the HTML parser puts inline SVG and ``xlink:href`` in
    their namespaces itself), so the markup names no address at all; ids are salted with the
    figure's name so two figures' clip paths cannot collide."""
    buffer = io.StringIO()
    with matplotlib.rc_context({**RC, "svg.hashsalt": figure.name}):
        figure.figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = _SVG_METADATA.sub("", _SVG_PROLOGUE.sub("", buffer.getvalue(), count=1))
    svg = _SVG_NAMESPACES.sub("", svg[:svg.index(">") + 1], count=2) + svg[svg.index(">") + 1:]
    return svg.replace("<svg", f'<svg role="img" aria-label="{escape(figure.title)}"', 1)


def save_png(figure: ReportFigure, directory: str | Path) -> Path:
    """Write the figure to ``directory/<name>.png`` at ``PNG_DPI`` and return the path."""
    path = Path(directory) / f"{figure.name}.png"
    with matplotlib.rc_context(RC):
        figure.figure.savefig(path, format="png", dpi=PNG_DPI)
    return path
