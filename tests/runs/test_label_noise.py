"""Random labels (Zhang et al. 2017) for every task family: ``tasks.common.with_label_noise``, the
``label_noise`` fields of ``RunConfig``, ``runs.experiment.run_data``, ``progsynth train
--label-noise`` and the program search of a noisy run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import progsynth.search.tasks as search_tasks
from progsynth.cli import app
from progsynth.errors import ConfigError
from progsynth.runs.config import RunConfig, preset
from progsynth.runs.experiment import Experiment, run_data
from progsynth.runs.store import RunStore
from progsynth.runs.train import train
from progsynth.search.tasks import search_run, search_task
from progsynth.tasks import make_task
from progsynth.tasks.common import MAX_SEED, TaskData, with_label_noise
from tests.conftest import GROKS

runner = CliRunner()

TASKS = {
    "modular": make_task("modular", p=11, train_fraction=0.5),
    "parity": make_task("parity", n_bits=8, k=3, n_samples=301, train_fraction=0.7),
    "boolean": make_task("boolean", n_bits=6, function="majority", train_fraction=0.6),
}
DATA = {name: task.dataset() for name, task in TASKS.items()}
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
NOISY = GROKS.override(epochs=6, label_noise=0.5, label_noise_seed=3, max_checkpoints=3)
"""The tiny grokking config, half its training labels wrong, a few epochs."""


def check_noise(data: TaskData, noisy: TaskData, fraction: float) -> None:
    """Exactly round(fraction · n_train) training labels changed, each to another class in range;
    every held-out label and every operand and index as it was."""
    changed = noisy.labels != data.labels
    assert int(changed.sum()) == round(fraction * len(data.train_idx))
    assert not changed[data.test_idx].any()
    assert ((noisy.labels >= 0) & (noisy.labels < data.n_classes)).all()
    assert noisy.labels.dtype == data.labels.dtype and type(noisy) is type(data)
    assert torch.equal(noisy.operands, data.operands) and torch.equal(noisy.train_idx, data.train_idx)
    assert torch.equal(noisy.test_idx, data.test_idx)


@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("family", sorted(TASKS))
def test_exactly_the_fraction_of_training_labels_changes(family: str, fraction: float) -> None:
    data = DATA[family]
    labels = data.labels.clone()
    noisy = with_label_noise(data, fraction, seed=5)
    check_noise(data, noisy, fraction)
    assert torch.equal(data.labels, labels)  # the input is left as it was
    if fraction == 0:
        assert noisy is data
    if family == "modular":  # the modular data keeps its tokens (a b =)
        assert torch.equal(noisy.tokens(), data.tokens())


@settings(deadline=None, derandomize=True, database=None, max_examples=60)
@given(family=st.sampled_from(sorted(TASKS)), fraction=st.floats(0, 1), seed=st.integers(0, MAX_SEED))
def test_noise_property(family: str, fraction: float, seed: int) -> None:
    data = DATA[family]
    noisy = with_label_noise(data, fraction, seed)
    check_noise(data, noisy, fraction)
    assert torch.equal(with_label_noise(data, fraction, seed).labels, noisy.labels)


@pytest.mark.parametrize("family", sorted(TASKS))
def test_reproducible_and_seed_dependent(family: str) -> None:
    data = DATA[family]
    first = with_label_noise(data, 0.5, seed=1)
    assert torch.equal(with_label_noise(data, 0.5, seed=1).labels, first.labels)
    assert not torch.equal(with_label_noise(data, 0.5, seed=2).labels, first.labels)
    # The seed is independent of the split seed: the split alone decides the rows.
    other_split = make_task(TASKS[family].family, **{**_fields(TASKS[family]), "split_seed": 9}).dataset()
    assert not torch.equal(other_split.train_idx, data.train_idx)
    check_noise(other_split, with_label_noise(other_split, 0.5, seed=1), 0.5)


def _fields(task: Any) -> dict[str, Any]:
    from progsynth.tasks import task_to_dict

    return {k: v for k, v in task_to_dict(task).items() if k != "family"}


def test_bad_arguments_raise_config_error() -> None:
    data = DATA["modular"]
    for fraction in (-0.1, 1.5, float("nan"), float("inf"), True, "0.5"):
        with pytest.raises(ConfigError, match="label_noise must be a finite number in \\[0, 1\\]"):
            with_label_noise(data, fraction, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="label_noise_seed"):
        with_label_noise(data, 0.5, -1)
    one_class = TaskData(data.operands, torch.zeros_like(data.labels), data.train_idx, data.test_idx, data.vocab, 1)
    with pytest.raises(ConfigError, match="at least 2 label classes"):
        with_label_noise(one_class, 0.5, 0)
    assert with_label_noise(one_class, 0.0, 0) is one_class


def test_config_fields_validate_override_and_old_files_load() -> None:
    default = RunConfig()
    assert default.label_noise == 0.0 and default.label_noise_seed == 0
    config = default.override(**{"label_noise": 0.5, "label_noise_seed": 7})
    assert (config.label_noise, config.label_noise_seed) == (0.5, 7)
    data = config.to_dict()
    assert data["label_noise"] == 0.5 and data["label_noise_seed"] == 7
    assert RunConfig.from_dict(json.loads(json.dumps(data))) == config
    old = {k: v for k, v in GROKS.to_dict().items() if k not in ("label_noise", "label_noise_seed")}
    loaded = RunConfig.from_dict(old)
    assert loaded == GROKS and loaded.label_noise == 0.0 and loaded.label_noise_seed == 0
    for bad in (1.5, -0.5, float("nan"), True, None):
        with pytest.raises(ConfigError, match="label_noise"):
            RunConfig.from_dict({**old, "label_noise": bad})
    for bad in (-1, 2**63, 0.5):
        with pytest.raises(ConfigError, match="label_noise_seed"):
            default.override(label_noise_seed=bad)


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("noise") / "run"
    train(NOISY, out)
    return out


def test_a_noisy_run_reopens_with_its_trained_labels(noisy_run: Path) -> None:
    config = RunStore.open(noisy_run).config()
    assert config == NOISY
    expected = with_label_noise(NOISY.task.dataset(), 0.5, 3)
    experiment = Experiment(config)
    clean = NOISY.task.dataset()
    assert torch.equal(experiment.labels, expected.labels)
    assert torch.equal(run_data(config).labels, expected.labels)
    assert torch.equal(experiment.labels_test, clean.labels[clean.test_idx])
    assert not torch.equal(experiment.labels_train, clean.labels[clean.train_idx])
    # MSE targets are the one-hot noisy labels.
    assert torch.equal(experiment.y_train.argmax(-1), expected.labels[expected.train_idx])


def test_cli_train_maps_the_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(GROKS.override(epochs=2, max_checkpoints=2).to_dict()))
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(config_file), "--out", str(out), "--label-noise", "0.25",
                                 "--label-noise-seed", "11", "--json"])
    assert result.exit_code == 0, result.output
    stored = RunStore.open(out).config()
    assert (stored.label_noise, stored.label_noise_seed) == (0.25, 11)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "inf", "nan", "half"])
def test_cli_label_noise_out_of_range_is_a_usage_error(value: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--label-noise", value, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "--label-noise" in result.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags", [["--label-noise", "0.5"], ["--label-noise-seed", "2"]])
def test_cli_resume_refuses_the_noise_flags(noisy_run: Path, flags: list[str]) -> None:
    before = (noisy_run / "metrics.jsonl").read_bytes()
    result = runner.invoke(app, ["train", "--resume", str(noisy_run), *flags])
    assert result.exit_code == 1 and flags[0] in result.output
    assert (noisy_run / "metrics.jsonl").read_bytes() == before


def test_search_run_searches_the_trained_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = preset("gromov").override(**{"task.p": 13, "task.op": "sub", "epochs": 2, "task.train_fraction": 0.3})
    config = clean.override(label_noise=0.25, label_noise_seed=4)
    run = train(config, tmp_path / "run").run_dirs[0]
    seen: list[Any] = []
    real = search_tasks.search_programs

    def spy(grammar: Any, env: Any, labels: Any, max_size: int, query: Any, query_labels: Any, **kw: Any) -> Any:
        seen.append((labels.copy(), query_labels.copy()))
        return real(grammar, env, labels, max_size, query, query_labels, **kw)

    monkeypatch.setattr(search_tasks, "search_programs", spy)
    found = search_run(run, max_size=3)
    noisy = with_label_noise(clean.task.dataset(), 0.25, 4)
    assert found.n_train == len(noisy.train_idx) and found.n_test == len(noisy.test_idx)
    (train_labels, test_labels), = seen
    assert (train_labels == noisy.labels[noisy.train_idx].numpy()).all()
    assert (test_labels == noisy.labels[noisy.test_idx].numpy()).all()
    # The true program a − b no longer fits every training label; the clean task's search finds it.
    assert found.result.map_program != search_task(clean.task, max_size=3).result.map_program
    assert found.result.n_consistent == search_task(config.task, max_size=3, data=noisy).result.n_consistent
    row = RunStore.open(run).measures().iloc[-1]
    assert row["analysis"] == "search" and row["n_train"] == found.n_train
