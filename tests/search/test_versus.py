"""``progsynth versus --quick``: every experiment runs, rows are honest, the page is written, and a
second call resumes instead of repeating work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.errors import ConfigError
from progsynth.runs.store import RunStore
from progsynth.search.versus import VERSUS_FILE, _fit_exponent, load_rows, plan, run_versus

runner = CliRunner()


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("versus")
    result = runner.invoke(app, ["versus", str(out), "--quick", "--json"])
    assert result.exit_code == 0, result.output
    return out


def test_every_experiment_writes_rows_and_the_page(quick: Path) -> None:
    rows = load_rows(quick)
    assert {r["experiment"] for r in rows.values()} == {"data", "size", "parity", "found"}
    assert set(rows) == {p.key for p in plan(("data", "size", "parity", "found"), quick=True)}
    page = (quick / "versus.html").read_text()
    for section in ("id=data", "id=size", "id=parity", "id=found", "<svg"):
        assert section in page


def test_sgd_steps_to_target_agree_with_the_runs_metrics(quick: Path) -> None:
    for row in load_rows(quick).values():
        if row["experiment"] not in ("data", "size", "parity"):
            continue
        metrics = RunStore.open(row["run"]).metrics()
        hit = metrics[metrics["test_accuracy"] >= 0.99]
        assert row["generalised"] == (len(hit) > 0)
        if row["generalised"]:
            assert row["sgd_steps"] == int(hit["step"].iloc[0]) <= row["sgd_steps_run"]


def test_search_and_found_rows(quick: Path) -> None:
    rows = load_rows(quick)
    for row in rows.values():
        if row["experiment"] == "parity":
            assert row["search_found_planted"] and row["subsets"] == math.comb(row["n_bits"], row["k"])
        if row["experiment"] == "size":
            assert row["search_map_size"] == row["target_size"] and row["search_map_accuracy"] == 1.0
    compared = [r for r in rows.values() if r["experiment"] == "found" and r["compared"]]
    assert compared, "the quick plan has a network that generalises"
    for row in compared:
        assert row["same_function"] == (row["same_function_fraction"] == 1.0)


def test_a_second_call_skips_finished_points(quick: Path) -> None:
    lines = (quick / VERSUS_FILE).read_text().splitlines()
    result = runner.invoke(app, ["versus", str(quick), "--quick", "--experiment", "data,size", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["computed"] == [] and len(out["skipped"]) == 4
    assert (quick / VERSUS_FILE).read_text().splitlines() == lines


def test_an_interrupted_point_resumes_its_run(tmp_path: Path) -> None:
    first = run_versus(tmp_path, ("size",), quick=True)
    row = first.rows["size"][0]
    # Forget the row of the first point: the next call resumes that run directory, not a new one.
    lines = (tmp_path / VERSUS_FILE).read_text().splitlines()
    (tmp_path / VERSUS_FILE).write_text("\n".join(lines[1:]) + "\n")
    again = run_versus(tmp_path, ("size",), quick=True)
    assert again.computed == [row["key"]]
    assert again.rows["size"][-1]["sgd_steps"] == row["sgd_steps"]


def test_bad_experiment_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown experiment 'speed'"):
        plan(("speed",), quick=True)
    result = runner.invoke(app, ["versus", str(tmp_path / "v"), "--experiment", "speed"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1


def test_fit_exponent_recovers_a_power_law() -> None:
    assert _fit_exponent([10, 20, 40], [3 * n**1.5 for n in (10, 20, 40)]) == pytest.approx(1.5)
    assert _fit_exponent([10], [5]) is None
