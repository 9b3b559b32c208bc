"""Two checkpoints that agree on the training set, contrasted: defaults, held-out behaviour, the
update direction, the LLC reused, and the refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from progsynth.errors import ConfigError, RunError
from progsynth.geometry.contrast import contrast_checkpoints, default_steps, load_contrasts
from progsynth.runs.store import RunStore
from progsynth.slt.llc import SGLDConfig
from progsynth.slt.run_llc import load_llc

TINY_LLC = SGLDConfig(num_chains=2, num_draws=100, num_burnin=20, epsilon=1e-4)


def test_memorising_and_generalising_checkpoints_agree_on_train_only(run: Path):
    first, last = default_steps(RunStore.open(run))
    assert (first, last) == (43, 150)  # train accuracy reaches 0.99 at step 36: the next checkpoint is 43
    result = contrast_checkpoints(run)
    assert (result.a.step, result.b.step) == (43, 150)
    assert result.same_on_train and result.train_agreement == 1.0 and result.notes == []
    assert result.a.test_accuracy < 0.2 and result.b.test_accuracy == 1.0
    assert result.heldout_agreement == pytest.approx(result.a.test_accuracy)  # B is right everywhere
    assert result.a.program["verdict_kind"] == "none" and result.b.program["verdict_kind"] == "program"
    assert result.key_from == "b" and result.b.common["key_energy"] > result.a.common["key_energy"]
    assert result.a.llc is None and all(math.isfinite(v) for v in result.update_cosine.values())
    assert -1 <= result.update_cosine["all"] <= 1 and result.a.update_norm > 0
    rows = load_contrasts(run)
    assert len(rows) == 1 and rows[0]["a"]["step"] == 43 and json.loads(json.dumps(rows[0]))["b"]["step"] == 150


def test_the_update_cosine_is_one_for_a_checkpoint_against_itself_in_function(run: Path):
    """Contrasting a checkpoint with a copy of itself at another step name: same update, cosine 1."""
    store = RunStore.open(run)
    tensors = store.load_checkpoint(150).tensors
    store.save_checkpoint(151, tensors)
    result = contrast_checkpoints(run, 150, 151)
    assert result.update_cosine["all"] == pytest.approx(1.0, abs=1e-12)
    assert result.heldout_agreement == 1.0 and result.a.common == result.b.common


def test_llc_is_estimated_recorded_and_reused(run: Path):
    result = contrast_checkpoints(run, 43, 150, llc=TINY_LLC)
    table = load_llc(run, TINY_LLC)
    assert list(table["step"]) == [43, 150]
    assert result.a.llc["llc"] == table["llc"][0] and result.b.llc["llc_stderr"] == table["llc_stderr"][1]
    again = contrast_checkpoints(run, 43, 150, llc=TINY_LLC)
    assert again.a.llc == result.a.llc and len(load_llc(run)) == 2  # nothing estimated twice
    assert len(load_contrasts(run)) == 1  # the newest row per pair of steps


def test_checkpoints_that_differ_on_train_are_named(run: Path):
    result = contrast_checkpoints(run, 0, 150)
    assert not result.same_on_train and "do not compute the same function on the training set" in result.notes[0]


def test_refusals(run: Path, tmp_path: Path):
    before = (run / "measures.jsonl").exists()
    with pytest.raises(RunError, match="no checkpoint at step 5; available"):
        contrast_checkpoints(run, 5, 150)
    with pytest.raises(ConfigError, match="both step 150"):
        contrast_checkpoints(run, 150, 150)
    assert (run / "measures.jsonl").exists() == before
    metrics = run / "metrics.jsonl"
    lines = [line for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= 10]
    metrics.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunError, match="never reached train accuracy 0.99.*give --a STEP"):
        contrast_checkpoints(run)
    with pytest.raises(RunError, match="does not exist"):
        contrast_checkpoints(tmp_path / "nowhere")
