"""The model registry: names, options, tasks, seeds and errors."""

import pytest
import torch

from progsynth.errors import ConfigError
from progsynth.models import build_model
from progsynth.models.mlp import EmbeddingMLP, GromovMLP
from progsynth.models.transformer import StraightforwardTransformer, Transformer
from progsynth.tasks.modular import ModularTask, modular_dataset
from progsynth.tasks.parity import ParityTask, parity_dataset

TASK = ModularTask(p=7)
SMALL = {"d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 16}


@pytest.mark.parametrize(
    "name, cls, kind",
    [("transformer", Transformer, "tokens"), ("gromov", GromovMLP, "onehot"), ("mlp", EmbeddingMLP, "tokens")],
)
def test_each_model_runs_on_its_task_encoding(name, cls, kind):
    model = build_model(name, TASK, seed=0, **SMALL)
    assert type(model) is cls and model.input_kind == kind
    data = modular_dataset(TASK)
    assert model(data.inputs(model.input_kind)).shape == (49, 7)


def test_options_reach_the_models():
    transformer = build_model("transformer", TASK, init="tl", mlp_bias=False, implementation="straightforward", **SMALL)
    assert type(transformer) is StraightforwardTransformer
    assert transformer.config.init == "tl" and not transformer.config.mlp_bias and transformer.config.d_head == 4
    assert build_model("gromov", TASK, d_mlp=33).config.width == 33
    assert build_model("gromov", TASK).config.width == 500
    mlp = build_model("mlp", TASK, d_model=5, d_mlp=9, activation="gelu")
    assert (mlp.config.d_embed, mlp.config.hidden, mlp.config.activation) == (5, (9,), "gelu")
    assert build_model("mlp", TASK, hidden=[6, 4]).config.hidden == (6, 4)


def test_shared_config_fields_are_ignored_by_models_that_do_not_use_them():
    """runs.config.ModelConfig passes every field to every model."""
    shared = {"d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 16, "init": "nanda", "activation": "relu"}
    for name in ("transformer", "gromov", "mlp"):
        build_model(name, TASK, seed=1, **shared)


def test_seed_and_dtype():
    a = build_model("mlp", TASK, seed=3)
    b = build_model("mlp", TASK, seed=3, dtype="float64")
    c = build_model("mlp", TASK, seed=4)
    assert b.W_E.dtype == torch.float64 and torch.equal(a.W_E, b.W_E.float())
    assert not torch.equal(a.W_E, c.W_E)


def test_parity_task_with_the_mlps():
    task = ParityTask(n_bits=6, k=2)
    data = parity_dataset(task)
    for name in ("gromov", "mlp"):
        model = build_model(name, task, seed=0, d_mlp=8)
        assert model(data.inputs(model.input_kind)).shape == (64, 2)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [(("resnet", TASK), {}, r"unknown model 'resnet'; expected one of \['transformer', 'gromov', 'mlp'\]"),
     (("mlp", TASK), {"depth": 3}, r"unknown model option\(s\) \['depth'\]"),
     (("transformer", ParityTask(n_bits=4, k=2)), {}, "not a parity task; choose the model .mlp. or .gromov."),
     (("mlp", "add"), {}, "needs a task"),
     (("transformer", TASK), {"implementation": "jit"}, "implementation must be one of"),
     (("mlp", TASK), {"hidden": (4,), "d_mlp": 8}, "either hidden"),
     (("mlp", TASK), {"dtype": "float16"}, "dtype must be"),
     (("mlp", TASK), {"seed": 1.5}, "seed must be an int"),
     (("transformer", TASK), {"init": "xavier"}, "init must be one of")],
)
def test_errors(args, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_model(*args, **kwargs)


def test_unembed_equals_reaches_the_transformer_and_is_refused_by_the_mlps():
    model = build_model("transformer", TASK, seed=0, unembed_equals=True, **SMALL)
    assert model.config.unembed_equals and model(modular_dataset(TASK).tokens()).shape == (49, 8)
    assert not build_model("transformer", TASK, seed=0, **SMALL).config.unembed_equals
    for name in ("gromov", "mlp"):
        build_model(name, TASK, unembed_equals=False, **SMALL)  # off: the shared default, ignored
        with pytest.raises(ConfigError, match=f"unembed_equals .* transformer only, not to '{name}'"):
            build_model(name, TASK, unembed_equals=True, **SMALL)
