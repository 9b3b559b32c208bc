"""The command line of the geometry analyses: ntk, path and contrast (--json, exit codes, one-line
errors, Ctrl-C leaving nothing half-written)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.runs.store import read_rows

runner = CliRunner()


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def analyses(run: Path) -> list[str]:
    return [row["analysis"] for row in read_rows(run / "measures.jsonl")]


def test_ntk_json_and_rerun(run: Path):
    argv = ["ntk", str(run), "--checkpoints", "0,150", "--inputs", "60", "--top", "4", "--probes", "4"]
    first = runner.invoke(app, argv + ["--json"])
    assert first.exit_code == 0, first.output
    out = last_json(first.output)
    assert out["computed"] == [0, 150] and [len(r["eigenvalues"]) for r in out["rows"]] == [4, 4]
    assert out["rows"][1]["inputs"] == 60 and "llc" not in out["rows"][0]
    again = runner.invoke(app, argv)
    assert again.exit_code == 0 and "0 measured, 2 already there" in " ".join(again.output.split())
    assert analyses(run) == ["ntk", "ntk"]
    bad = runner.invoke(app, ["ntk", str(run), "--inputs", "0"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "inputs must be an integer ≥ 1, got 0" in bad.output
    missing = runner.invoke(app, ["ntk", str(run), "--checkpoints", "5"])
    assert missing.exit_code == 1 and "no checkpoint at step 5; available:" in missing.output


def test_path_json_text_and_errors(run: Path, tmp_path: Path):
    result = runner.invoke(app, ["path", f"{run}@12", f"{run}@last", "--points", "5", "--json"])
    assert result.exit_code == 0, result.output
    out = last_json(result.output)
    assert out["a"] == f"{run}@12" and out["b"] == f"{run}@150" and out["parameter"]["t"][-1] == 1.0
    assert out["file"] == str(run / "measures.jsonl") and analyses(run) == ["path"]
    text = runner.invoke(app, ["path", f"{run}@12", f"{run}@last", "--points", "5", "--no-mechanism"])
    words = " ".join(text.output.split())
    assert text.exit_code == 0 and "train_loss barrier" in words and "key_energy" not in words
    assert "no mechanism measures: not asked for (--no-mechanism)" in words
    before = (run / "measures.jsonl").read_bytes()
    for argv, message in ((["path", str(run), f"{run}@0"], "RUN@STEP"),
                          (["path", f"{run}@3", f"{run}@4"], "no checkpoint at step 4; available"),
                          (["path", f"{run}@0", f"{tmp_path}/none@0"], "does not exist"),
                          (["path", f"{run}@0", f"{run}@0", "--points", "0"], "from 2 to 1001")):
        failed = runner.invoke(app, argv)
        assert failed.exit_code == 1 and message in failed.output and "Traceback" not in failed.output, argv
    assert (run / "measures.jsonl").read_bytes() == before


def test_ctrl_c_during_a_path_writes_nothing(run: Path, monkeypatch):
    import progsynth.geometry.paths as paths

    calls = {"n": 0}
    original = paths._parameter_row

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(paths, "_parameter_row", interrupted)
    result = runner.invoke(app, ["path", f"{run}@12", f"{run}@last"])
    assert result.exit_code == 130 and "interrupted" in result.output
    assert not (run / "measures.jsonl").exists()


def test_contrast_json_and_text(run: Path):
    result = runner.invoke(app, ["contrast", str(run), "--no-llc", "--json"])
    assert result.exit_code == 0, result.output
    out = last_json(result.output)
    assert (out["a"]["step"], out["b"]["step"]) == (43, 150) and out["same_on_train"] is True
    assert out["a"]["llc"] is None and set(out["update_cosine"]) == {"all", "train", "test"}
    text = runner.invoke(app, ["contrast", str(run), "--a", "43", "--b", "150", "--chains", "2", "--draws",
                               "20", "--burnin", "5", "--epsilon", "1e-4"])
    assert text.exit_code == 0, text.output
    words = " ".join(text.output.split())
    assert "λ̂ ± se" in words and "answers agree on 100.0% of training pairs" in words
    assert analyses(run) == ["contrast", "llc", "llc", "contrast"]
    bad = runner.invoke(app, ["contrast", str(run), "--a", "150", "--b", "150", "--no-llc"])
    assert bad.exit_code == 1 and "both step 150" in bad.output
