"""The report's figures of the parameter-function map (``progsynth.geometry``): the NTK spectrum
over training, a straight path between two checkpoints, and a contrast of two checkpoints.

Same conventions as ``report.figures``: plain data in (measures.jsonl rows), a ``ReportFigure``
out, nothing read from disk, matplotlib ``Figure`` objects built inside the shared style ``RC``.
"""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
import pandas as pd

from progsynth.report.figures import RC, ReportFigure, _figure, _phase_legend, _shade_phases, _step_axis
from progsynth.report.phases import Phases

MECHANISM_LABELS = {"restricted_loss": "restricted loss", "excluded_loss": "excluded loss",
                    "key_energy": "key energy", "gini_embedding": "Gini (embedding)"}
"""Legend labels of the mechanism measures along a path."""

SHOWN_EIGENVALUES = 5
"""Eigenvalues drawn one line each in the NTK figure (the rest of the top k as a band)."""


@matplotlib.rc_context(RC)
def ntk_spectrum(ntk: pd.DataFrame, phases: Phases) -> ReportFigure:
    """The NTK's top eigenvalues, effective rank and key-frequency share of its top eigenfunctions
    over the checkpoints it was measured at (rows of ``geometry.run_ntk``)."""
    fig, (eig_ax, rank_ax, key_ax) = _figure(10, 3.2, ncols=3)
    steps = ntk["step"].to_numpy(dtype=float)
    values = [np.asarray(v, dtype=float) for v in ntk["eigenvalues"]]
    top = min(len(v) for v in values)
    matrix = np.stack([v[:top] for v in values])  # (checkpoints, top)
    eig_ax.fill_between(steps, matrix.min(1), matrix.max(1), color="#1f77b4", alpha=0.15, lw=0,
                        label=f"top {top}")
    for i in range(min(SHOWN_EIGENVALUES, top)):
        eig_ax.plot(steps, matrix[:, i], lw=1.2, marker=".", ms=3, label=f"λ{i + 1}")
    eig_ax.set_yscale("log")
    eig_ax.set_title("top eigenvalues of Θ")
    eig_ax.legend(frameon=False, fontsize=7)
    rank_ax.plot(steps, ntk["effective_rank"].to_numpy(dtype=float), marker=".", ms=3, color="#2ca02c")
    rank_ax.set_ylim(0, top * 1.05)
    rank_ax.set_title(f"effective rank (of the top {top})")
    has_key = "eigenspace_key_share" in ntk.columns and ntk["eigenspace_key_share"].map(
        lambda v: isinstance(v, float) and np.isfinite(v)).all()
    if has_key:
        shares = np.stack([np.asarray(v, dtype=float)[:top] for v in ntk["key_share"]])
        key_ax.plot(steps, ntk["eigenspace_key_share"].to_numpy(dtype=float), marker=".", ms=3,
                    label=f"key directions in the top-{top} eigenspace")
        key_ax.plot(steps, shares[:, 0], marker=".", ms=3, label="top eigenfunction along them")
        key_ax.set_ylim(-0.02, 1.02)
        key_ax.legend(frameon=False, fontsize=7)
    else:
        key_ax.text(0.5, 0.5, "no key frequencies\n(not a task on Z_p)", ha="center", va="center",
                    transform=key_ax.transAxes)
    key_ax.set_title("share in the key frequencies")
    for ax in (eig_ax, rank_ax, key_ax):
        _step_axis(ax, steps)
        _shade_phases(ax, phases)
    _phase_legend(fig, phases)
    key = ntk["key_frequencies"].iloc[-1] if "key_frequencies" in ntk.columns else None
    return ReportFigure("ntk", "Neural tangent kernel over training",
                        "The empirical NTK Θ = J Jᵀ of the network's outputs on a fixed subset of inputs "
                        "(progsynth.geometry.ntk). Left: its top eigenvalues (log scale). Middle: effective "
                        "rank of the top eigenvalues. Right: the share of the key frequencies' program directions "
                        "cos/sin(w_k(x + y − z)) lying in the span of the top eigenfunctions, and the top "
                        "eigenfunction's share along them"
                        + (f" for k in {list(key)}" if isinstance(key, list) else "")
                        + ": high when the kernel's top eigenspace lines up with the extracted program (a random "
                          "subspace of that size captures almost nothing).", fig)


def _label(text: str) -> str:
    return text.replace("_", " ")


@matplotlib.rc_context(RC)
def path_figure(row: dict[str, Any], index: int) -> ReportFigure:
    """Losses and mechanism measures along one path row (``geometry.paths``): left the train/test
    loss on the parameter path (solid) and the function path (dashed), right each mechanism
    measure's progress from A's value (0) to B's (1) on the parameter path, its transition shaded."""
    fig, (loss_ax, mech_ax) = _figure(9, 3.2, ncols=2)
    p, f = row["parameter"], row["function"]
    t = np.asarray(p["t"], dtype=float)
    for split, colour in (("train", "#1f77b4"), ("test", "#d62728")):
        loss_ax.plot(t, p["values"][f"{split}_loss"], color=colour, lw=1.4, label=f"{split}, parameter path")
        loss_ax.plot(t, f["values"][f"{split}_loss"], color=colour, lw=1.2, ls="--", label=f"{split}, function path")
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("t (0 = A, 1 = B)")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(frameon=False, fontsize=7)
    drawn = False
    for tr in p["transitions"]:
        values = np.asarray(p["values"][tr["measure"]], dtype=float)
        change = values[-1] - values[0]
        if tr["kind"] == "flat" or change == 0:
            continue
        line, = mech_ax.plot(t, (values - values[0]) / change, lw=1.3,
                             label=f"{MECHANISM_LABELS.get(tr['measure'], tr['measure'])} ({tr['kind']})")
        if tr["kind"] == "moves":
            mech_ax.axvspan(tr["t_low"], tr["t_high"], color=line.get_color(), alpha=0.12, lw=0)
        drawn = True
    if not drawn:
        mech_ax.text(0.5, 0.5, "no mechanism measure differs\nbetween the endpoints" if p["transitions"] else
                     "no mechanism measures", ha="center", va="center", transform=mech_ax.transAxes)
    mech_ax.axhline(0, color="#999", lw=0.6)
    mech_ax.axhline(1, color="#999", lw=0.6)
    mech_ax.set_xlabel("t (0 = A, 1 = B)")
    mech_ax.set_ylabel("progress from A's value to B's")
    if drawn:
        mech_ax.legend(frameon=False, fontsize=7)
    aligned = " (B's units aligned to A's)" if row.get("aligned") else ""
    barriers = "; ".join(f"{_label(name)} barrier {b['height']:.3g} at t = {b['t']:.2f}"
                         for name, b in p["barriers"].items())
    return ReportFigure(f"path-{index}", f"Path {row['a']} → {row['b']}{aligned}",
                        f"The straight path in parameter space (solid) and in function space (dashed). Parameter "
                        f"path: {barriers}; {p['switch']['text']}. Function path: {f['switch']['text']}. Right: "
                        "each mechanism measure rescaled so that A's value is 0 and B's is 1 (shaded: where it "
                        "moves from 0.1 to 0.9).", fig)


@matplotlib.rc_context(RC)
def contrast_figure(row: dict[str, Any], index: int) -> ReportFigure:
    """Two checkpoints side by side (``geometry.contrast``): accuracies and ablations, λ̂, and the
    cosine between the changes one optimizer step makes to their outputs."""
    a, b = row["a"], row["b"]
    panels = 3 if a.get("llc") else 2
    fig, axes = _figure(3.4 * panels, 3.2, ncols=panels)
    labels = ["train", "held-out"]
    pairs = [(a["train_accuracy"], b["train_accuracy"]), (a["test_accuracy"], b["test_accuracy"])]
    for name in ("remove all key", "keep only key"):
        found = [next((x["accuracy"] for x in (s["ablations"] or []) if x["where"] == "embedding"
                       and x["name"] == name), None) for s in (a, b)]
        if None not in found:
            labels.append(f"emb.: {name}")
            pairs.append(tuple(found))
    x = np.arange(len(labels))
    acc_ax = axes[0]
    acc_ax.bar(x - 0.2, [v[0] for v in pairs], 0.4, label=f"A (step {a['step']})", color="#f2c14e")
    acc_ax.bar(x + 0.2, [v[1] for v in pairs], 0.4, label=f"B (step {b['step']})", color="#5fa8d3")
    acc_ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=7)
    acc_ax.set_ylim(0, 1.05)
    acc_ax.set_title("accuracy (ablations: all pairs)")
    acc_ax.legend(frameon=False, fontsize=7)
    cos_ax = axes[1]
    cosine = row["update_cosine"]
    names = [k for k in ("all", "train", "test") if cosine.get(k) is not None and np.isfinite(cosine[k])]
    cos_ax.bar(names, [cosine[k] for k in names], color="#7bc67b")
    cos_ax.axhline(0, color="#999", lw=0.6)
    cos_ax.set_ylim(-1.05, 1.05)
    cos_ax.set_title("cosine of one step's Δf, A vs B")
    if panels == 3:
        llc_ax = axes[2]
        llc_ax.bar(["A", "B"], [a["llc"]["llc"], b["llc"]["llc"]],
                   yerr=[a["llc"]["llc_stderr"], b["llc"]["llc_stderr"]], color=["#f2c14e", "#5fa8d3"], capsize=3)
        llc_ax.set_title("λ̂ (± standard error)")
    agree = row["train_agreement"]
    return ReportFigure(f"contrast-{index}", f"Contrast of steps {a['step']} and {b['step']}",
                        f"Two checkpoints whose answers agree on {agree:.1%} of the training pairs and "
                        f"{row['heldout_agreement']:.1%} of the held-out ones. Left: accuracy, and accuracy on all "
                        "pairs with the common key frequencies removed from (or kept alone in) the embedding. "
                        "Middle: cosine between the changes of the two networks' outputs after one step of the "
                        "run's optimizer (on all inputs, the training inputs, the held-out inputs)"
                        + (". Right: the local learning coefficient." if panels == 3 else "."), fig)
