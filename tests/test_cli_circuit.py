"""``progsynth circuit iris``: the RDA lookup table on binarised Iris."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from progsynth.cli import app

runner = CliRunner()


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["circuit", "iris", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.parametrize("labels", ["onehot", "binary"])
def test_two_classes_reproduce_the_paper(labels):
    out = run_json("--classes", "2", "--labels", labels)
    assert out["classes"] == 2 and out["labels"] == labels
    assert out["train_accuracy"] == 1.0
    assert out["test_accuracy"] == pytest.approx(49 / 50) == out["paper_test_accuracy"]
    assert out["seconds"] > 0 and len(out["table"]) == 16


@pytest.mark.parametrize("labels", ["onehot", "binary"])
def test_three_classes_differ_from_the_paper_by_one_corrected_row(labels):
    out = run_json("--classes", "3", "--labels", labels)
    # scikit-learn's corrected sample 38 lands on a setosa-only pattern: 56/75, paper (UCI) 55/75
    assert out["test_accuracy"] == pytest.approx(56 / 75) and out["train_accuracy"] == pytest.approx(56 / 75)
    assert out["paper_test_accuracy"] == pytest.approx(0.733)
    assert out["table"][0] == ("010" if labels == "onehot" else "10")  # pattern 0000 was last seen on versicolor


def test_human_output():
    result = runner.invoke(app, ["circuit", "iris", "--classes", "2"])
    assert result.exit_code == 0 and "test accuracy 0.980" in result.output


@pytest.mark.parametrize("args, option", [(["--classes", "4"], "--classes"), (["--labels", "gray"], "--labels")])
def test_bad_options_exit_2(args, option):
    result = runner.invoke(app, ["circuit", "iris", *args])
    assert result.exit_code == 2 and option in result.output
