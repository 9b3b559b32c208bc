"""``progsynth analyze RUN [--checkpoint STEP] [--json]``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.runs.store import MEASURES, RunStore

runner = CliRunner()


def words(output: str) -> str:
    return " ".join(output.split())  # rich wraps lines at the terminal width


def test_json_reports_the_program_and_writes_the_measures(run: Path):
    result = runner.invoke(app, ["analyze", str(run), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    steps = RunStore.open(run).checkpoint_steps()
    assert out["step"] == steps[-1] and out["relabelling"] == "identity"
    assert out["key_frequencies"] and out["accuracy"] == 1.0 and out["agreement"] >= 0.99
    assert out["verdict_kind"] == "program" and out["description_bits"] < out["lookup_table_bits"]
    assert out["program"].splitlines()[-1] == "c = argmax_c logit(c)"
    assert {a["name"] for a in out["ablations"]} >= {"remove all key", "keep only key"}
    measures = out["measures"]
    assert measures["file"] == str(run / MEASURES) and measures["checkpoints"] == len(steps) == measures["computed"]
    assert measures["final"]["step"] == steps[-1] and measures["final"]["restricted_loss"] > 0


def test_text_and_an_earlier_checkpoint(run: Path):
    result = runner.invoke(app, ["analyze", str(run)])
    assert result.exit_code == 0, result.output
    text = words(result.output)
    assert "logit(c) =" in text and "verdict: The network implements a Fourier program" in text
    assert "ablations" in text and "keep only key" in text and "measures:" in text
    early = runner.invoke(app, ["analyze", str(run), "--checkpoint", "0", "--json"])
    assert early.exit_code == 0, early.output
    out = json.loads(early.output.strip().splitlines()[-1])
    assert out["step"] == 0 and out["verdict_kind"] == "none"  # at initialisation there is no program
    assert out["measures"]["computed"] == 0  # the first call measured every checkpoint already


def test_errors_are_one_clear_line(run: Path, tmp_path: Path):
    missing_step = runner.invoke(app, ["analyze", str(run), "--checkpoint", "7"])
    assert missing_step.exit_code == 1 and "Traceback" not in missing_step.output
    text = words(missing_step.output)
    assert f"run '{run}' has no checkpoint at step 7; available:" in text and "from 0 to 150" in text
    nowhere = runner.invoke(app, ["analyze", str(tmp_path / "nowhere"), "--json"])
    assert nowhere.exit_code == 1 and "Traceback" not in nowhere.output
    assert f"run directory '{tmp_path / 'nowhere'}' does not exist" in words(nowhere.output)
    assert runner.invoke(app, ["analyze"]).exit_code == 2
    assert not (run / MEASURES).exists()  # nothing was measured on the way to the error


def test_a_run_without_held_out_pairs_gives_strict_json(trained):
    """Every pair in training: held-out figures are null (never NaN, which is not JSON) and the text
    says n/a."""
    def no_constants(name: str):
        raise AssertionError(f"{name} in the JSON output")

    run = trained("all pairs")
    result = runner.invoke(app, ["analyze", str(run), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1], parse_constant=no_constants)
    assert out["heldout_accuracy"] is None and out["heldout_agreement"] is None
    assert out["network_heldout_accuracy"] is None and out["measures"]["final"]["test_loss"] is None
    assert out["verdict_kind"] == "partial" and out["verdict"].startswith("No pairs are held out")
    text = words(runner.invoke(app, ["analyze", str(run)]).output)
    assert "n/a held out" in text and "test loss n/a" in text
