"""train --until-generalised: the stop rule, stop.json, several seeds leaving the stack one by one,
resuming, and the quick preset's budget for operations other than a + b."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.errors import ConfigError
from progsynth.runs.config import GENERALISED_ACCURACY, for_operation, preset
from progsynth.runs.store import RunStore
from progsynth.runs.train import finished, resume, train
from tests.conftest import GROKS

UNTIL = GROKS.override(until_generalised=True, cleanup=0.5, epochs=400)


def expected_stop(metrics) -> tuple[int, int]:
    """(g, stop step) by the rule, read independently from a run's metrics: g is the first step of
    the last streak of held-out accuracy ≥ 0.99 and the run stops at the first metrics step ≥ 1.5 g."""
    since = None
    for step, accuracy in zip(metrics["step"], metrics["test_accuracy"]):
        since = (since if since is not None else int(step)) if accuracy >= GENERALISED_ACCURACY else None
        if since is not None and step >= 1.5 * since:
            return since, int(step)
    raise AssertionError("the run never met the rule")


def test_a_run_stops_once_generalised_plus_cleanup_and_says_why(tmp_path: Path):
    result = train(UNTIL, tmp_path / "run")
    store = RunStore(tmp_path / "run")
    metrics = store.metrics()
    g, stop = expected_stop(metrics)
    assert result.steps == stop < UNTIL.epochs and result.stopped == ["generalised"]
    assert int(metrics["step"].iloc[-1]) == stop
    assert store.stop() == {"reason": "generalised", "step": stop, "epoch": float(stop), "generalised_step": g,
                            "message": None}
    assert store.checkpoint_steps()[-1] == stop  # the final state is a checkpoint analyses can read
    assert finished(store)
    # Resuming a generalised run has nothing to do and changes nothing.
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    again = resume(tmp_path / "run")
    assert again.steps == stop and again.stopped == ["generalised"]
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before


def test_without_the_flag_the_budget_is_used_and_recorded(tmp_path: Path):
    result = train(GROKS.override(epochs=40), tmp_path / "run")
    assert result.stopped == ["budget"] and RunStore(tmp_path / "run").stop()["reason"] == "budget"
    # Raising the budget in config.json lets resume go on (the run is no longer finished).
    data = json.loads((tmp_path / "run" / "config.json").read_text())
    data["epochs"] = 60
    (tmp_path / "run" / "config.json").write_text(json.dumps(data))
    assert not finished(RunStore(tmp_path / "run"))
    assert resume(tmp_path / "run").steps == 60


def test_seeds_trained_together_each_stop_by_their_own_rule(tmp_path: Path):
    result = train(UNTIL, tmp_path / "group", seeds=[0, 1, 2])
    stops = []
    for seed in (0, 1, 2):
        store = RunStore(tmp_path / "group" / f"seed-{seed}")
        g, stop = expected_stop(store.metrics())
        assert store.stop()["reason"] == "generalised" and store.stop()["generalised_step"] == g
        assert int(store.metrics()["step"].iloc[-1]) == store.stop()["step"] == stop
        stops.append(stop)
    assert result.steps == max(stops) and result.stopped == ["generalised"] * 3
    assert len(set(stops)) > 1, "the seeds should generalise at different steps, or this test shows nothing"


def test_an_interrupted_run_resumes_and_then_stops_by_the_rule(tmp_path: Path):
    first = train(UNTIL, tmp_path / "run", should_stop=lambda step: step == 30)
    assert first.interrupted and RunStore(tmp_path / "run").stop()["reason"] == "interrupted"
    assert not finished(RunStore(tmp_path / "run"))
    second = resume(tmp_path / "run")
    whole = train(UNTIL, tmp_path / "whole")
    assert second.stopped == ["generalised"] and second.steps == whole.steps
    assert RunStore(tmp_path / "run").metrics().equals(RunStore(tmp_path / "whole").metrics())


@pytest.mark.parametrize("changes, words", [
    ({"cleanup": -0.1}, "cleanup must be a finite number"),
    ({"cleanup": float("nan")}, "cleanup must be a finite number"),
    ({"until_generalised": "yes"}, "until_generalised must be true or false"),
    ({"until_generalised": True, "task.train_fraction": 1.0}, "needs held-out examples"),
])
def test_bad_settings_are_refused(changes: dict, words: str):
    with pytest.raises(ConfigError, match=words):
        GROKS.override(**changes)


def test_the_quick_preset_trains_other_operations_until_generalised():
    add = preset("quick")
    assert for_operation("quick", add) == add  # a + b: exactly the preset
    assert for_operation("quick", add.override(**{"task.op": "a + b"})) == add
    sub = for_operation("quick", add.override(**{"task.op": "sub"}))
    assert (sub.epochs, sub.until_generalised, sub.cleanup) == (6000, True, 0.3)
    assert for_operation("gromov", preset("gromov").override(**{"task.op": "mul"})).epochs == 200


def test_the_cli_flags(tmp_path: Path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.json"), "--json"])
    assert result.exit_code == 1 and "does not exist" in result.output
    (tmp_path / "c.json").write_text(json.dumps(GROKS.override(epochs=400).to_dict()))
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.json"), "--until-generalised",
                                      "--cleanup", "0.5", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["stopped"] == ["generalised"] and summary["steps"] < 400
    assert RunStore(out).config().until_generalised and RunStore(out).config().cleanup == 0.5
    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--cleanup", "0.1"])
    assert result.exit_code == 1 and "drop" in result.output and "--cleanup" in result.output
