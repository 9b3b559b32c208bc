"""The sweep page: Liu et al.'s phases on hand-written metrics (boundaries included), cells, time to
generalise, key frequencies, the page, atomic writing, the CLI and its one-line errors."""

from __future__ import annotations

import errno
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.errors import ConfigError, RunError
from progsynth.report.sweep import (SWEEP_PAGE, PhaseCriteria, classify_phase, sweep_phases,
                                    write_sweep_report)
from tests.conftest import GROKS
from tests.report.test_report import assert_self_contained, sections

runner = CliRunner()

WD, TF = "optim.weight_decay", "task.train_fraction"
GRID = {WD: [0.1, 1.0], TF: [0.3, 0.5, 0.7]}


# ---- fixtures: sweep directories written by hand, exactly as `progsynth sweep` lays them out -----
def metric_rows(train_at: int | None, test_at: int | None, last: int, generalised_at: int | None = None,
                every: int = 100) -> list[dict]:
    """Rows every ``every`` steps (plus the named steps) to ``last``: train accuracy 1 from
    ``train_at`` (0.5 before), test accuracy 0.95 from ``test_at`` and 1 from ``generalised_at``
    (0.1 before); None: never."""
    marks = {s for s in (train_at, test_at, generalised_at) if s is not None and s <= last}
    steps = sorted(set(range(0, last + 1, every)) | marks | {last})
    rows = []
    for step in steps:
        train = 1.0 if train_at is not None and step >= train_at else 0.5
        test = (1.0 if generalised_at is not None and step >= generalised_at else
                0.95 if test_at is not None and step >= test_at else 0.1)
        rows.append({"step": step, "epoch": float(step), "train_loss": 1 - train, "train_accuracy": train,
                     "test_loss": 1 - test, "test_accuracy": test, "weight_norm": 100.0})
    return rows


def write_run(run: Path, rows: list[dict], stop: str | None = "budget", keys: list[int] | None = None) -> None:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(GROKS.to_dict()))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if stop is not None:
        last = rows[-1]["step"] if rows else 0
        (run / "stop.json").write_text(json.dumps({"reason": stop, "step": last, "epoch": float(last),
                                                   "generalised_step": None, "message": None}))
    if keys is not None:
        (run / "measures.jsonl").write_text("".join(
            json.dumps({"step": s, "analysis": "interp", "relabelling": "identity", "key_frequencies": keys,
                        "restricted_loss": 0.1}) + "\n" for s in (0, rows[-1]["step"])))


def write_point(sweep: Path, values: dict, runs: dict[int, tuple], failed: dict | None = None) -> Path:
    name = ",".join(f"{k}={v}" for k, v in values.items())
    point = sweep / name
    point.mkdir(parents=True)
    (point / "point.json").write_text(json.dumps({"name": name, "values": values}))
    for seed, (rows, stop, keys) in runs.items():
        write_run(point / f"seed-{seed}", rows, stop, keys)
    if failed is not None:
        (point / "failed.json").write_text(json.dumps(failed))
    return point


def write_spec(sweep: Path, grid: dict, seeds: list[int]) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "sweep.json").write_text(json.dumps({"version": 1, "base": GROKS.to_dict(), "grid": grid,
                                                  "points": [], "seeds": seeds, "started": "today"}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Six grid points (weight decay × data fraction), three seeds each:

    - wd 0.1, tf 0.3: confusion ×3 (train never reaches 0.9);
    - wd 0.1, tf 0.5: memorisation ×3 (test never reaches);
    - wd 0.1, tf 0.7: comprehension ×2 (generalised at steps 400 and 600), seed 2 unfinished;
    - wd 1.0, tf 0.3: grokking ×2 (gaps exactly 1,000 and 3,000), comprehension ×1 (gap 999),
      generalised at steps 1,500, 1,200 and 3,500; seeds 0 and 1 analysed (key frequencies);
    - wd 1.0, tf 0.5: failed (failed.json), seed 0 left a partial run;
    - wd 1.0, tf 0.7: no directory (not started).
    """
    out = tmp_path / "sweep"
    write_spec(out, GRID, [0, 1, 2])
    write_point(out, {WD: 0.1, TF: 0.3}, {s: (metric_rows(None, None, 5000), "budget", None) for s in range(3)})
    write_point(out, {WD: 0.1, TF: 0.5}, {s: (metric_rows(200, None, 5000), "budget", None) for s in range(3)})
    write_point(out, {WD: 0.1, TF: 0.7}, {0: (metric_rows(100, 300, 800, 400), "generalised", None),
                                          1: (metric_rows(100, 500, 900, 600), "budget", None),
                                          2: (metric_rows(100, None, 700), None, None)})
    write_point(out, {WD: 1.0, TF: 0.3}, {0: (metric_rows(100, 1100, 5000, 1500), "budget", [3, 7]),
                                          1: (metric_rows(100, 1099, 5000, 1200), "budget", [3, 11]),
                                          2: (metric_rows(100, 3100, 5000, 3500), "budget", None)})
    write_point(out, {WD: 1.0, TF: 0.5}, {0: (metric_rows(100, None, 300), "failed", None)},
                failed={"message": "RuntimeError: CUDA out of memory", "seeds": [0, 1, 2]})
    return out


def frame(train: list[float], test: list[float], steps: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"step": steps, "train_accuracy": train, "test_accuracy": test})


# ---- the phase rules ---------------------------------------------------------------------------
def test_the_four_phases_and_the_gap_boundary():
    steps = [0, 100, 1099, 1100, 5000]
    at = lambda first: [1.0 if s >= first else 0.0 for s in steps]  # noqa: E731
    assert classify_phase(frame(at(100), at(1100), steps)).to_dict() == {
        "phase": "grokking", "train_step": 100, "test_step": 1100}  # gap exactly 1,000: grokking
    assert classify_phase(frame(at(100), at(1099), steps)).phase == "comprehension"  # 999
    assert classify_phase(frame(at(100), at(5000), steps)).phase == "grokking"
    assert classify_phase(frame(at(100), [0.5] * 5, steps)).phase == "memorisation"
    assert classify_phase(frame([0.89] * 5, at(100), steps)).phase == "confusion"  # train never reaches
    assert classify_phase(frame(at(1100), at(100), steps)).phase == "comprehension"  # test first
    # Reach is ≥ the threshold, read at the logged steps; NaN and a missing column never reach.
    assert classify_phase(frame([0.9] * 5, [0.9] * 5, steps)).phase == "comprehension"
    assert classify_phase(frame(at(0), [math.nan] * 5, steps)).phase == "memorisation"
    assert classify_phase(pd.DataFrame({"step": steps, "train_accuracy": at(0)})).phase == "memorisation"
    assert classify_phase(pd.DataFrame()).phase == "confusion"
    # Other thresholds.
    assert classify_phase(frame([0.6] * 5, [0.0, 0.0, 0.0, 0.6, 0.6], steps), PhaseCriteria(reach=0.5, gap=1101)
                          ).to_dict() == {"phase": "comprehension", "train_step": 0, "test_step": 1100}
    assert classify_phase(frame(at(100), at(1099), steps), PhaseCriteria(gap=999)).phase == "grokking"


@pytest.mark.parametrize("kwargs, named", [({"reach": 0.0}, "reach"), ({"reach": 1.5}, "reach"),
                                           ({"reach": math.nan}, "reach"), ({"gap": 0}, "gap"),
                                           ({"gap": 10.5}, "gap"), ({"generalised": 2}, "generalised")])
def test_thresholds_out_of_range_are_one_line_errors(kwargs, named):
    with pytest.raises(ConfigError) as caught:
        PhaseCriteria(**kwargs)
    message = str(caught.value)
    assert message.startswith(named) and repr(next(iter(kwargs.values()))) in message and "\n" not in message


# ---- a whole sweep ------------------------------------------------------------------------------
def test_cells_runs_times_and_frequencies(sweep: Path):
    s = sweep_phases(sweep)
    assert (s.fields, s.x, s.y, s.facets, s.along) == ([WD, TF], WD, TF, [], TF)
    cells = {(c.values[WD], c.values[TF]): c for c in s.cells}
    assert [(c.phase, c.counts, c.seeds, c.tie) for c in s.cells] == [
        ("confusion", {"confusion": 3}, 3, False),
        ("memorisation", {"memorisation": 3}, 3, False),
        ("comprehension", {"comprehension": 2, "unfinished": 1}, 3, False),
        ("grokking", {"comprehension": 1, "grokking": 2}, 3, False),
        ("failed", {"failed": 3}, 3, False),
        ("unfinished", {"unfinished": 3}, 3, False)]
    assert cells[1.0, 0.5].message == "RuntimeError: CUDA out of memory"
    assert cells[1.0, 0.7].message == "not started" and cells[1.0, 0.7].point == f"{WD}=1.0,{TF}=0.7"
    assert s.counts == {"comprehension": 3, "grokking": 2, "memorisation": 3, "confusion": 3, "unfinished": 4,
                        "failed": 3}
    runs = {(r.point.split(",")[0], r.point.split(",")[1], r.seed): r for r in s.runs}
    unfinished = runs[f"{WD}=0.1", f"{TF}=0.7", 2]
    assert (unfinished.status, unfinished.phase, unfinished.metrics_phase, unfinished.stop_reason,
            unfinished.last_step) == ("unfinished", "unfinished", "memorisation", None, 700)
    grok = runs[f"{WD}=1.0", f"{TF}=0.3", 0]
    assert (grok.phase, grok.train_step, grok.test_step, grok.generalised_step, grok.train_accuracy,
            grok.test_accuracy, grok.key_frequencies, grok.relabelling, grok.key_step) == (
        "grokking", 100, 1100, 1500, 1.0, 1.0, [3, 7], "identity", 5000)
    partial = runs[f"{WD}=1.0", f"{TF}=0.5", 0]
    assert (partial.status, partial.stop_reason, partial.message, partial.metrics_phase) == (
        "failed", "failed", "RuntimeError: CUDA out of memory", "memorisation")
    missing = runs[f"{WD}=1.0", f"{TF}=0.5", 1]
    assert missing.path is None and missing.phase == "failed"
    assert runs[f"{WD}=1.0", f"{TF}=0.7", 0].message == "not started"

    times = {(t.series[WD], t.value): t for t in s.times}
    t = times[1.0, 0.3]
    assert (t.seeds, t.generalised, t.unfinished, t.min, t.max, t.last_step) == (3, 3, 0, 1200, 3500, 5000)
    assert t.mean == pytest.approx(np.mean([1500, 1200, 3500])) and t.std == pytest.approx(np.std([1500, 1200, 3500],
                                                                                                  ddof=1))
    t = times[0.1, 0.7]
    assert (t.generalised, t.unfinished, t.mean, t.min, t.max) == (2, 1, 500.0, 400, 600)
    t = times[0.1, 0.3]
    assert (t.generalised, t.mean, t.std, t.last_step) == (0, None, None, 5000)
    t = times[1.0, 0.5]  # failed seeds are left out: their metrics stop short
    assert (t.seeds, t.failed, t.generalised, t.last_step) == (3, 3, 0, None)
    assert s.frequency_counts == [{"relabelling": "identity", "frequency": 3, "runs": 2},
                                  {"relabelling": "identity", "frequency": 7, "runs": 1},
                                  {"relabelling": "identity", "frequency": 11, "runs": 1}]
    data = json.loads(json.dumps(s.to_dict()))
    assert data["counts"]["grokking"] == 2 and data["analysed"] == 2 and len(data["runs"]) == 18
    # Nanda et al.'s grokking step (test loss < 0.1): here test loss is 1 − accuracy, so it falls
    # under 0.1 exactly when test accuracy first reaches 0.95, the test reach step.
    assert all(r.grokked_step == r.test_step for r in s.runs if r.path is not None)
    for t, cell_runs in ((times[1.0, 0.3], [r for r in s.runs if r.point == f"{WD}=1.0,{TF}=0.3"]),
                         (times[0.1, 0.7], [r for r in s.runs if r.point == f"{WD}=0.1,{TF}=0.7"])):
        reached = [r.grokked_step for r in cell_runs if r.grokked_step is not None and r.status != "failed"]
        assert t.grokked == len(reached) and t.grokked_mean == pytest.approx(np.mean(reached))
        assert (t.grokked_min, t.grokked_max) == (min(reached), max(reached))
    with pytest.raises(ConfigError, match="grokked_loss .* must be a finite number > 0, got 0"):
        PhaseCriteria(grokked_loss=0)


def test_interrupted_and_empty_runs_and_ties(sweep: Path):
    point = sweep / f"{WD}=0.1,{TF}=0.3"
    (point / "seed-0" / "stop.json").write_text(json.dumps({"reason": "interrupted", "step": 5000, "epoch": 5000.0,
                                                            "generalised_step": None, "message": None}))
    (point / "seed-1" / "metrics.jsonl").write_text("")
    s = sweep_phases(sweep)
    runs = {r.seed: r for r in s.runs if r.point == point.name}
    assert (runs[0].status, runs[0].phase, runs[0].metrics_phase, runs[0].message) == (
        "unfinished", "unfinished", "confusion", "interrupted (resumable)")
    assert (runs[1].phase, runs[1].last_step, runs[1].message) == (
        "failed", None, "stopped (budget) without logging any metrics")
    cell = s.cells[0]
    assert (cell.phase, cell.counts, cell.tie) == ("confusion", {"confusion": 1, "unfinished": 1, "failed": 1}, True)
    assert "confusion 1/3 (tie)" in write_sweep_report(sweep).path.read_text()


def test_thresholds_change_the_phases(sweep: Path):
    s = sweep_phases(sweep, criteria=PhaseCriteria(gap=999))
    assert [c.counts for c in s.cells if c.values == {WD: 1.0, TF: 0.3}] == [{"grokking": 3}]
    s = sweep_phases(sweep, criteria=PhaseCriteria(reach=0.99, generalised=0.95))
    cell = next(c for c in s.cells if c.values == {WD: 1.0, TF: 0.3})
    assert cell.counts == {"grokking": 3}  # test reaches 0.99 at 1,500, 1,200, 3,500
    assert next(t for t in s.times if t.point == cell.point).min == 1099


def test_axes_facets_and_bad_fields(tmp_path: Path, sweep: Path):
    s = sweep_phases(sweep, x=TF, y=WD)
    assert (s.x, s.y, s.along) == (TF, WD, TF)
    assert (sweep_phases(sweep, x=TF).y, sweep_phases(sweep, y=TF).x) == (WD, WD)
    for kwargs, words in (({"x": "optim.lr"}, "--x 'optim.lr' is not a swept field"),
                          ({"y": "seed"}, "--y 'seed' is not a swept field"),
                          ({"x": WD, "y": WD}, "--x and --y are both")):
        with pytest.raises(ConfigError) as caught:
            sweep_phases(sweep, **kwargs)
        assert words in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=f"swept: {WD}, {TF}$"):
        sweep_phases(sweep, x="optim.lr")

    # Three swept fields: the third facets the diagram; lr is not in the grid, so time to
    # generalise is against the data fraction still; with one field the diagram is one row.
    three = tmp_path / "three"
    write_spec(three, {WD: [0.1], TF: [0.3], "optim.lr": [0.001, 0.01]}, [0])
    for lr in (0.001, 0.01):
        write_point(three, {WD: 0.1, TF: 0.3, "optim.lr": lr}, {0: (metric_rows(100, 200, 400), "budget", None)})
    s = sweep_phases(three)
    assert (s.x, s.y, s.facets) == (WD, TF, ["optim.lr"])
    page = write_sweep_report(three).path.read_text()
    assert page.count("<table class=diagram>") == 2 and "optim.lr = 0.001" in page and "optim.lr = 0.01" in page

    one = tmp_path / "one"
    write_spec(one, {"optim.lr": [0.001, 0.01]}, [0])
    write_point(one, {"optim.lr": 0.001}, {0: (metric_rows(100, 200, 400, 300), "budget", None)})
    s = sweep_phases(one)
    assert (s.x, s.y, s.along) == ("optim.lr", None, "optim.lr")
    report = write_sweep_report(one)
    page = report.path.read_text()
    assert page.count("<table class=diagram>") == 1 and page.count("<tr><th></th>") == 1
    assert "against <code>optim.lr</code> (the x field: <code>task.train_fraction</code> is not swept)" in page
    assert report.figures == ["generalisation"]

    none = tmp_path / "none"
    write_spec(none, {}, [0])
    s = sweep_phases(none)
    assert (s.fields, s.x, s.y, s.times) == ([], None, None, [])
    with pytest.raises(ConfigError, match="swept: none"):
        sweep_phases(none, x=WD)
    page = write_sweep_report(none).path.read_text()
    assert "sweeps no field, so there is no phase diagram" in page and "<table class=diagram>" not in page


def test_not_a_sweep_and_damaged_files(tmp_path: Path, sweep: Path):
    for path, words in ((tmp_path / "nowhere", "does not exist"),
                        (tmp_path, "is not a sweep directory: it has no sweep.json")):
        with pytest.raises(RunError, match=words):
            sweep_phases(path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "sweep.json").write_text('{"grid": {"optim.lr": 0.1}}')
    with pytest.raises(RunError, match="non-empty list of values"):
        sweep_phases(bad)
    (bad / "sweep.json").write_text("{not json")
    with pytest.raises(RunError, match="is not a valid sweep spec"):
        sweep_phases(bad)
    # A damaged run does not stop the page: that seed is failed, with the one-line reason.
    (sweep / f"{WD}=0.1,{TF}=0.3" / "seed-1" / "stop.json").write_text('{"reason": "bored"}')
    run = next(r for r in sweep_phases(sweep).runs if r.point == f"{WD}=0.1,{TF}=0.3" and r.seed == 1)
    assert run.phase == "failed" and "is not a stop record" in run.message


# ---- the page -----------------------------------------------------------------------------------
def test_the_page(sweep: Path):
    report = write_sweep_report(sweep)
    assert report.path == sweep / SWEEP_PAGE and report.figures == ["generalisation", "frequencies"]
    page = report.path.read_text()
    assert_self_contained(page)
    assert sections(page) == ["phases", "generalisation", "frequencies", "runs", "spec"]
    assert page.count("<svg") == 2 and page.count("<table class=diagram>") == 1
    words = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    # The thresholds in words.
    assert "reaches at the first logged step at which its accuracy is ≥ 0.9" in words
    assert "test less than 1,000 steps after train" in words and "test 1,000 or more steps after train" in words
    assert "test accuracy is ≥ 0.99 (generalised)" in words
    # The cells: majority and counts, the failed point's message, the point not started; y falls down the rows.
    assert "grokking 2/3 comprehension 1/3" in words and "comprehension 2/3 unfinished 1/3" in words
    assert "failed 3/3 RuntimeError: CUDA out of memory" in words and "unfinished 3/3 not started" in words
    assert words.index("0.7 comprehension 2/3") < words.index("0.3 confusion 3/3")
    # Time to generalise (table), key frequencies, every run.
    assert "0.3 weight_decay=1 3/3 2,067 1,250 1,200–3,500" in words.replace(WD, "weight_decay")
    assert "never (by step 5,000)" in words and "not yet (3 unfinished)" in words
    assert "0.5 optim.weight_decay=1 0/3 — — failed" in words
    assert "2 of 18 runs have their key frequencies extracted" in words and "3, 11" in words
    assert "unfinished (so far: memorisation)" in words
    assert page.count("<tr><td>" + f"{WD}=1.0,{TF}=0.3") == 3 + 2  # runs table + key-frequency table


def test_no_key_frequencies_names_the_command(tmp_path: Path):
    out = tmp_path / "plain"
    write_spec(out, {TF: [0.3, 0.5]}, [0])
    for tf in (0.3, 0.5):
        write_point(out, {TF: tf}, {0: (metric_rows(100, 300, 500, 400), "budget", None)})
    report = write_sweep_report(out, out=tmp_path / "pages" / "sweep.html")
    page = report.path.read_text()
    assert report.path == tmp_path / "pages" / "sweep.html" and report.figures == ["generalisation"]
    assert "No run of this sweep has its key frequencies extracted yet" in page
    assert "progsynth analyze RUN" in page and "progsynth sweep --analyze" in page


def test_the_page_is_written_atomically(sweep: Path, monkeypatch: pytest.MonkeyPatch):
    page = sweep / SWEEP_PAGE
    page.write_text("the old page")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunError, match="No space left on device"):
        write_sweep_report(sweep)
    assert page.read_text() == "the old page"
    assert sorted(p.name for p in sweep.iterdir() if p.is_file()) == [SWEEP_PAGE, "sweep.json"]


# ---- the command --------------------------------------------------------------------------------
def test_cli_json_and_text(sweep: Path, tmp_path: Path):
    result = runner.invoke(app, ["sweep-report", str(sweep), "--x", TF, "--y", WD, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["report"] == str(sweep / SWEEP_PAGE) and (out["x"], out["y"]) == (TF, WD)
    assert out["counts"] == {"comprehension": 3, "grokking": 2, "memorisation": 3, "confusion": 3, "unfinished": 4,
                             "failed": 3}
    assert [c["phase"] for c in out["cells"]] == ["confusion", "memorisation", "comprehension", "grokking", "failed",
                                                  "unfinished"]
    assert out["cells"][3]["counts"] == {"comprehension": 1, "grokking": 2}
    assert out["criteria"] == {"reach": 0.9, "gap": 1000, "generalised": 0.99, "grokked_loss": 0.1}
    page = tmp_path / "page.html"
    text = runner.invoke(app, ["sweep-report", str(sweep), "--out", str(page), "--gap", "999"])
    assert text.exit_code == 0 and page.is_file(), text.output
    words = " ".join(text.output.split())
    assert "6 points, 18 runs" in words and f"{WD}=1.0,{TF}=0.3: grokking — grokking 3/3" in words
    assert f"report: {page}" in words


@pytest.mark.parametrize("args, code, words", [
    (["missing-dir"], 1, "does not exist"),
    ([".", "--x", "optim.lr"], 1, "is not a swept field of"),
    ([".", "--reach", "1.5"], 1, "reach (the accuracy at which a split reaches) must lie in (0, 1], got 1.5"),
    ([".", "--gap", "0"], 1, "must be an integer from 1"),
    ([".", "--gap", "ten"], 2, "Invalid value"),
])
def test_cli_errors_are_one_line(sweep: Path, args, code, words):
    args = [str(sweep) if a == "." else str(sweep / a) if a == "missing-dir" else a for a in args]
    result = runner.invoke(app, ["sweep-report", *args])
    assert result.exit_code == code and words in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1 and not (sweep / SWEEP_PAGE).exists()
