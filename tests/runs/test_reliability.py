"""Run directories against hostile files, full and read-only disks, Ctrl-C and a second writer.

Each test names the promise it checks (README → Reliability): a bad file is a one-line RunError
naming it and nothing on disk changes; a torn last line costs only that line; an OS error names
the path and leaves the run resumable; a second writer is refused with the holder's PID.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from progsynth.errors import ProgsynthError, RunError, RunWarning
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import CHECKPOINTS, METRICS, RunStore, read_rows
from progsynth.runs.train import resume, train
from tests.runs.test_train import TINY, final_params


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory and its bytes (the lock file aside: it records the last writer's PID)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A finished TINY run, 30 steps, with its scheduled checkpoints."""
    train(TINY, tmp_path / "run")
    return tmp_path / "run"


def rewrite_step(file: Path, step: object) -> None:
    """Rewrite a checkpoint with its tensors kept and ``__metadata__`` = {"step": step} (or none)."""
    tensors = load_file(str(file))
    save_file(tensors, str(file), metadata=None if step is None else {"step": step})


@pytest.mark.parametrize("claimed", ["-5", "99999999999999999999", "12", " 30", "3e1", None])
def test_a_checkpoint_whose_step_is_wrong_is_refused_and_nothing_changes(run: Path, claimed: object) -> None:
    (run / "resume.safetensors").unlink(missing_ok=True)
    rewrite_step(run / CHECKPOINTS / "step_00000030.safetensors", claimed)
    before = snapshot(run)
    with pytest.raises(RunError, match="step_00000030.safetensors"):
        resume(run)
    assert snapshot(run) == before


def test_a_truncated_checkpoint_is_refused(run: Path) -> None:
    file = run / CHECKPOINTS / "step_00000030.safetensors"
    file.write_bytes(file.read_bytes()[:100])
    before = snapshot(run)
    with pytest.raises(RunError, match="is corrupted|header length"):
        resume(run)
    assert snapshot(run) == before


def test_checkpoints_replaced_by_a_file_is_an_error(run: Path) -> None:
    shutil.rmtree(run / CHECKPOINTS)
    (run / CHECKPOINTS).write_text("not a folder")
    with pytest.raises(RunError, match="is a file"):
        RunStore.open(run).checkpoint_steps()


def test_a_torn_last_line_is_skipped_with_a_warning_then_cut_off(tmp_path: Path) -> None:
    stopped = train(TINY, tmp_path / "run", should_stop=lambda step: step == 13)
    assert stopped.interrupted
    file = tmp_path / "run" / METRICS
    rows = len(read_rows(file))
    with file.open("ab") as handle:
        handle.write(b'{"step": 15, "train_lo')  # what a crash in the middle of a write leaves
    with pytest.warns(RunWarning, match="torn last line"):
        assert len(RunStore.open(tmp_path / "run").metrics()) == rows
    with pytest.warns(RunWarning):
        resume(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the torn line is gone: reading now warns about nothing
        metrics = RunStore.open(tmp_path / "run").metrics()
    reference = train(TINY, tmp_path / "reference")
    assert metrics.equals(RunStore.open(reference.run_dirs[0]).metrics())


def test_a_damaged_middle_line_is_an_error_not_dropped(run: Path) -> None:
    file = run / METRICS
    lines = file.read_text().splitlines(keepends=True)
    lines[2] = "[1, 2]\n"
    file.write_text("".join(lines))
    with pytest.raises(RunError, match="line 3 is not a JSON object"):
        RunStore.open(run).metrics()


def test_a_second_writer_is_refused_with_the_holders_pid(run: Path) -> None:
    store = RunStore.open(run)
    with store.writer():
        with pytest.raises(RunError, match=f"being written by process {os.getpid()}"):
            resume(run)
    resume(run)  # released: now it may


def test_a_lock_left_by_a_killed_process_is_not_stale(run: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom progsynth.runs.store import RunStore\n"
         "with RunStore.open(sys.argv[1]).writer():\n    print('locked', flush=True)\n    time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=f"process {holder.pid}"):
            resume(run)
    finally:
        holder.kill()
        holder.wait()
    assert resume(run).steps == TINY.epochs  # the kernel released the dead holder's lock


def failing_replace(code: int, after: int = 0):
    """An ``os.replace`` that works ``after`` times, then raises OSError(code) (a full or read-only disk)."""
    calls = {"n": 0}
    real = os.replace

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(code, os.strerror(code))
        return real(src, dst)

    return replace


@pytest.mark.parametrize("code,advice", [(errno.ENOSPC, "free some space"), (errno.EROFS, "write somewhere writable")])
def test_a_full_or_read_only_disk_while_training_names_the_path_and_stays_resumable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, advice: str) -> None:
    reference = train(TINY, tmp_path / "reference")
    train(TINY, tmp_path / "run", should_stop=lambda step: step == 6)
    monkeypatch.setattr("progsynth.runs.store.os.replace", failing_replace(code, after=1))
    with pytest.raises(RunError, match=f"cannot write .*{os.strerror(code)}.*{advice}"):
        resume(tmp_path / "run")
    assert not list((tmp_path / "run").rglob("*.tmp"))  # the failed write left no temporary file
    monkeypatch.undo()
    resume(tmp_path / "run")  # space freed: the run continues to the same end
    for key, value in final_params(reference.run_dirs[0]).items():
        assert torch.equal(value, final_params(tmp_path / "run")[key]), key


def test_a_read_only_parent_leaves_no_run_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("progsynth.runs.store.os.replace", failing_replace(errno.EROFS))
    with pytest.raises(RunError, match="cannot (write|create) .*Read-only file system; write somewhere writable"):
        train(TINY, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_a_path_too_long_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="File name too long; choose a shorter path"):
        train(TINY, tmp_path / ("x" * 5000))


def test_a_staging_directory_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".run.staging-{dead.stdout.strip()}-abc"
    live = tmp_path / f".run.staging-{os.getppid()}-abc"  # a process that still runs: left alone
    for folder in (stale, live):
        (folder / CHECKPOINTS).mkdir(parents=True)
    train(TINY, tmp_path / "run")
    assert not stale.exists() and live.exists()


def test_ctrl_c_in_the_middle_of_a_metrics_row_lands_between_steps(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT during the evaluation of step 10 (and a second one during the save): the loop
    finishes the step, logs it, saves the resume point and stops; the summary's step is the
    stop's; resuming gives the uninterrupted run."""
    real_evaluate, real_save = Experiment.evaluate, RunStore.save_checkpoint

    calls = []

    def evaluate(self, params):
        calls.append(1)
        if len(calls) == 3:  # steps 0, 5, then 10
            os.kill(os.getpid(), signal.SIGINT)
        return real_evaluate(self, params)

    def save(self, step, tensors, resume_point=False):
        if resume_point:
            os.kill(os.getpid(), signal.SIGINT)  # the impatient second Ctrl-C
        return real_save(self, step, tensors, resume_point)

    monkeypatch.setattr(Experiment, "evaluate", evaluate)
    monkeypatch.setattr(RunStore, "save_checkpoint", save)
    stopped = train(TINY, tmp_path / "run")
    monkeypatch.undo()
    assert stopped.interrupted and stopped.steps == 10 and stopped.final[0]["step"] == 10
    assert RunStore.open(tmp_path / "run").load_checkpoint().step == 10
    resume(tmp_path / "run")
    reference = train(TINY, tmp_path / "reference")
    assert RunStore.open(tmp_path / "run").metrics().equals(RunStore.open(reference.run_dirs[0]).metrics())


@pytest.mark.parametrize("content", [b"[]", b"null", b"\xff\xfe", json.dumps({"optim": {"lr": "0.1"}}).encode()])
def test_a_config_that_is_not_a_config_is_one_line(run: Path, content: bytes) -> None:
    (run / "config.json").write_bytes(content)
    before = snapshot(run)
    with pytest.raises(ProgsynthError, match="config.json"):
        resume(run)
    assert snapshot(run) == before


def test_a_full_batch_run_whose_config_now_asks_for_minibatches_is_refused(tmp_path: Path) -> None:
    """Found by the config fuzzer: config.json edited to a batch size after full-batch training."""
    from tests.conftest import GROKS

    train(GROKS.override(epochs=4), tmp_path / "run")
    data = json.loads((tmp_path / "run" / "config.json").read_text())
    data.update(batch_size=8, epochs=8)
    (tmp_path / "run" / "config.json").write_text(json.dumps(data))
    with pytest.raises(RunError, match="holds no minibatch order, but the run's config.json asks for batch_size 8"):
        resume(tmp_path / "run")
