"""Command-line conventions (every command: --help with an example, exit code 2 on usage errors)
and the demo pipeline (train, measure, report; interrupted demos continue)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.demo import DEMO_LLC_CHECKPOINTS, DemoProgress, log_spaced, run_demo
from progsynth.runs.store import RunStore
from tests.conftest import GROKS

runner = CliRunner()


def _commands() -> dict[str, list[str]]:
    """Every leaf command as {name: argv prefix}, sub-groups included."""
    root = get_command(app)
    found: dict[str, list[str]] = {}
    for name, command in root.commands.items():
        if hasattr(command, "commands"):
            for sub in command.commands:
                found[f"{name} {sub}"] = [name, sub]
        else:
            found[name] = [name]
    return found


def test_top_level_help_lists_every_command_with_an_example() -> None:
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in get_command(app).commands:
        assert name in result.output
    examples = result.output[result.output.index("Examples"):]
    for name in _commands():
        assert f"progsynth {name}" in examples, name


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_documents_an_example_and_json(name: str) -> None:
    result = runner.invoke(app, [*_commands()[name], "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "--json" in result.output


@pytest.mark.parametrize("argv", [["train", "--epochs", "many"], ["no-such-command"], ["analyze"]])
def test_usage_errors_exit_with_code_2(argv: list[str]) -> None:
    assert runner.invoke(app, argv).exit_code == 2


def test_failures_exit_with_code_1_and_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "nowhere" in result.output and "Traceback" not in result.output


def test_an_interrupted_demo_continues_where_it_stopped(tmp_path: Path) -> None:
    out = tmp_path / "demo"

    def ctrl_c(step: int, total: int, rows: list) -> None:
        if step == 60:  # a real Ctrl-C: the loop finishes the step, saves and stops
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run_demo(out, GROKS, llc=False, progress=DemoProgress(train=ctrl_c))
    assert RunStore.open(out).load_checkpoint().step == 60  # saved on the way out, resumable
    stages: list[str] = []
    result = run_demo(out, llc=False, progress=DemoProgress(stage=stages.append))
    assert stages == ["train", "measure", "report"]
    assert result.trained.steps == GROKS.epochs and not result.trained.interrupted
    assert list(RunStore.open(out).metrics()["step"]) == list(range(0, GROKS.epochs + 1, GROKS.metrics_every))
    summary = result.to_dict()
    assert summary["generalised"] is not None and summary["program_accuracy"] == 1.0
    assert result.report.path == out / "report.html" and result.report.path.stat().st_size > 10_000
    again = run_demo(out)  # a finished demo trains nothing more; this time it adds the LLC
    assert again.trained.steps == GROKS.epochs and again.seconds["train"] < 5
    steps = log_spaced(RunStore.open(out).checkpoint_steps(), DEMO_LLC_CHECKPOINTS)
    assert list(again.report.summary.llc["step"]) == steps and "llc" in again.report.figures


def test_demo_command_json_is_the_last_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("progsynth.demo.preset", lambda name: GROKS)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--no-llc", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["report"].endswith("report.html") and out["steps"] == GROKS.epochs
    assert set(out["seconds"]) == {"train", "measure", "report"}


def test_ctrl_c_in_a_command_says_what_is_kept_and_exits_130(monkeypatch: pytest.MonkeyPatch, grokked_run: Path) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("progsynth.slt.run_llc.estimate_run_llc", interrupted)
    result = runner.invoke(app, ["llc", str(grokked_run), "--checkpoints", "0"])
    assert result.exit_code == 130
    assert "interrupted; everything finished before Ctrl-C is saved" in result.output


def test_an_os_error_escaping_a_command_is_one_line_naming_the_path(monkeypatch: pytest.MonkeyPatch,
                                                                    grokked_run: Path) -> None:
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/some/where.png")

    monkeypatch.setattr("progsynth.report.html.write_report", full)
    result = runner.invoke(app, ["report", str(grokked_run)])
    assert result.exit_code == 1
    assert "cannot use '/some/where.png': No space left on device; free some space" in result.output


@pytest.mark.parametrize("argv,needle", [
    (["--resume", ""], "--resume needs a run directory, got an empty string"),
    (["--resume", "{RUN}", "--epochs", "5", "--task-seed", "3"], "drop --epochs, --task-seed"),
])
def test_resume_refuses_what_it_would_ignore(argv: list[str], needle: str, grokked_run: Path) -> None:
    result = runner.invoke(app, ["train", *[a.replace("{RUN}", str(grokked_run)) for a in argv]])
    assert result.exit_code == 1 and needle in result.output


def test_llc_dln_reports_meaningless_estimates_as_warnings() -> None:
    argv = ["llc-dln", "--widths", "4,3", "--rank", "3", "--n", "500", "--epsilon", "1e-12", "--chains", "1",
            "--draws", "5", "--burnin", "0"]
    text = runner.invoke(app, argv)
    assert text.exit_code == 0 and "all checks passed" not in text.output
    assert text.output.count("warning:") == 3
    warnings = json.loads(runner.invoke(app, [*argv, "--json"]).output.strip().splitlines()[-1])["diagnostics"]["warnings"]
    assert [w.split(":")[0].split(" (")[0][:20] for w in warnings] == \
        ["only one healthy cha", "only 5 draws per cha", "chains [0] barely mo"]


def test_an_interrupted_train_names_the_stop_step_and_the_metrics_step(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from progsynth.runs.train import _Loop

    real_step = _Loop._single_step

    def step_then_ctrl_c_at_10(self: _Loop, x, y) -> None:
        real_step(self, x, y)
        if self.step == 9:  # the step that becomes step 10
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_Loop, "_single_step", step_then_ctrl_c_at_10)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(GROKS.override(metrics_every=4).to_dict()))  # metrics at 8, 12: 10 falls between
    result = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())  # rich wraps at the terminal width
    assert "run: last metrics at step 8 train loss" in text and "interrupted at step 10; continue with" in text
