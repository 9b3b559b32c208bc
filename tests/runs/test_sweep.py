"""progsynth sweep: the spec and its checks, and real sweeps on a local Ray cluster started by the
sweep itself (resume, a worker killed with SIGKILL, Ctrl-C, a failing point, a dead address)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.errors import ConfigError, RunError
from progsynth.runs.store import RunStore
from progsynth.runs.sweep import (SweepOptions, SweepSpec, check_address, config_fields, load_sweep,
                                  parse_grid_flag, point_name, run_sweep)
from progsynth.runs.train import train
from tests.conftest import GROKS

TINY = GROKS.override(epochs=20, max_checkpoints=5)
"""A sweep point that trains in well under a second."""


def spec(**grid) -> SweepSpec:
    return SweepSpec(TINY, {k: tuple(v) for k, v in grid.items()}, ({},), (0, 1))


# ---- the spec ------------------------------------------------------------------------------------
def test_the_grid_expands_to_named_points_in_order():
    points = spec(**{"optim.weight_decay": [1, 5.0], "task.train_fraction": [0.3, 0.5]}).expand()
    assert [p.name for p in points] == [
        "optim.weight_decay=1,task.train_fraction=0.3", "optim.weight_decay=1,task.train_fraction=0.5",
        "optim.weight_decay=5.0,task.train_fraction=0.3", "optim.weight_decay=5.0,task.train_fraction=0.5"]
    assert points[3].config == TINY.override(**{"optim.weight_decay": 5.0, "task.train_fraction": 0.5})
    crossed = SweepSpec(TINY, {"optim.lr": (0.01, 0.02)}, ({}, {"model.d_mlp": 32}), (0,)).expand()
    assert [p.name for p in crossed] == ["optim.lr=0.01", "optim.lr=0.02", "model.d_mlp=32,optim.lr=0.01",
                                         "model.d_mlp=32,optim.lr=0.02"]
    assert point_name({}) == "base" and point_name({"model.init": "tl", "x": False}) == "model.init=tl,x=false"
    assert point_name({"task.op": "a*b"}).startswith("task.op=a_b~")  # made safe, kept apart by a hash


def test_spec_files_in_toml_and_json_and_flags(tmp_path: Path):
    (tmp_path / "s.toml").write_text('preset = "gromov"\nseeds = "0-2"\n[set]\nepochs = 20\n'
                                     '[grid]\n"optim.lr" = [0.01, 0.02]\n')
    toml = SweepSpec.load(tmp_path / "s.toml")
    assert toml.seeds == (0, 1, 2) and toml.base.epochs == 20 and toml.grid == {"optim.lr": (0.01, 0.02)}
    (tmp_path / "s.json").write_text(json.dumps(toml.to_dict()))
    assert SweepSpec.load(tmp_path / "s.json") == toml  # sweep.json reads back as the same spec
    assert parse_grid_flag("optim.lr=1e-3,3e-3") == ("optim.lr", (0.001, 0.003))
    assert parse_grid_flag("model.init=nanda,tl") == ("model.init", ("nanda", "tl"))
    assert parse_grid_flag("until_generalised=true,false") == ("until_generalised", (True, False))


@pytest.mark.parametrize("data, words", [
    ({"grid": {"optim.lrr": [1]}}, "unknown config field 'optim.lrr'; valid fields: batch_size, cleanup"),
    ({"grid": {"optim.lr": ["fast"]}}, "optim.lr='fast': optim.lr must be a finite number"),
    ({"grid": {"optim.lr": [[1, 2]]}}, "must be text, a number, true/false or null"),
    ({"grid": {"seed": [1, 2]}}, "sweep the model seed with seeds"),
    ({"grid": {"optim.lr": []}}, "needs a non-empty list"),
    ({"set": {"model.name": "resnet"}}, "set: model.name='resnet'"),
    ({"grid": {"optim.lr": [0.1]}, "points": [{"optim.lr": 0.2}]}, "which the grid sweeps too"),
    ({"seeds": [0, 0]}, "distinct non-negative integers"),
    ({"seeds": "x"}, "seeds must look like"),
    ({"preset": "fast"}, "unknown preset 'fast'"),
    ({"preset": "quick", "base": {}}, "give one of base, preset and config"),
    ({"grids": {}}, "unknown key(s) 'grids'"),
    ({"version": 9}, "this progsynth reads version 1"),
])
def test_a_bad_spec_is_one_line_naming_the_problem(data: dict, words: str):
    with pytest.raises(ConfigError) as error:
        SweepSpec.from_dict({"preset": "gromov", **data} if "base" not in data else data)
    assert words in str(error.value) and "\n" not in str(error.value)


@settings(max_examples=60, deadline=None)
@given(name=st.text(min_size=1, max_size=20), value=st.one_of(st.none(), st.booleans(), st.integers(),
                                                              st.floats(allow_nan=True), st.text(max_size=8)))
def test_any_field_and_value_is_accepted_or_refused_in_one_line(name: str, value):
    try:
        points = SweepSpec(TINY, {name: (value,)}).expand()
    except ConfigError as error:
        assert "\n" not in str(error)
        if name not in config_fields(TINY):
            assert repr(name) in str(error) or "seeds" in str(error)
    else:
        assert name in config_fields(TINY) and len(points) == 1


# ---- running on Ray ------------------------------------------------------------------------------
def finished_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_a_tiny_sweep_on_local_ray_runs_resumes_and_refuses_another_spec(tmp_path: Path):
    out = tmp_path / "sweep"
    grid = spec(**{"optim.weight_decay": [1.0, 5.0]})
    started = time.monotonic()
    result = run_sweep(grid, out, SweepOptions(workers=2))
    assert time.monotonic() - started < 60
    assert [p["status"] for p in result.points] == ["finished", "finished"] and result.address == "local"
    assert json.loads((out / "sweep.json").read_text()) == json.loads(json.dumps(grid.to_dict()))
    for point in grid.expand():
        assert json.loads((out / point.name / "point.json").read_text()) == {"name": point.name, "values": point.values}
        for seed in (0, 1):
            store = RunStore(out / point.name / f"seed-{seed}")
            assert store.config() == point.config.override(seed=seed) and store.stop()["reason"] == "budget"
    # Seeds of a point trained together through vmap equal the same runs trained alone.
    alone = train(grid.expand()[1].config.override(seed=1), tmp_path / "alone")
    assert alone.final[0]["train_loss"] == pytest.approx(
        RunStore(out / grid.expand()[1].name / "seed-1").metrics().iloc[-1]["train_loss"], rel=1e-5)
    # Running it again skips everything and touches nothing, without starting Ray.
    before = finished_files(out)
    again = run_sweep(grid, out)
    assert [p["status"] for p in again.points] == ["skipped", "skipped"] and again.address == "none needed"
    assert finished_files(out) == before
    # load_sweep reads the directory back; another spec is refused and changes nothing.
    assert load_sweep(out)[0] == grid
    with pytest.raises(RunError, match="holds a different sweep .its grid differ.; give a new directory"):
        run_sweep(spec(**{"optim.weight_decay": [1.0, 3.0]}), out)
    assert finished_files(out) == before


def test_an_address_that_does_not_answer_is_one_line_fast(tmp_path: Path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RunError, match=f"no Ray cluster answers at '127.0.0.1:{port}'"):
        run_sweep(spec(**{"optim.lr": [0.01]}), tmp_path / "sweep", SweepOptions(address=f"127.0.0.1:{port}"))
    assert time.monotonic() - started < 30 and not (tmp_path / "sweep").exists()
    with pytest.raises(ConfigError, match="HOST:PORT"):
        check_address("nowhere")


def sweep_command(out: Path, epochs: int) -> list[str]:
    """A sweep of two points, one worker: a run long enough to interrupt, then one whose loss
    becomes non-finite at the first step."""
    return [str(Path(sys.executable).parent / "progsynth"), "sweep", str(out), "--preset", "gromov", "--set", "task.p=31",
            "--set", "model.d_mlp=128", "--set", f"epochs={epochs}", "--set", "resume_every_s=0.2", "--set", "max_checkpoints=4",
            "--grid", "optim.lr=0.01,1e30", "--seeds", "0", "--workers", "1", "--json"]


def start_sweep(out: Path, epochs: int) -> subprocess.Popen:
    """``sweep_command`` as a child process that Ctrl-C reaches: a child inherits an *ignored*
    SIGINT (as every command started in the background of a non-interactive shell has it, CI
    scripts included), so the parent's own disposition is the default one while it starts."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(sweep_command(out, epochs), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for_progress(run: Path, step: int, process: subprocess.Popen, timeout: float = 90) -> int:
    """The PID holding ``run``'s lock once its metrics reach ``step``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and metrics.read_text().count("\n") > step:  # the gromov preset logs every step
            return int((run / ".lock").read_text().strip())
        time.sleep(0.1)
    raise AssertionError("the sweep made no progress")


def test_ctrl_c_a_killed_worker_and_a_failing_point_lose_nothing(tmp_path: Path):
    """Ctrl-C stops the sweep cleanly; the same command continues it; a worker killed with SIGKILL
    is re-run by Ray and resumes from the last resume point, bit-identically; a point whose loss
    becomes non-finite is recorded as failed while the others go on."""
    out, epochs = tmp_path / "sweep", 1500
    run = out / "optim.lr=0.01" / "seed-0"
    process = start_sweep(out, epochs)
    wait_for_progress(run, 200, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert RunStore(run).stop()["reason"] == "interrupted"
    interrupted_at = int(RunStore(run).metrics()["step"].iloc[-1])
    assert 200 <= interrupted_at < epochs

    process = start_sweep(out, epochs)
    os.kill(wait_for_progress(run, interrupted_at + 300, process), signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert process.returncode == 1 and summary["counts"] == {"finished": 1, "failed": 1}, stderr
    failed = summary["failed"][0]
    assert failed["point"] == "optim.lr=1e+30" and "NaN or inf" in failed["message"]
    assert json.loads((out / "optim.lr=1e+30" / "failed.json").read_text())["message"] == failed["message"]
    assert RunStore(out / "optim.lr=1e+30" / "seed-0").stop()["reason"] == "failed"
    store = RunStore(run)
    steps = store.metrics()["step"].tolist()
    assert store.stop()["reason"] == "budget" and steps == sorted(set(steps)) and steps[-1] == epochs
    torch.set_num_threads(1)  # the workers' thread count: full-batch training is then deterministic
    whole = train(store.config(), tmp_path / "whole")
    a, b = store.load_checkpoint(epochs).tensors, RunStore(tmp_path / "whole").load_checkpoint(whole.steps).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_bad_input_is_one_line_before_anything_starts(tmp_path: Path):
    for args, words in ((["--grid", "optim.lrr=1"], "unknown config field 'optim.lrr'; valid fields:"),
                        (["--grid", "optim.lr"], "--grid must look like FIELD=V1,V2"),
                        (["--grid", "optim.lr=1", "--grid", "optim.lr=2"], "given twice"),
                        (["--spec", "x.toml", "--grid", "optim.lr=1"], "--spec gives the whole sweep"),
                        (["--grid", "optim.lr=1", "--workers", "0"], "workers must be an integer from 1"),
                        ([], "is not a sweep directory: it has no sweep.json")):
        result = CliRunner().invoke(app, ["sweep", str(tmp_path / "s")] + args)
        assert result.exit_code == 1 and words in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_a_point_task_measures_its_runs_when_asked(tmp_path: Path):
    """What a worker runs for one point (``run_point``, here without Ray): train the seeds, then --analyze's measures and --llc's λ̂ into each run's measures.jsonl; run again, it adds nothing."""
    from progsynth.runs.sweep import run_point

    point = tmp_path / "point"
    point.mkdir()
    config = GROKS.override(epochs=60).to_dict()
    result = run_point(str(point), config, [0], analyze=True, llc=True)
    assert result["status"] == "finished" and result["stopped"] == ["budget"]
    for seed in (0,):
        measures = RunStore(point / f"seed-{seed}").measures()
        assert set(measures["analysis"]) == {"interp", "llc"}
        assert (measures["analysis"] == "llc").sum() == len(set(measures.loc[measures["analysis"] == "llc", "step"])) > 1
    before = finished_files(point)
    assert run_point(str(point), config, [0], analyze=True, llc=True)["status"] == "finished"
    assert finished_files(point) == before


def test_an_analysis_that_does_not_apply_is_skipped_not_failed(tmp_path: Path):
    from progsynth.runs.config import preset
    from progsynth.runs.sweep import run_point

    config = preset("boolean").override(**{"task.n_bits": 6, "epochs": 5, "model.d_mlp": 16}).to_dict()
    result = run_point(str(tmp_path), config, [0], analyze=True)
    assert result["status"] == "finished" and result["message"].startswith("analyze skipped: ")
    assert not (tmp_path / "failed.json").exists()
