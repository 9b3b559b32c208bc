"""The search on tasks and run directories, and ``progsynth search``: every family, the run's own
split, the measures row, and one-line errors for bad flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.errors import ConfigError
from progsynth.runs.config import preset
from progsynth.runs.store import RunStore
from progsynth.runs.train import train
from progsynth.search.tasks import ANALYSIS, grammar_for, parse_gates, search_run, search_task
from progsynth.tasks import make_task
from progsynth.tasks.expression import evaluate, parse_arithmetic, parse_boolean

runner = CliRunner()


def test_grammar_follows_the_task_domain() -> None:
    assert grammar_for(make_task("modular", p=97)).binary == ("add", "sub", "mul", "div")
    assert "div" not in grammar_for(make_task("modular", p=96, op="add")).binary  # 96 is not prime
    assert grammar_for(make_task("parity", n_bits=6, k=2)).binary == ("xor",)
    assert set(grammar_for(make_task("boolean", n_bits=5, function="majority")).binary) == {"and", "or", "xor"}
    with pytest.raises(ConfigError, match="gates apply to Boolean tasks"):
        grammar_for(make_task("modular", p=7), gates=("and",))


def test_modular_expression_task_is_found_on_its_split_and_predicts_the_rest() -> None:
    task = make_task("modular", p=31, op="a*b + a + b", train_fraction=0.2)
    found = search_task(task, max_size=7)
    r = found.result
    assert r.verdict_kind == "found"
    data = task.dataset()
    assert found.n_train == len(data.train_idx) and found.n_test == len(data.test_idx)
    # The MAP program computes the label on every pair, held out ones included.
    values, _ = evaluate(r.map_program, data.named_operands(data.test_idx, ("a", "b")), 31)
    assert np.array_equal(values, data.labels[data.test_idx].numpy())
    assert r.map_heldout_accuracy == 1.0 and r.map_size == 7


def test_parity_search_returns_the_planted_subset() -> None:
    task = make_task("parity", n_bits=16, k=3, n_samples=600, seed=4)
    r = search_task(task, max_size=5).result
    assert r.map_size == 5
    names = {n.strip("() ") for n in r.map_text.split("^")}
    assert names == {f"x{i}" for i in task.relevant_bits}
    assert r.map_heldout_accuracy == 1.0


def test_boolean_formula_task_is_recovered() -> None:
    task = make_task("boolean", n_bits=4, function="circuit:(x0 & x1) | x3", train_fraction=1.0)
    r = search_task(task, max_size=5).result
    data = task.dataset()
    env = data.named_operands(data.train_idx, task.operand_names())
    values, _ = evaluate(r.map_program, {k: v.astype(bool) for k, v in env.items()})
    expected, _ = evaluate(parse_boolean("(x0 & x1) | x3", 4), {k: v.astype(bool) for k, v in env.items()})
    assert np.array_equal(values, expected) and r.map_size == 5


def test_search_run_uses_the_runs_split_and_appends_one_row(tmp_path: Path) -> None:
    config = preset("gromov").override(**{"task.p": 13, "task.op": "sub", "epochs": 2, "task.train_fraction": 0.3})
    run = train(config, tmp_path / "run").run_dirs[0]
    before = RunStore.open(run).measures()
    found = search_run(run, max_size=3)
    assert found.n_train == len(config.task.dataset().train_idx)
    assert found.result.map_program == parse_arithmetic("a - b")
    rows = RunStore.open(run).measures()
    assert len(rows) == len(before) + 1
    row = rows.iloc[-1]
    assert row["analysis"] == ANALYSIS and row["map_program"] == "a - b" and row["n_train"] == found.n_train


def test_cli_search_prints_programs_and_json() -> None:
    result = runner.invoke(app, ["search", "--op", "x2+y2", "--p", "31", "--train-fraction", "0.1", "--max-size", "5",
                                 "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["map_program"] == "a^2 + b^2" and out["map_heldout_accuracy"] == 1.0
    assert out["programs_enumerated"] > out["distinct_behaviours"] > 0 and out["seconds"] > 0
    assert "map_predictions" not in out
    text = runner.invoke(app, ["search", "--op", "add", "--p", "31", "--max-size", "3"], terminal_width=200)
    assert text.exit_code == 0 and "a + b" in text.output and "held-out accuracy: MAP 1.000" in text.output


def test_cli_search_no_fit_is_a_verdict_not_an_error() -> None:
    result = runner.invoke(app, ["search", "--op", "a^3 + a*b + b", "--p", "31", "--max-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["verdict_kind"] == "no-fit" and out["best_fit"]["correct"] < out["n_train"]
    assert "no program of size ≤ 4 fits" in out["verdict"]


@pytest.mark.parametrize("argv, message", [
    (["--op", "a ** b"], "exponent"),
    (["--op", "foo"], "unknown"),
    (["--task", "nope"], "unknown task family 'nope'"),
    (["--task", "boolean", "--gates", "and,nand"], "unknown gate 'nand'; valid gates: and, or, xor, not"),
    (["--max-size", "40"], "would evaluate about"),
])
def test_cli_search_bad_input_is_one_line(argv: list[str], message: str) -> None:
    result = runner.invoke(app, ["search", "--p", "31", *argv])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_search_of_a_run_refuses_task_flags(tmp_path: Path) -> None:
    config = preset("gromov").override(**{"task.p": 7, "epochs": 1})
    run = train(config, tmp_path / "run").run_dirs[0]
    before = (run / "measures.jsonl").read_text() if (run / "measures.jsonl").exists() else None
    result = runner.invoke(app, ["search", str(run), "--op", "mul"])
    assert result.exit_code == 1 and "drop the task flag(s) --op" in result.output
    after = (run / "measures.jsonl").read_text() if (run / "measures.jsonl").exists() else None
    assert before == after


def test_parse_gates() -> None:
    assert parse_gates("AND, xor") == ("and", "xor")
    with pytest.raises(ConfigError, match="names no gate"):
        parse_gates(",")
