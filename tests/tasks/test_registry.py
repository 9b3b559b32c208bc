"""The task registry: every family round-trips through config.json; old configs still open."""

import json

import pytest

from progsynth.errors import ConfigError
from progsynth.runs.config import RunConfig
from progsynth.tasks import FAMILIES, Task, make_task, task_fields, task_from_dict, task_to_dict

EXAMPLES = [
    ("modular", {"p": 7, "op": "mul", "train_fraction": 0.5}),
    ("modular", {"p": 11, "op": "(a+b)^2 - b"}),
    ("modular", {"p": 5, "op": "user_functions:affine"}),
    ("parity", {"n_bits": 12, "k": 3, "seed": 2}),
    ("parity", {"n_bits": 40, "k": 2, "n_samples": 300}),
    ("boolean", {"n_bits": 5, "function": "majority"}),
    ("boolean", {"n_bits": 6, "function": "comparator"}),
    ("boolean", {"n_bits": 4, "function": "random-circuit:7", "seed": 3}),
    ("boolean", {"n_bits": 2, "function": "table:0110"}),
    ("boolean", {"n_bits": 3, "function": "circuit:x0 & x1 | ~x2"}),
    ("boolean", {"n_bits": 3, "function": "user_functions:first_two_agree"}),
]


@pytest.mark.parametrize("family, values", EXAMPLES)
def test_every_family_round_trips_through_config_json(family, values, tmp_path):
    task = make_task(family, **values)
    assert isinstance(task, Task) and task.family == family
    entry = json.loads(json.dumps(task_to_dict(task)))
    assert entry["family"] == family and set(entry) == {"family", *task_fields(family)}
    again = task_from_dict(entry)
    assert again == task
    first, second = task.dataset(), again.dataset()
    assert first.labels.tolist() == second.labels.tolist()
    assert first.train_idx.tolist() == second.train_idx.tolist()
    config = RunConfig(task=task)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    assert RunConfig.load(tmp_path / "config.json") == config


def test_every_registered_family_has_an_example():
    assert {family for family, _ in EXAMPLES} == set(FAMILIES)


def test_a_config_written_before_families_still_opens(tmp_path):
    old = {"task": {"op": "add", "p": 53, "train_fraction": 0.4, "split_seed": 0},
           "model": {"name": "transformer", "d_model": 64, "n_heads": 4, "d_head": 16, "d_mlp": 256,
                     "init": "nanda", "activation": "relu"},
           "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 1.0, "beta1": 0.9, "beta2": 0.98},
           "loss": "cross_entropy", "loss_dtype": None, "epochs": 1300, "batch_size": None, "seed": 0,
           "dtype": "float32", "metrics_every": 10, "max_checkpoints": 200, "resume_every_s": 30.0}
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = RunConfig.load(tmp_path / "config.json")
    assert config.task == make_task("modular", p=53, train_fraction=0.4)
    assert config.to_dict()["task"]["family"] == "modular"


def test_unknown_family_and_fields_are_named():
    with pytest.raises(ConfigError, match="unknown task family 'graph'; expected one of modular, parity, boolean"):
        make_task("graph")
    with pytest.raises(ConfigError, match="task field.s. 'p' do not apply to the parity family; its fields are n_bits"):
        make_task("parity", p=7)
    with pytest.raises(ConfigError, match="must be a mapping"):
        task_from_dict(["modular"])


def test_override_switches_family_and_checks_fields():
    config = RunConfig()
    parity = config.override(**{"task.family": "parity", "task.n_bits": 8, "task.k": 2})
    assert parity.task == make_task("parity", n_bits=8, k=2)
    assert config.override(**{"task.p": 31}).task == make_task("modular", p=31, train_fraction=0.3)
    with pytest.raises(ConfigError, match="'k' do not apply to the modular family"):
        config.override(**{"task.k": 2})


def test_a_task_holding_a_python_function_cannot_be_written():
    config = RunConfig(task=make_task("modular", p=5, op=lambda a, b, p: (a + b) % p))
    with pytest.raises(ConfigError, match="task.op must be text .* import path"):
        config.to_dict()
