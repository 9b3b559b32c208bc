"""OUT/versus.html: the program search against SGD on one self-contained page.

One figure per experiment of ``search.versus`` that has rows (held-out accuracy against the
training fraction; seconds to a correct program against the target's size; sparse parity's cost
against n and the hidden progress in the weights) and a table comparing the search's MAP program
with the program extracted from each network. Figures are inline SVG, as in the run report.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import numpy as np

import progsynth
from progsynth.report.figures import ReportFigure, _figure, save_png, to_svg
from progsynth.report.html import STYLE
from progsynth.search.versus import TARGET_ACCURACY, VersusResult

__all__ = ["write_versus_report", "versus_figures", "PAGE"]

PAGE = "versus.html"
"""The page's file name in the output directory."""


def _data_figure(rows: list[dict]) -> ReportFigure:
    fig, (ax,) = _figure(8.4, 3.6)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['model']}:{r['op']}", []).append(r)
    for i, (name, rs) in enumerate(sorted(groups.items())):
        rs = sorted(rs, key=lambda r: r["fraction"])
        colour = f"C{i}"
        f = [r["fraction"] for r in rs]
        ax.plot(f, [r["sgd_test_accuracy"] for r in rs], "o-", color=colour, label=f"SGD {name}")
        ax.plot(f, [np.nan if r["search_map_accuracy"] is None else r["search_map_accuracy"] for r in rs],
                "s--", color=colour, alpha=0.7, label=f"search MAP {name}")
    ax.set_xscale("log")
    ax.set_xlabel("training fraction")
    ax.set_ylabel("held-out accuracy")
    ax.axhline(TARGET_ACCURACY, color="#999", lw=0.8, ls=":")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ReportFigure("data", "How much data each needs",
                        "Best held-out accuracy of the network within its epoch budget (solid) and of the search's "
                        "MAP program (dashed) on the same training split.", fig)


def _size_figure(rows: list[dict]) -> ReportFigure:
    fig, (ax,) = _figure(6.4, 3.4)
    rs = sorted(rows, key=lambda r: r["target_size"])
    sizes = [r["target_size"] for r in rs]
    ax.plot(sizes, [r["search_seconds"] for r in rs], "s--", label="search (to the target's size)")
    sgd = [r["sgd_seconds"] if r["generalised"] else np.nan for r in rs]
    ax.plot(sizes, sgd, "o-", label=f"SGD (to {TARGET_ACCURACY:.0%} held out)")
    failed = [r for r in rs if not r["generalised"]]
    if failed:
        ax.plot([r["target_size"] for r in failed], [r["sgd_seconds_run"] for r in failed], "x", color="C1",
                label="SGD budget spent, not generalised")
    ax.set_yscale("log")
    ax.set_xlabel("target program size (nodes)")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    return ReportFigure("size", "Where search breaks",
                        "Seconds to a correct program against its size: enumeration grows exponentially with size.",
                        fig)


def _parity_figure(rows: list[dict]) -> ReportFigure:
    fig, (cost, hidden) = _figure(8.4, 3.4, ncols=2)
    for i, k in enumerate(sorted({r["k"] for r in rows})):
        rs = sorted((r for r in rows if r["k"] == k), key=lambda r: r["n_bits"])
        n = [r["n_bits"] for r in rs]
        cost.plot(n, [np.nan if r["sgd_steps"] is None else r["sgd_steps"] for r in rs], "o-", color=f"C{i}",
                  label=f"SGD steps, k = {k}")
        cost.plot(n, [r["subsets"] for r in rs], "s--", color=f"C{i}", alpha=0.7, label=f"C(n, k), k = {k}")
    cost.set_xscale("log")
    cost.set_yscale("log")
    cost.set_xlabel("n (bits)")
    cost.set_ylabel("steps / subsets")
    cost.legend(fontsize=7)
    biggest = max(rows, key=lambda r: (r["k"], r["n_bits"]))
    steps = [s["step"] for s in biggest["weight_ratio"]]
    hidden.plot(steps, [s["ratio"] for s in biggest["weight_ratio"]], "-", color="C2")
    if biggest["loss_drop_step"] is not None:
        hidden.axvline(biggest["loss_drop_step"], color="#999", ls=":", label="test loss drops")
        hidden.legend(fontsize=7)
    hidden.set_xlabel("step")
    hidden.set_ylabel("first layer: relevant / other bits")
    hidden.set_title(f"n = {biggest['n_bits']}, k = {biggest['k']}", fontsize=9)
    return ReportFigure("parity", "Sparse parity",
                        "Left: SGD's steps to 99 % held-out accuracy and the subsets the search enumerates. Right: "
                        "the first layer's weight on the relevant bits grows before the loss drops (hidden "
                        "progress).", fig)


def versus_figures(result: VersusResult) -> list[ReportFigure]:
    """The figures of the experiments that have rows."""
    makers = {"data": _data_figure, "size": _size_figure, "parity": _parity_figure}
    return [makers[e](rows) for e, rows in result.rows.items() if e in makers and rows]


def _found_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(r['model'])}</td><td>{escape(r['op'])}</td><td>{r['fraction']:g}</td>"
        f"<td><code>{escape(str(r['search_map']))}</code></td><td>{_bits(r.get('search_map_bits'))}</td>"
        f"<td>{escape(r.get('extracted_program', r.get('reason', '')))}</td><td>{_bits(r.get('extracted_bits'))}</td>"
        f"<td>{_same(r)}</td></tr>"
        for r in rows)
    return ("<section id=found><h2>What each found</h2><table><tr><th>model</th><th>op</th><th>fraction</th>"
            "<th>search MAP</th><th>bits</th><th>extracted from the network</th><th>bits</th>"
            f"<th>same function</th></tr>{body}</table></section>")


def _same(row: dict) -> str:
    """'yes', or the fraction of inputs where the two agree, or '' when not compared."""
    if not row["compared"]:
        return ""
    return "yes" if row["same_function"] else f"no ({row['same_function_fraction']:.3f} of inputs agree)"


def _bits(value: Any) -> str:
    return "" if value is None else f"{value:.0f}"


def write_versus_report(result: VersusResult, png: bool = False) -> Path:
    """Write ``OUT/versus.html`` (and with ``png`` each figure as ``OUT/figures/<name>.png``)."""
    figures = versus_figures(result)
    if png:
        (result.out / "figures").mkdir(exist_ok=True)
        for figure in figures:
            save_png(figure, result.out / "figures")
    sections = "".join(f"<section id={f.name}><h2>{escape(f.title)}</h2>{to_svg(f)}<p>{escape(f.caption)}</p>"
                       f"</section>" for f in figures)
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>progsynth versus: {escape(result.out.name)}</title><style>{STYLE}</style></head><body><main>"
            f"<header><h1>Program search versus SGD</h1><p class=meta>{escape(str(result.out))} · progsynth "
            f"{escape(progsynth.__version__)}</p></header>{sections}{_found_table(result.rows.get('found', []))}"
            f"</main></body></html>\n")
    path = result.out / PAGE
    path.write_text(page)
    return path
