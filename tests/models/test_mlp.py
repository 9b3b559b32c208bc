"""Gromov's quadratic MLP and the embedding MLP: shapes, initialisation, an analytic solution, errors."""

import math

import pytest
import torch

from progsynth.errors import ConfigError, LensTypeError
from progsynth.models.mlp import EmbeddingMLP, EmbeddingMLPConfig, GromovConfig, GromovMLP
from progsynth.tasks.modular import ModularTask, modular_dataset


def test_gromov_shapes_and_parameters():
    model = GromovMLP(GromovConfig(n_in=2 * 97, n_out=97, width=500), torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in model.named_parameters()} == {"W_in": (194, 500), "W_out": (500, 97)}
    data = modular_dataset(ModularTask(p=97))
    assert model(data.inputs(model.input_kind)).shape == (97 * 97, 97)


def test_gromov_init_std():
    config = GromovConfig(n_in=194, n_out=97, width=500)
    assert config.init_std == pytest.approx(0.5 / 1000 ** (1 / 3))  # = 0.05
    model = GromovMLP(config, torch.Generator().manual_seed(1))
    for name, param in model.named_parameters():
        assert param.std().item() == pytest.approx(0.05, rel=0.03), name
        assert abs(param.mean().item()) < 0.005, name


def test_gromov_is_quadratic_in_the_hidden_layer():
    model = GromovMLP(GromovConfig(n_in=6, n_out=3, width=4), torch.Generator().manual_seed(2), torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64)
    expected = ((x @ model.W_in) ** 2) @ model.W_out
    assert torch.allclose(model(x), expected, atol=1e-14)
    assert torch.allclose(model(2 * x), 4 * model(x), atol=1e-12)  # homogeneous of degree 2


def test_gromov_analytic_solution_of_modular_addition():
    """Gromov's construction: unit (k, φ1, φ2) reads cos(w_k a + φ1) + cos(w_k b + φ2) and writes
    cos(w_k q + φ1 + φ2). Over a 4 × 4 grid of phases every term but cos(w_k(a + b − q)) cancels, so
    the logits are exactly 8 Σ_k cos(w_k (a + b − q)) = 4 (p [q = a + b] − 1)."""
    p = 11
    phases = torch.arange(4, dtype=torch.float64) * math.pi / 2
    frequencies = torch.arange(1, (p - 1) // 2 + 1, dtype=torch.float64)
    k, phi1, phi2 = torch.meshgrid(frequencies, phases, phases, indexing="ij")
    k, phi1, phi2 = k.reshape(-1), phi1.reshape(-1), phi2.reshape(-1)
    residues = torch.arange(p, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * k * residues / p  # (p, units)
    model = GromovMLP(GromovConfig(n_in=2 * p, n_out=p, width=k.numel()), dtype=torch.float64)
    with torch.no_grad():
        model.W_in.copy_(torch.cat([torch.cos(angle + phi1), torch.cos(angle + phi2)]))
        model.W_out.copy_(torch.cos(angle + phi1 + phi2).T)
    data = modular_dataset(ModularTask(p=p, op="add"))
    logits = model(data.inputs("onehot", torch.float64))
    expected = 4 * (p * torch.nn.functional.one_hot(data.labels, p).double() - 1)
    assert torch.allclose(logits, expected, atol=1e-9)
    assert torch.equal(logits.argmax(dim=1), data.labels)


def test_gromov_rejects_tokens():
    model = GromovMLP(GromovConfig(n_in=14, n_out=7, width=8))
    with pytest.raises(LensTypeError, match=r"one-hot inputs \(N, 14\)"):
        model(modular_dataset(ModularTask(p=7)).tokens())


def _mlp(**overrides):
    defaults = {"vocab": 7, "n_operands": 2, "n_classes": 7, "d_embed": 8, "hidden": (16, 12)}
    config = EmbeddingMLPConfig(**{**defaults, **overrides})
    return EmbeddingMLP(config, torch.Generator().manual_seed(0), torch.float64)


def test_embedding_mlp_parameters_and_shapes():
    model = _mlp()
    assert {k: tuple(v.shape) for k, v in model.named_parameters()} == {
        "W_E": (7, 8), "W_0": (16, 16), "b_0": (16,), "W_1": (16, 12), "b_1": (12,), "W_U": (12, 7)}
    tokens = modular_dataset(ModularTask(p=7)).inputs(model.input_kind)
    assert model(tokens).shape == (49, 7)
    linear = _mlp(hidden=())
    assert {k for k, _ in linear.named_parameters()} == {"W_E", "W_U"}
    assert linear(tokens).shape == (49, 7)


def test_embedding_mlp_reads_operands_in_order_and_ignores_equals():
    model = _mlp()
    tokens = modular_dataset(ModularTask(p=7)).tokens()
    out = model(tokens)
    assert torch.equal(model(tokens[:, :2]), out)  # the '=' column is not read
    swapped = model(tokens[:, [1, 0, 2]])
    assert not torch.allclose(swapped, out)  # concatenation, not a symmetric sum


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_embedding_mlp_forward_by_hand(activation):
    model = _mlp(hidden=(10,), activation=activation)
    tokens = torch.tensor([[1, 5, 7], [6, 0, 7]])
    act = torch.relu if activation == "relu" else torch.nn.functional.gelu
    x = torch.cat([model.W_E[tokens[:, 0]], model.W_E[tokens[:, 1]]], dim=1)
    expected = act(x @ model.W_0 + model.b_0) @ model.W_U
    assert torch.allclose(model(tokens), expected, atol=1e-14)


def test_embedding_mlp_init():
    model = EmbeddingMLP(EmbeddingMLPConfig(vocab=97, n_operands=2, n_classes=97, d_embed=128, hidden=(512,)),
                         torch.Generator().manual_seed(0))
    assert model.W_E.std().item() == pytest.approx(1.0, rel=0.05)
    assert model.W_0.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.05)
    assert model.W_U.std().item() == pytest.approx(1 / math.sqrt(512), rel=0.05)
    assert bool((model.b_0 == 0).all())


@pytest.mark.parametrize(
    "overrides, message",
    [({"activation": "tanh"}, "activation must be one of"), ({"hidden": [16]}, "hidden must be a tuple"),
     ({"hidden": (16, 0)}, "hidden width must be an integer ≥ 1"), ({"d_embed": 0}, "d_embed")],
)
def test_embedding_mlp_bad_config(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _mlp(**overrides)


def test_embedding_mlp_rejects_too_few_tokens():
    with pytest.raises(LensTypeError, match="integer tokens"):
        _mlp(n_operands=3)(torch.zeros(4, 2, dtype=torch.int64))
