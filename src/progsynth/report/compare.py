"""The comparison page (``progsynth report --compare RUN...``): many runs of one task on one
self-contained page, built from ``compare.convergence.Comparison``.

Same conventions as the run report (``report.html``): figures are inline SVG drawn by matplotlib in
the shared style, tables are plain HTML, no script, nothing fetched. Sections, each present when its
data are: the runs and their programs, the key-frequency histogram with the uniformity test, the
similarity matrices (heatmaps: held-out agreement, CKA, mutual k-NN, stitching at both sites),
similarity over training with each run's generalisation step marked, grokking time against
closeness, the groups (settings the runs differ in), the random-label table, notes.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

import progsynth
from progsynth.compare.convergence import Comparison, common_parent
from progsynth.compare.representations import SITES
from progsynth.report.figures import RC, ReportFigure, _figure, _step_axis, save_png
from progsynth.report.html import STYLE, _figure_section, _table

__all__ = ["COMPARE_PAGE", "compare_figures", "write_compare_report"]

COMPARE_PAGE = "compare.html"
"""The page's file name when no ``out`` is given (in the runs' common parent directory)."""

HEATMAPS = (("agreement", None, "held-out agreement"), ("cka", "hidden", "CKA, hidden"),
            ("cka", "embedding", "CKA, embedding"), ("knn", "hidden", "mutual k-NN, hidden"),
            ("stitching", "hidden", "stitching R², hidden (row → column)"))
"""The similarity matrices drawn: (measure, site, title)."""


def _number(value: Any, spec: str = ".3g") -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


@matplotlib.rc_context(RC)
def _heatmaps(c: Comparison) -> ReportFigure:
    names = [f.name for f in c.runs]
    fig, axes = _figure(3.2 * len(HEATMAPS), 3.3 + 0.08 * len(names), ncols=len(HEATMAPS))
    for ax, (measure, site, title) in zip(axes, HEATMAPS):
        matrix = c.agreement if measure == "agreement" else c.similarity[measure][site]
        image = ax.imshow(np.asarray(matrix, dtype=float), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(title)
        ticks = range(len(names))
        ax.set_xticks(ticks, names, rotation=90, fontsize=6)
        ax.set_yticks(ticks, names, fontsize=6)
        if len(names) <= 10:
            for i in ticks:
                for j in ticks:
                    value = matrix[i][j]
                    if value is not None and np.isfinite(value):
                        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=5,
                                color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=axes, shrink=0.7)
    return ReportFigure("similarity", "Similarity matrices",
                        f"Pairwise over the runs' final checkpoints, on the same {c.rows} inputs: agreement of the "
                        "answers on held-out pairs, linear CKA and mutual k-nearest-neighbour alignment of the "
                        "hidden units and of the operand embeddings, and linear stitching (a map fitted from the "
                        "row run's hidden units to the column run's on training inputs, R² on held-out ones).",
                        fig)


@matplotlib.rc_context(RC)
def _frequency_histogram(c: Comparison) -> ReportFigure:
    f = c.frequencies
    fig, (ax,) = _figure(9, 2.8)
    counts = {int(k): v for k, v in f["counts"].items()}
    half = max([r.program["n"] // 2 for r in c.runs if r.program] + list(counts) + [1])
    ks = np.arange(1, half + 1)
    ax.bar(ks, [counts.get(int(k), 0) for k in ks], color="#5fa8d3")
    ax.set_xlabel("frequency k")
    ax.set_ylabel("runs using it")
    ax.set_xlim(0.3, half + 0.7)
    verdict = (f"some are preferred ({f['preferred']})" if f["preferred"] else "consistent with uniform use")
    return ReportFigure("frequencies", "Key frequencies across runs",
                        f"How many of the {f['runs']} runs use each key frequency. Uniformity test: the largest "
                        f"number of runs sharing one frequency is {f['statistic']}; if each run drew its key "
                        f"frequencies uniformly at random, that many or more would happen with probability "
                        f"p = {f['p_value']:.3g} ({f['simulations']:,} simulations): {verdict}.", fig)


@matplotlib.rc_context(RC)
def _over_training(c: Comparison) -> ReportFigure:
    o = c.over_training
    steps = np.asarray(o["steps"], dtype=float)
    fig, (sim_ax, agree_ax) = _figure(9, 3.2, ncols=2)
    for measure in ("cka", "knn", "stitching"):
        for site, style in zip(SITES, ("--", "-")):
            sim_ax.plot(steps, np.asarray(o[f"{measure}_{site}"], dtype=float), ls=style, lw=1.2,
                        label=f"{measure}, {site}")
    agree_ax.plot(steps, np.asarray(o["agreement"], dtype=float), color="#d62728", lw=1.4)
    for ax in (sim_ax, agree_ax):
        _step_axis(ax, steps)
        ax.set_ylim(-0.02, 1.02)
        for f in c.runs:
            if f.generalised_step is not None:
                ax.axvline(f.generalised_step, color="#999", lw=0.6, ls=":")
    sim_ax.set_title("mean pairwise similarity")
    sim_ax.legend(frameon=False, fontsize=7, ncols=2)
    agree_ax.set_title("mean held-out agreement")
    return ReportFigure("over-training", "Similarity over training",
                        f"The mean over pairs of runs of each similarity at each of the {len(steps)} checkpoint "
                        "steps the runs share (dotted: each run's first step with held-out accuracy ≥ 0.99).", fig)


@matplotlib.rc_context(RC)
def _closeness(c: Comparison) -> ReportFigure:
    g = c.grokking
    fig, (ax,) = _figure(5, 3.2)
    for name, step, close in zip(g["runs"], g["generalised_step"], g["closeness"]):
        if step is not None:
            ax.scatter(step, close, color="#1f77b4")
            ax.annotate(name, (step, close), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("step of generalisation (held-out accuracy ≥ 0.99)")
    ax.set_ylabel("mean CKA with the other runs (hidden)")
    rho = g["spearman"]
    return ReportFigure("closeness", "Grokking time against closeness",
                        "Each run's generalisation step against how close its end point lies to the others' "
                        f"(mean hidden-site CKA); Spearman ρ = {_number(rho)}.", fig)


def compare_figures(c: Comparison) -> list[ReportFigure]:
    """Every figure the comparison's data allow, in page order."""
    figures = []
    if c.frequencies is not None and c.frequencies["counts"]:
        figures.append(_frequency_histogram(c))
    figures.append(_heatmaps(c))
    if c.over_training["steps"]:
        figures.append(_over_training(c))
    if sum(s is not None for s in c.grokking["generalised_step"]) >= 2:
        figures.append(_closeness(c))
    return figures


def _runs_table(c: Comparison) -> str:
    rows = []
    for f in c.runs:
        p = f.program
        program = "—" if p is None else (f"{p['key_frequencies']} ({p['relabelling']}), {p['description_bits']} bits, "
                                         f"{p['verdict_kind']}")
        rows.append([f.name, f.model, f.optimizer, str(f.seed), _number(f.label_noise, "g"),
                     f"{f.step}" + (" (training)" if f.still_training else ""), _number(f.fitted_step, "d"),
                     _number(f.generalised_step, "d"), f"{f.test_accuracy:.3f}", program])
    return _table(["run", "model", "optimizer", "seed", "label noise", "step", "fitted", "generalised",
                   "held-out acc.", "program: key frequencies, bits, verdict"], rows, frozenset({3, 4, 5, 6, 7, 8}))


def _groups_section(c: Comparison) -> str:
    if not c.groups:
        return ""
    parts = []
    for g in c.groups:
        rows = [[str(x["value"]), ", ".join(x["runs"]), f"{x['generalised']} of {len(x['runs'])}",
                 _number(x["mean_generalised_step"], ".0f"), "; ".join(str(k) for k in x["key_sets"])]
                for x in g["groups"]]
        parts.append(f"<h3>by {escape(g['setting'])}</h3>"
                     + _table([g["setting"], "runs", "generalised", "mean step", "key frequencies"], rows)
                     + f"<p class=meta>Mean hidden-site CKA within a group {_number(g['cka_within'])}, between "
                       f"groups {_number(g['cka_between'])}.</p>")
    return "<section id=groups><h2>What the runs differ in</h2>" + "".join(parts) + "</section>"


def _random_label_section(c: Comparison) -> str:
    if not c.random_labels:
        return ""
    rows = [[r["run"], _number(r["label_noise"], "g"), _number(r["fit_epochs"], ".0f"), _number(r["fit_ratio"], ".2f"),
             _number(r["heldout_accuracy"], ".3f"), _number(r["weight_norm"], ".4g"),
             "—" if r["llc"] is None else f"{r['llc']:.4g} ± {r['llc_stderr']:.2g}",
             f"{_number(r['effective_parameters'], ',')} of {r['parameters']:,}",
             _number(r["program_bits"], "d") if r["program_bits"] is not None else f"none ({r['verdict']})",
             _number(r["lookup_table_bits"], ".0f")] for r in c.random_labels]
    return ("<section id=random-labels><h2>Random labels</h2><p>A fraction Q of the training labels replaced by "
            "random wrong labels (held-out labels true). Fit: the first epoch with train accuracy ≥ 0.99, and its "
            "ratio to the clean runs'. λ̂ where <code>progsynth llc</code> measured the compared checkpoint.</p>"
            + _table(["run", "Q", "epochs to fit", "× clean", "held-out acc.", "Σ w²", "λ̂", "effective parameters",
                      "program bits", "lookup table bits"], rows, frozenset(range(1, 10))) + "</section>")


def write_compare_report(c: Comparison, out: str | Path | None = None, png: bool = False) -> tuple[Path, list[Path]]:
    """Write the page (default: ``compare.html`` in the runs' common parent) and, with ``png``, every
    figure as ``figures/<name>.png`` beside it; returns (page, pngs)."""
    runs = [Path(f.run).resolve() for f in c.runs]
    path = Path(out) if out is not None else common_parent(runs) / COMPARE_PAGE
    figures = compare_figures(c)
    pngs = []
    if png:
        (path.parent / "figures").mkdir(parents=True, exist_ok=True)
        pngs = [save_png(f, path.parent / "figures") for f in figures]
    notes = "".join(f"<li>{escape(n)}</li>" for n in c.notes)
    body = "".join([
        f"<header><h1>progsynth comparison: {len(c.runs)} runs</h1><p class=meta>progsynth "
        f"{escape(progsynth.__version__)} · {c.rows} inputs · {c.seconds:.1f} s</p></header>",
        f"<section id=runs><h2>Runs and their programs</h2>{_runs_table(c)}"
        + (f"<ul>{notes}</ul>" if notes else "") + "</section>",
        *(_figure_section(f) for f in figures),
        _groups_section(c),
        _random_label_section(c),
    ])
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>progsynth comparison</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path, pngs

