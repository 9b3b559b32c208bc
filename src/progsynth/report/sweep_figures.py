"""The sweep page's figures: time to generalise against a swept field, and how often each key
frequency appears across the sweep's runs.

Same conventions as ``report.figures``: plain data in (the rows ``report.sweep`` computes), a
``ReportFigure`` out, nothing read from disk, matplotlib ``Figure`` objects built inside the shared
style ``RC``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Sequence

import matplotlib
import numpy as np

from progsynth.report.figures import RC, ReportFigure, _figure

LOG_SPAN = 20.0
"""A numeric axis is drawn log-scaled when its values are all positive and span this factor or more."""


class _Time(Protocol):
    """What the figure reads of ``report.sweep.GeneralisationTime``."""

    value: Any
    series: dict[str, Any]
    generalised: int
    seeds: int
    mean: float | None
    min: int | None
    max: int | None
    last_step: int | None


def value_label(value: Any) -> str:
    """A swept field's value as the page and its figures show it (floats in the shortest form)."""
    if isinstance(value, float):
        return format(value, "g")
    return value if isinstance(value, str) else json.dumps(value)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values)


@matplotlib.rc_context(RC)
def generalisation_figure(times: Sequence[_Time], along: str, threshold: float) -> ReportFigure | None:
    """Steps to generalise (log scale) against ``along``: per grid point the mean over the seeds that
    generalised with their range as error bars, one line per combination of the other swept fields;
    a point where no seed generalised is a hollow triangle at its last logged step (a lower bound).
    None when no point has any logged step."""
    if not any(t.mean is not None or t.last_step is not None for t in times):
        return None
    values = [t.value for t in times]
    numeric = _numeric(values)
    if numeric:
        position = {json.dumps(v): float(v) for v in values}
    else:
        order = sorted({json.dumps(v): v for v in values}.values(), key=value_label)
        position = {json.dumps(v): float(i) for i, v in enumerate(order)}
    series: dict[str, list[_Time]] = {}
    for t in times:
        series.setdefault(", ".join(f"{k.rsplit('.', 1)[-1]}={value_label(v)}" for k, v in t.series.items()), []).append(t)
    fig, (ax,) = _figure(7.5, 3.6)
    colours = matplotlib.colormaps["tab10"]
    never_labelled = False
    for i, (name, rows) in enumerate(series.items()):
        colour = colours(i % 10)
        rows = sorted(rows, key=lambda t: position[json.dumps(t.value)])
        done = [t for t in rows if t.mean is not None]
        if done:
            xs = np.array([position[json.dumps(t.value)] for t in done])
            mean = np.array([t.mean for t in done])
            err = np.array([[m - t.min for m, t in zip(mean, done)], [t.max - m for m, t in zip(mean, done)]])
            ax.errorbar(xs, mean, yerr=err, color=colour, marker="o", ms=4, lw=1.4, capsize=3,
                        label=name or "generalised")
            for x, m, t in zip(xs, mean, done):
                if t.generalised < t.seeds:
                    ax.annotate(f"{t.generalised}/{t.seeds}", (x, m), fontsize=7, xytext=(4, 4),
                                textcoords="offset points", color=colour)
        never = [t for t in rows if t.mean is None and t.last_step is not None]
        if never:
            ax.scatter([position[json.dumps(t.value)] for t in never], [max(t.last_step, 1) for t in never],
                       marker="^", s=40, facecolors="none", edgecolors=colour, linewidths=1.3,
                       label=None if never_labelled else "never generalised (at its last step)")
            never_labelled = True
    ax.set_yscale("log")
    ax.set_ylabel(f"steps to test accuracy ≥ {threshold:g}")
    ax.set_xlabel(along)
    if numeric:
        positives = [float(v) for v in values if float(v) > 0]
        if len(positives) == len(values) and max(positives) / min(positives) >= LOG_SPAN:
            ax.set_xscale("log")
    else:
        ax.set_xticks(list(position.values()), [value_label(v) for v in order])
    ax.legend(frameon=False, fontsize=8)
    return ReportFigure("generalisation", "Time to generalise",
                        f"Steps until test accuracy first reaches {threshold:g}, against {along}: the mean over the "
                        "seeds that generalised, error bars from the fastest to the slowest (k/n: only k of the n "
                        "seeds generalised); a hollow triangle marks a point where no seed generalised, drawn at "
                        "its last logged step, a lower bound.", fig)


@matplotlib.rc_context(RC)
def frequency_counts_figure(counts: Sequence[dict[str, Any]], analysed: int) -> ReportFigure | None:
    """How many of the ``analysed`` runs use each key frequency (rows {relabelling, frequency, runs}),
    bars stacked by relabelling; None when there are no rows."""
    if not counts:
        return None
    top = max(int(c["frequency"]) for c in counts)
    ks = np.arange(1, top + 1)
    fig, (ax,) = _figure(7.5, 2.8)
    bottom = np.zeros(top)
    relabellings = list(dict.fromkeys(str(c["relabelling"]) for c in counts))
    for relabelling in relabellings:
        heights = np.zeros(top)
        for c in counts:
            if str(c["relabelling"]) == relabelling:
                heights[int(c["frequency"]) - 1] = c["runs"]
        ax.bar(ks, heights, bottom=bottom, width=0.8, label=relabelling)
        bottom += heights
    ax.set_xlabel("key frequency k")
    ax.set_ylabel("runs using it")
    ax.set_xlim(0.3, top + 0.7)
    ax.set_ylim(0, max(analysed, 1) + 0.3)
    if len(relabellings) > 1:
        ax.legend(frameon=False, fontsize=8, title="relabelling")
    return ReportFigure("frequencies", "Key frequencies across the sweep",
                        f"How many of the {analysed} analysed runs have each frequency among the key frequencies of "
                        "their final checkpoint" + (", by relabelling" if len(relabellings) > 1 else "") + ".", fig)
