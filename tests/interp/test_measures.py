"""interp/measures.py: progress measures at every checkpoint, one checkpoint in memory at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from progsynth.interp.measures import load_measures, measure_run
from progsynth.runs.store import MEASURES, RunStore
from tests.conftest import LoadTracker

COLUMNS = ["restricted_loss", "excluded_loss", "gini_embedding", "gini_neuron_logit", "weight_norm",
           "train_loss", "test_loss"]


def test_measures_every_checkpoint_one_at_a_time(run: Path, monkeypatch: pytest.MonkeyPatch):
    tracker = LoadTracker(monkeypatch)
    progress = []
    result = measure_run(run, progress=lambda done, total, step: progress.append((done, total, step)))
    steps = RunStore.open(run).checkpoint_steps()
    assert tracker.max_alive == 1 and tracker.alive() == 0  # never two checkpoints in memory, none kept
    assert sorted(tracker.steps) == sorted(steps + [steps[-1]])  # each once, the final twice (its extraction)
    assert result.computed == len(steps) and result.skipped == 0
    assert progress == [(i + 1, len(steps), s) for i, s in enumerate(steps)]
    table = load_measures(run)
    assert table["step"].tolist() == steps and set(COLUMNS) <= set(table.columns)
    assert table.equals(result.table)
    assert all(list(k) == result.final.key_frequencies for k in table["key_frequencies"])
    # Written as rows of measures.jsonl, tagged as this analysis.
    rows = RunStore.open(run).measures()
    assert len(rows) == len(steps) and set(rows["analysis"]) == {"interp"} and (run / MEASURES).is_file()


def test_measures_match_training_and_track_the_circuit(run: Path):
    table = measure_run(run).table
    metrics = RunStore.open(run).metrics().set_index("step")
    common = [s for s in table["step"] if s in metrics.index]
    assert len(common) >= 3
    for column in ("train_loss", "test_loss", "weight_norm"):
        assert table.set_index("step").loc[common, column].to_numpy() == pytest.approx(
            metrics.loc[common, column].to_numpy(), rel=1e-4)
    first, last = table.iloc[0], table.iloc[-1]
    # Grokked: the key frequencies alone do better than the whole network, and without them the
    # training loss is back near chance; at initialisation restricting changes little.
    assert last["restricted_loss"] < last["test_loss"] and last["excluded_loss"] > 3 * last["train_loss"]
    assert last["restricted_loss"] < 0.5 * first["restricted_loss"]
    for column in ("gini_embedding", "gini_neuron_logit"):
        assert table[column].between(0, 1).all()


def test_a_second_run_computes_nothing_new(run: Path, monkeypatch: pytest.MonkeyPatch):
    first = measure_run(run)
    lines = (run / MEASURES).read_text().splitlines()
    tracker = LoadTracker(monkeypatch)
    again = measure_run(run)
    assert again.computed == 0 and again.skipped == len(first.table)
    assert tracker.steps == [first.table["step"].iloc[-1]]  # only the final checkpoint, for its key set
    assert (run / MEASURES).read_text().splitlines() == lines
    assert again.table.equals(first.table)


def test_no_measures_yet_is_an_empty_table(run: Path):
    assert load_measures(run).empty
