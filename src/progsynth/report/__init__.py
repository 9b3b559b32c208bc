"""progsynth.report: what a run learned, as one self-contained HTML page.

- ``phases``: the phases of training (memorisation, circuit formation, cleanup) detected from the
  metrics, and ``summary(run)``, the one-screen account of a run that the CLI and demo print;
- ``figures``: the matplotlib figures, as inline SVG or PNG;
- ``html``: ``write_report(run, png=False)`` writes ``RUN/report.html`` (and ``RUN/figures/*.png``);
- ``sweep``: ``write_sweep_report(sweep)`` writes ``SWEEP/report.html``, the phase diagram and time
  to generalise of a sweep directory (figures in ``sweep_figures``).
"""
