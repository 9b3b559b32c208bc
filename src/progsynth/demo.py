"""The main job behind ``make demo``: train, read the program out, measure, report.

One call takes a run directory from nothing to ``report.html``:

1. train the ``quick`` preset into it (or resume it if an earlier demo was interrupted; a finished
   run is not retrained);
2. ``interp``: progress measures at every checkpoint and the program extracted from the last one;
   ``slt``: effective size, degeneracies and functional dimension at 24 log-spaced checkpoints;
3. ``slt``: the local learning coefficient at eight log-spaced checkpoints (``DEMO_LLC``);
4. ``report``: the self-contained HTML page, whose one-screen summary the CLI prints.

Every step only adds what is missing, so running the demo again is cheap and an interrupted demo
continues where it stopped. Progress is reported through callbacks so that the library prints
nothing; the CLI turns them into progress bars.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from progsynth.interp.measures import measure_run
from progsynth.report.html import Report, write_report
from progsynth.runs.config import RunConfig, preset
from progsynth.runs.store import CONFIG, RunStore
from progsynth.runs.train import ProgressFn as TrainProgress
from progsynth.runs.train import TrainResult, resume, train
from progsynth.slt.llc import SGLDConfig
from progsynth.slt.run_degeneracy import measure_run_degeneracy
from progsynth.slt.run_llc import estimate_run_llc

DEMO_LLC = SGLDConfig(epsilon=2e-5, num_chains=4, num_burnin=100, num_draws=200, batch_size=256,
                      check_localization_chains=0)
"""The demo's LLC settings: short chains, so that eight checkpoints take about a minute on 2 cores,
and one fixed ε for every checkpoint so that the curve compares like with like. ε = 2e-5 is what
``epsilon="auto"`` picks on the quick preset's checkpoints (2.1e-5 at the end of memorisation).
No localization-check chains: they would double the cost, and chains this short are flagged as
not stationary by the drift check wherever λ̂ is still moving, which already says the figure shows
a trend rather than converged values. γ is the default's (5)."""
DEMO_LLC_CHECKPOINTS = 8
"""How many log-spaced checkpoints the demo estimates λ̂ at."""
DEMO_DEGENERACY_CHECKPOINTS = 24
"""How many log-spaced checkpoints the demo takes the degeneracy measures at (``progsynth analyze``
takes them at every checkpoint; the Jacobian rank costs about a second each on the quick preset)."""


def log_spaced(steps: list[int], count: int) -> list[int]:
    """About ``count`` of ``steps``: step 0 and those nearest to ``count − 1`` points spaced evenly on
    a log axis from 1 % of the last step to the last (duplicates dropped)."""
    if len(steps) <= count:
        return list(steps)
    last = steps[-1]
    first = max(1.0, last / 100)
    targets = [0.0] + [first * (last / first) ** (i / (count - 2)) for i in range(count - 1)]
    return sorted({min(steps, key=lambda s: abs(s - t)) for t in targets})


@dataclass
class DemoProgress:
    """Callbacks for each stage; any may be None. ``stage(name)`` announces a stage."""

    stage: Callable[[str], None] | None = None
    train: TrainProgress | None = None
    measure: Callable[[int, int, int], None] | None = None
    llc: Callable[[int, int], None] | None = None
    report: Callable[[int, int], None] | None = None
    degeneracy: Callable[[int, int, int], None] | None = None


@dataclass
class DemoResult:
    """What the demo did and where the report is."""

    run: Path
    trained: TrainResult
    report: Report
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the report's summary plus stage timings."""
        return {"run": str(self.run), "report": str(self.report.path),
                "steps": self.trained.steps,
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
                **{k: v for k, v in self.report.summary.to_dict().items() if k != "run"}}


def run_demo(out: str | Path, config: RunConfig | None = None, llc: bool = True,
             progress: DemoProgress | None = None) -> DemoResult:
    """Train ``config`` (default: the ``quick`` preset) into ``out``, or continue the run already
    there; measure it, estimate the LLC (unless ``llc`` is False), and write ``out/report.html``."""
    progress = progress or DemoProgress()
    out = Path(out)
    seconds: dict[str, float] = {}

    def stage(name: str) -> float:
        if progress.stage:
            progress.stage(name)
        return time.monotonic()

    started = stage("train")
    if (out / CONFIG).is_file():  # an earlier demo's run: continue it (a no-op once it is finished)
        trained = resume(out, progress=progress.train)
    else:
        trained = train(config or preset("quick"), out, progress=progress.train)
    seconds["train"] = time.monotonic() - started
    if trained.interrupted:
        raise KeyboardInterrupt  # the run is saved and resumable; the caller says how to continue

    started = stage("measure")
    measure_run(out, progress=progress.measure)
    steps = log_spaced(RunStore.open(out).checkpoint_steps(), DEMO_DEGENERACY_CHECKPOINTS)
    measure_run_degeneracy(out, steps, progress=progress.degeneracy)
    seconds["measure"] = time.monotonic() - started

    if llc:
        started = stage("llc")
        steps = log_spaced(RunStore.open(out).checkpoint_steps(), DEMO_LLC_CHECKPOINTS)
        estimate_run_llc(out, steps, DEMO_LLC, progress=progress.llc)
        seconds["llc"] = time.monotonic() - started

    started = stage("report")
    report = write_report(out, progress=progress.report)
    seconds["report"] = time.monotonic() - started
    return DemoResult(out, trained, report, seconds)
