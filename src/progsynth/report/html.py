"""``RUN/report.html``: one self-contained page about a run, readable offline and shareable.

The page inlines everything it shows: figures are SVG elements drawn by matplotlib (text as paths,
so no fonts), styles are one ``<style>`` block, and there is no script. It references no file or
address: copy the HTML anywhere and it renders the same. Each figure can also be written as a PNG
(``RUN/figures/<name>.png``) for papers.

Sections, each present when its data are: the summary and detected phases (``phases.summary``),
loss and accuracy, the progress measures (``interp.measures``), the Fourier spectrum of the
embedding over training (computed here, one checkpoint at a time), the neurons grouped by
frequency and the extracted program (``interp.extract``), the local learning coefficient (rows of
measures.jsonl with an ``llc`` column, written by ``slt``), the NTK spectrum over training, each
path and each contrast written into the run (``geometry``, figures in ``geometry_figures``), then
what is missing and the command that produces it, the run's configuration and the progsynth
version.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Callable

import numpy as np

import progsynth
from progsynth.interp.extract import load_params
from progsynth.interp.frequencies import embedding_norms
from progsynth.interp.relabel import GroupGrid
from progsynth.report.figures import (PHASE_COLOURS, ReportFigure, degeneracy_curves, fourier_spectrum, llc_curve,
                                      refined_llc_curves,
                                      neuron_frequencies, progress_measures, save_png, to_svg,
                                      training_curves)
from progsynth.report.geometry_figures import contrast_figure, ntk_spectrum, path_figure
from progsynth.report.phases import Phases, RunSummary, network_relation, summary
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore

REPORT = "report.html"
"""The report's file name inside the run directory."""
FIGURES = "figures"
"""The PNG export folder inside the run directory."""

ProgressFn = Callable[[int, int], None]
"""Called as (checkpoints read, checkpoints in all) while the spectrum is computed."""


@dataclass(frozen=True, eq=False)
class Report:
    """What ``write_report`` wrote."""

    path: Path
    """The HTML file."""
    figures: list[str]
    """Names of the figures in the page, in order."""
    png: list[Path]
    """PNG files written (empty unless asked for)."""
    summary: RunSummary = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: report, figures, png, phases, missing and the run summary."""
        return {"report": str(self.path), "figures": self.figures, "png": [str(p) for p in self.png],
                "phases": self.summary.phases.to_dict(), "missing": [asdict(m) for m in self.summary.missing],
                "summary": self.summary.to_dict()}


def embedding_spectrum(run: str | Path, grid: GroupGrid,
                       progress: ProgressFn | None = None) -> tuple[list[int], np.ndarray]:
    """The operand embeddings' Fourier norm per frequency at every scheduled checkpoint of ``run``,
    rows read in the group order of ``grid`` (the extracted program's relabelling): (steps, norms
    of shape (⌊n/2⌋, checkpoints)). Checkpoints are read one at a time."""
    store = RunStore.open(run)
    experiment = Experiment(store.config())
    steps = store.checkpoint_steps()
    columns = []
    for i, step in enumerate(steps, 1):
        columns.append(embedding_norms(experiment, load_params(store, experiment, step), grid).numpy())
        if progress:
            progress(i, len(steps))
    return steps, np.stack(columns, axis=1)


def report_figures(s: RunSummary, progress: ProgressFn | None = None) -> list[ReportFigure]:
    """Every figure the run's data allow, in page order."""
    figures = [training_curves(s.metrics, s.phases)]
    if not s.measures.empty:
        measures = progress_measures(s.measures, s.phases)
        if measures is not None:
            figures.append(measures)
    e = s.extraction
    if e is not None:
        steps, norms = embedding_spectrum(s.run, e.grid, progress)
        figures.append(fourier_spectrum(steps, norms, e.key_frequencies, s.phases))
        figures.append(neuron_frequencies(e.clusters.frequency.numpy(), e.clusters.fraction.numpy(),
                                          e.clusters.threshold, e.key_frequencies, e.grid.n // 2))
    if not s.degeneracy.empty:
        figures.append(degeneracy_curves(s.degeneracy, s.metrics, s.phases))
    if not s.llc.empty:
        figures.append(llc_curve(s.llc, s.phases))
    if not s.refined_llc.empty:
        figures.append(refined_llc_curves(s.refined_llc, s.phases))
    if not s.ntk.empty:
        figures.append(ntk_spectrum(s.ntk, s.phases))
    figures += [path_figure(row, i) for i, row in enumerate(s.paths, 1)]
    figures += [contrast_figure(row, i) for i, row in enumerate(s.contrasts, 1)]
    return figures


def write_report(run: str | Path, png: bool = False, progress: ProgressFn | None = None) -> Report:
    """(Re)write ``run/report.html`` and, with ``png``, ``run/figures/*.png``."""
    s = summary(run)
    figures = report_figures(s, progress)
    pngs = []
    if png:
        (s.run / FIGURES).mkdir(exist_ok=True)
        pngs = [save_png(f, s.run / FIGURES) for f in figures]
    path = s.run / REPORT
    tmp = path.with_name(f".{REPORT}.tmp")
    tmp.write_text(render_html(s, figures), encoding="utf-8")
    tmp.replace(path)
    return Report(path, [f.name for f in figures], pngs, s)


STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1000px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.meta { color: #666; margin-top: 0; } nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 0.8em 1em; overflow-x: auto; border-radius: 4px; font-size: 13px; }
pre.program { white-space: pre-wrap; }
figure { margin: 0.6em 0; } figure svg { width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 0.92em; margin-top: 0.3em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; vertical-align: -0.1em; margin-right: 0.3em; }
.missing { background: #fff8e1; border-left: 4px solid #f2c14e; padding: 0.1em 1em 0.5em; margin-top: 1.8em; }
.missing h2 { margin-top: 0.5em; }
.verdict { font-weight: 600; }
"""
"""The page's only style sheet."""


def _table(header: list[str] | None, rows: list[list[str]], numeric: frozenset[int] = frozenset()) -> str:
    """An HTML table (no header row when ``header`` is None); cells are escaped here, columns in
    ``numeric`` right-aligned."""
    head = "" if header is None else "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{escape(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _step(step: int | None) -> str:
    return "never" if step is None else f"step {step}"


def _phase_rows(p: Phases) -> list[list[str]]:
    """One row per phase: its steps, or why it did not happen."""
    never = "" if p.generalised is not None else "never: the run did not generalise"
    rows = []
    for name, phase in (("memorisation", p.memorisation), ("circuit formation", p.circuit_formation),
                        ("cleanup", p.cleanup)):
        if phase is not None:
            rows.append([name, str(phase.start), str(phase.end), "complete" if phase.complete else "ongoing at the end"])
        else:
            rows.append([name, "", "", never or "none: the weight norm was not falling once the run generalised"])
    return rows


def _summary_section(s: RunSummary) -> str:
    p, final, e = s.phases, s.final, s.extraction
    rows = [["memorised (train accuracy ≥ %g)" % p.threshold, _step(p.memorised)],
            ["generalised (test accuracy ≥ %g)" % p.threshold, _step(p.generalised)],
            ["final train / test accuracy", f"{final['train_accuracy']:.3f} / {final['test_accuracy']:.3f}"],
            ["final train / test loss", f"{final['train_loss']:.3g} / {final['test_loss']:.3g}"]]
    if e is not None:
        held = "" if math.isnan(e.heldout_agreement) else f", {e.heldout_agreement:.3f} on held-out pairs"
        rows += [["key frequencies", ", ".join(map(str, e.key_frequencies)) or "none"],
                 ["extracted program accuracy (all pairs)", f"{e.accuracy:.3f}"],
                 ["its agreement with the network's answers", f"{e.agreement:.3f} on all pairs{held}"],
                 ["which the network is", network_relation(e)]]
    swatches = " ".join(f'<span class="swatch" style="background:{c}"></span>{escape(n)}'
                        for n, c in PHASE_COLOURS.items())
    return ("<section id=summary><h2>Summary</h2>" + _table(None, rows)
            + "<h3>Phases</h3>" + _table(["phase", "from step", "to step", ""], _phase_rows(p), frozenset({1, 2}))
            + f"<p>{swatches}</p><p class=meta>Detected from the training metrics: memorisation ends at the "
              "test-loss peak after the training set is fitted, circuit formation ends when test accuracy "
              f"reaches {p.threshold:g}, cleanup ends when the weight norm stops falling "
              "(<code>progsynth.report.phases</code> documents the rules). A run that never generalises is "
              "all memorisation.</p></section>")


def _figure_section(figure: ReportFigure) -> str:
    return (f"<section id={figure.name}><h2>{escape(figure.title)}</h2><figure>{to_svg(figure)}"
            f"<figcaption>{escape(figure.caption)}</figcaption></figure></section>")


def _program_section(s: RunSummary) -> str:
    e = s.extraction
    if e is None:
        return ""
    held = "n/a (no held-out pairs)" if math.isnan(e.heldout_accuracy) else f"{e.heldout_accuracy:.3f}"
    rows = [["accuracy on all pairs", f"{e.accuracy:.3f}"], ["accuracy on held-out pairs", held],
            ["agreement with the network's argmax", f"{e.agreement:.3f}"],
            ["description length", f"{e.description_bits} bits"],
            ["lookup table", f"{e.lookup_table_bits:.0f} bits ({e.lookup_table_bits / e.description_bits:.0f}× longer)"],
            ["variance of the logits explained", f"{e.fit.explained:.1%}"]]
    ablations = [[a.where, a.name, f"{a.loss:.3g}", f"{a.accuracy:.3f}"] for a in e.ablations]
    return (f"<section id=program><h2>Extracted program (checkpoint at step {e.step})</h2>"
            f"<p class=verdict>{escape(e.verdict)}</p><pre class=program>{escape(e.program.text(), quote=False)}</pre>"
            + _table(None, rows)
            + "<h3>Ablations</h3><p class=meta>The network's loss and accuracy on all pairs with frequencies "
              "removed from the operand embeddings or from the logits.</p>"
            + _table(["where", "ablation", "loss", "accuracy"], ablations, frozenset({2, 3})) + "</section>")


def _missing_section(s: RunSummary) -> str:
    if not s.missing:
        return ""
    items = "".join(f"<li><b>{escape(m.what)}</b>: {escape(m.reason)}"
                    + (f"; run <code>{escape(m.command)}</code>" if m.command else "") + "</li>"
                    for m in s.missing)
    return f"<section id=missing class=missing><h2>Not in this report</h2><ul>{items}</ul></section>"


def render_html(s: RunSummary, figures: list[ReportFigure]) -> str:
    """The report page for summary ``s`` with ``figures`` inlined as SVG."""
    sections = [("summary", "Summary")] + [(f.name, f.title) for f in figures]
    if s.extraction is not None:
        sections.append(("program", "Program"))
    if s.missing:
        sections.append(("missing", "Missing"))
    sections.append(("config", "Configuration"))
    nav = "".join(f'<a href="#{name}">{escape(title)}</a>' for name, title in sections)
    config = json.dumps(s.config.to_dict(), indent=2)
    body = "".join([
        f"<header><h1>progsynth report: {escape(s.run.name)}</h1>",
        f"<p class=meta>{escape(str(s.run))} · {s.phases.last_step} steps · progsynth {escape(progsynth.__version__)}</p>",
        f"<nav>{nav}</nav></header>",
        _summary_section(s),
        *(_figure_section(f) for f in figures),
        _program_section(s),
        _missing_section(s),
        f"<section id=config><h2>Configuration</h2><p>progsynth {escape(progsynth.__version__)}; the run's "
        f"<code>config.json</code> (train again with <code>progsynth train --config {escape(str(s.run))}/config.json"
        f"</code>):</p><pre>{escape(config, quote=False)}</pre></section>",
    ])
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>progsynth report: {escape(s.run.name)}</title><style>{STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>\n")
