"""Phase detection: the documented rules on synthetic metrics, and on a tiny real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from progsynth.errors import ConfigError, RunError
from progsynth.report.phases import Phase, detect_phases, summary
from progsynth.runs.store import RunStore


def metrics(train_acc, test_acc, test_loss, weight_norm, every: int = 10) -> pd.DataFrame:
    steps = np.arange(len(train_acc)) * every
    return pd.DataFrame({"step": steps, "train_accuracy": train_acc, "test_accuracy": test_acc,
                         "test_loss": test_loss, "weight_norm": weight_norm})


def grokking(n: int = 110, norm_floor_at: int = 80) -> pd.DataFrame:
    """Train accuracy 1 from row 10, test loss peaking at row 20, test accuracy 1 from row 60,
    weight norm falling from row 20 to row ``norm_floor_at`` and flat after."""
    i = np.arange(n)
    train_acc = np.where(i >= 10, 1.0, i / 10 * 0.9)
    test_acc = np.where(i >= 60, 1.0, np.clip((i - 20) / 50, 0, 0.95))
    test_loss = np.where(i <= 20, 1 + i / 10, 3 - (i - 20) / 40)
    norm = np.where(i < 20, 100.0, np.maximum(100 - (i - 20), 100 - (norm_floor_at - 20)))
    return metrics(train_acc, test_acc, test_loss, norm)


def test_three_phases_of_a_grokking_run():
    phases = detect_phases(grokking())
    assert phases.memorised == 100 and phases.generalised == 600 and phases.last_step == 1090
    assert phases.memorisation == Phase("memorisation", 0, 200, complete=True)  # the test-loss peak
    assert phases.circuit_formation == Phase("circuit formation", 200, 600, complete=True)
    assert phases.cleanup == Phase("cleanup", 600, 800, complete=True)  # the weight norm's floor
    assert [p.name for p in phases.spans()] == ["memorisation", "circuit formation", "cleanup"]
    assert phases.to_dict()["cleanup"] == {"name": "cleanup", "start": 600, "end": 800, "complete": True}


def test_cleanup_still_going_at_the_end_is_marked_ongoing():
    phases = detect_phases(grokking(norm_floor_at=200))  # the norm falls until the last row
    assert phases.cleanup == Phase("cleanup", 600, 1090, complete=False)
    # A plateau needs a whole window [t, 1.25 t] of evidence: one reached at step 900 is too late.
    assert detect_phases(grokking(norm_floor_at=90)).cleanup == Phase("cleanup", 600, 1090, complete=False)


def test_no_cleanup_when_the_weight_norm_is_flat_after_generalising():
    phases = detect_phases(grokking(norm_floor_at=55))  # flat from row 55, before test accuracy 1
    assert phases.generalised == 600 and phases.cleanup is None


def test_a_run_that_only_memorises_is_all_memorisation():
    n = 50
    i = np.arange(n)
    phases = detect_phases(metrics(np.minimum(1.0, i / 10), np.full(n, 0.02), 1 + i / 10, 100 + i))
    assert phases.memorised == 100 and phases.generalised is None
    assert phases.memorisation == Phase("memorisation", 0, 490, complete=True)
    assert phases.circuit_formation is None and phases.cleanup is None


def test_a_run_that_has_not_memorised_yet_is_incomplete_memorisation():
    n = 20
    phases = detect_phases(metrics(np.linspace(0, 0.5, n), np.zeros(n), np.ones(n), np.ones(n)))
    assert phases.memorised is None and phases.memorisation == Phase("memorisation", 0, 190, complete=False)


def test_no_test_set_never_generalises():
    n = 20
    phases = detect_phases(metrics(np.ones(n), np.full(n, np.nan), np.full(n, np.nan), np.ones(n)))
    assert phases.memorised == 0 and phases.generalised is None


def test_thresholds_are_parameters():
    assert detect_phases(grokking(), threshold=0.5).generalised == 450
    with pytest.raises(ConfigError, match="threshold"):
        detect_phases(grokking(), threshold=1.5)
    with pytest.raises(ConfigError, match="plateau_window"):
        detect_phases(grokking(), plateau_window=0)


def test_missing_columns_are_named():
    with pytest.raises(RunError, match="weight_norm"):
        detect_phases(grokking().drop(columns="weight_norm"))


def test_phases_of_a_tiny_real_run(grokked_run: Path):
    phases = detect_phases(RunStore.open(grokked_run).metrics())
    assert phases.memorised is not None and phases.generalised is not None
    assert phases.memorised <= phases.memorisation.end <= phases.generalised < phases.last_step
    assert phases.circuit_formation.start == phases.memorisation.end
    assert phases.circuit_formation.end == phases.generalised


def test_summary_of_a_run_without_measures(grokked_run: Path):
    s = summary(grokked_run)
    assert s.phases.generalised is not None
    assert s.extraction is not None and s.extraction.verdict_kind == "program" and s.extraction.accuracy == 1.0
    missing = {m.what: m.command for m in s.missing}
    assert missing == {"progress measures": f"progsynth analyze {grokked_run}",
                       "local learning coefficient": f"progsynth llc {grokked_run}",
                       "refined λ̂ by component": f"progsynth llc {grokked_run} --restrict all-components",
                       "NTK spectrum over training": f"progsynth ntk {grokked_run}",
                       "paths between checkpoints": f"progsynth path {grokked_run}@43 {grokked_run}@150",
                       "contrast of two checkpoints": f"progsynth contrast {grokked_run} --a 43 --b 150"}
    text = s.text()
    assert f"generalised (test accuracy ≥ 0.99): step {s.phases.generalised}" in text
    assert "key frequencies" in text and "progsynth analyze" in text
    d = s.to_dict()
    assert d["program_accuracy"] == 1.0 and d["key_frequencies"] == s.extraction.key_frequencies


def test_summary_names_a_directory_that_is_not_a_run(tmp_path: Path):
    with pytest.raises(RunError, match=str(tmp_path)):
        summary(tmp_path)
