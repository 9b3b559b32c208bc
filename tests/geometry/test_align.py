"""Permutation alignment: each model's unit_permutations leaves its function unchanged, weight
matching recovers a hidden permutation exactly, improves two independent inits, and errors."""

import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from progsynth.errors import ConfigError, ProgsynthError, UnsupportedOptionError
from progsynth.geometry.align import Alignment, apply_permutation, permutation_spec, weight_matching
from progsynth.models.mlp import EmbeddingMLP, EmbeddingMLPConfig, GromovConfig, GromovMLP
from progsynth.models.transformer import StraightforwardTransformer, Transformer, TransformerConfig

P = 7


def _randomise_biases(model: nn.Module, seed: int) -> nn.Module:
    """Zero-initialised biases made nonzero, so permuting them is exercised."""
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("b_") or name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model


def _gromov(seed: int) -> nn.Module:
    return GromovMLP(GromovConfig(n_in=2 * P, n_out=P, width=16), torch.Generator().manual_seed(seed), torch.float64)


def _embedding_mlp(seed: int) -> nn.Module:
    config = EmbeddingMLPConfig(vocab=P, n_operands=2, n_classes=P, d_embed=8, hidden=(16, 12))
    return _randomise_biases(EmbeddingMLP(config, torch.Generator().manual_seed(seed), torch.float64), seed)


def _transformer(seed: int, mlp_bias: bool = True, cls: type = Transformer) -> nn.Module:
    config = TransformerConfig(p=P, d_model=16, n_heads=2, d_head=8, d_mlp=32, mlp_bias=mlp_bias)
    return _randomise_biases(cls(config, torch.Generator().manual_seed(seed), torch.float64), seed)


def _sequential(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3)).double()


def _tokens() -> torch.Tensor:
    """Random tokens at all three positions (both transformer paths accept any (N, 3) input)."""
    return torch.randint(0, P + 1, (64, 3), generator=torch.Generator().manual_seed(5))


MODELS = {
    "gromov": (_gromov, lambda: torch.randn(32, 2 * P, dtype=torch.float64), {"hidden"}),
    "embedding_mlp": (_embedding_mlp, lambda: torch.randint(0, P, (64, 3)), {"hidden_0", "hidden_1"}),
    "transformer": (_transformer, _tokens, {"mlp", "heads", "resid"}),
    "transformer_no_bias": (lambda seed: _transformer(seed, mlp_bias=False), _tokens, {"mlp", "heads", "resid"}),
    "straightforward": (lambda seed: _transformer(seed, cls=StraightforwardTransformer), _tokens,
                        {"mlp", "heads", "resid"}),
    "sequential": (_sequential, lambda: torch.randn(32, 5, dtype=torch.float64), {"hidden_0", "hidden_1"}),
}


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach() for name, param in model.named_parameters()}


def _random_perms(spec, params, seed: int) -> dict[str, torch.Tensor]:
    """A random permutation of every group, none the identity."""
    generator = torch.Generator().manual_seed(seed)
    sizes = {group: params[name].shape[axis]
             for name, axes in spec.items() for axis, group in enumerate(axes) if group is not None}
    perms = {}
    for group, n in sizes.items():
        perm = torch.randperm(n, generator=generator)
        perms[group] = perm if not torch.equal(perm, torch.arange(n)) else perm.roll(1)
    return perms


@pytest.mark.parametrize("kind", MODELS)
def test_permuting_every_group_preserves_the_function(kind):
    build, inputs, groups = MODELS[kind]
    model = build(0)
    spec = permutation_spec(model)
    params = _params(model)
    assert set(spec) == set(params)
    assert {g for axes in spec.values() for g in axes if g is not None} == groups
    permuted = apply_permutation(spec, params, _random_perms(spec, params, seed=1))
    assert any(not torch.equal(permuted[name], params[name]) for name in params)
    x = inputs()
    with torch.no_grad():
        expected = model(x)
        got = functional_call(model, permuted, (x,))
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", MODELS)
def test_weight_matching_recovers_a_hidden_permutation(kind):
    model = MODELS[kind][0](0)
    spec = permutation_spec(model)
    params = _params(model)
    hidden = _random_perms(spec, params, seed=2)
    permuted = apply_permutation(spec, params, hidden)
    alignment = weight_matching(spec, params, permuted, seed=3)
    assert alignment.converged
    for group, perm in hidden.items():
        assert torch.equal(alignment.perms[group], perm.argsort()), group
        assert alignment.moved[group] == int((perm != torch.arange(len(perm))).sum())
    aligned = apply_permutation(spec, permuted, alignment.perms)
    assert all(torch.equal(aligned[name], params[name]) for name in params)
    assert alignment.distance_after <= 1e-12 < alignment.distance_before
    assert alignment.objective_after > alignment.objective_before


@pytest.mark.parametrize("kind", MODELS)
def test_weight_matching_improves_two_independent_inits(kind):
    build = MODELS[kind][0]
    model_a, model_b = build(0), build(1)
    spec = permutation_spec(model_a)
    params_a, params_b = _params(model_a), _params(model_b)
    alignment = weight_matching(spec, params_a, params_b, seed=0)
    assert alignment.objective_after >= alignment.objective_before
    assert alignment.distance_after <= alignment.distance_before
    assert alignment.sweeps >= 1 and alignment.converged
    # The reported figures are those of the aligned parameters.
    aligned = apply_permutation(spec, params_b, alignment.perms)
    distance = sum(((params_a[n] - aligned[n]) ** 2).sum() for n in params_a).sqrt().item()
    assert distance == pytest.approx(alignment.distance_after, rel=1e-12)
    # The same seed gives the same alignment; the result is JSON-ready.
    again = weight_matching(spec, params_a, params_b, seed=0)
    assert all(torch.equal(again.perms[g], alignment.perms[g]) for g in alignment.perms)
    data = json.loads(json.dumps(alignment.to_dict()))
    assert data["perms"] == {g: p.tolist() for g, p in alignment.perms.items()}
    assert data["moved"] == alignment.moved


def test_weight_matching_on_float32_parameters_returns_float64_figures():
    config = GromovConfig(n_in=2 * P, n_out=P, width=16)
    a = _params(GromovMLP(config, torch.Generator().manual_seed(0)))
    b = _params(GromovMLP(config, torch.Generator().manual_seed(1)))
    alignment = weight_matching(permutation_spec(GromovMLP(config)), a, b)
    assert isinstance(alignment, Alignment) and alignment.perms["hidden"].dtype == torch.long
    assert alignment.distance_after <= alignment.distance_before


def test_apply_permutation_leaves_other_parameters_and_missing_groups_alone():
    spec = {"w": (None, "g"), "v": ("g",), "u": ("h",)}
    params = {"w": torch.arange(6.0).view(2, 3), "v": torch.tensor([1.0, 2.0, 3.0]),
              "u": torch.tensor([4.0, 5.0]), "extra": torch.tensor([7.0, 8.0])}
    out = apply_permutation(spec, params, {"g": torch.tensor([2, 0, 1])})
    assert torch.equal(out["w"], torch.tensor([[2.0, 0.0, 1.0], [5.0, 3.0, 4.0]]))
    assert torch.equal(out["v"], torch.tensor([3.0, 1.0, 2.0]))
    assert torch.equal(out["u"], params["u"]) and torch.equal(out["extra"], params["extra"])
    assert torch.equal(params["v"], torch.tensor([1.0, 2.0, 3.0]))  # the input is untouched


def test_mismatched_shapes_name_the_parameter():
    a = _params(_gromov(0))
    b = _params(GromovMLP(GromovConfig(n_in=2 * P, n_out=P, width=17), dtype=torch.float64))
    with pytest.raises(ProgsynthError, match=r"'W_in'.*\(14, 16\).*\(14, 17\)"):
        weight_matching(permutation_spec(_gromov(0)), a, b)


def test_mismatched_names_name_the_parameter():
    model = _embedding_mlp(0)
    a = _params(model)
    b = {name: value for name, value in a.items() if name != "b_1"}
    with pytest.raises(ProgsynthError, match="'b_1'"):
        weight_matching(permutation_spec(model), a, b)
    b = {**a, "W_extra": torch.zeros(2)}
    with pytest.raises(ProgsynthError, match="'W_extra'"):
        weight_matching(permutation_spec(model), a, b)


def test_unsupported_modules():
    with pytest.raises(UnsupportedOptionError, match="Conv1d"):
        permutation_spec(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Conv1d(4, 4, 1)))
    with pytest.raises(UnsupportedOptionError, match="GRU"):
        permutation_spec(nn.GRU(3, 4))


def test_bad_specs_and_permutations():
    params = {"w": torch.zeros(2, 3), "v": torch.zeros(4)}
    with pytest.raises(ConfigError, match="group 'g' has size 4"):
        apply_permutation({"w": (None, "g"), "v": ("g",)}, params, {})
    with pytest.raises(ConfigError, match="'w'"):
        apply_permutation({"w": ("g",)}, params, {})
    with pytest.raises(ConfigError, match="'g'"):
        apply_permutation({"w": (None, "g")}, params, {"g": torch.tensor([0, 0, 1])})
    with pytest.raises(ConfigError, match="'nope'"):
        apply_permutation({"w": (None, "g")}, params, {"nope": torch.tensor([0, 1])})
    square = {"r": torch.zeros(3, 3)}
    with pytest.raises(UnsupportedOptionError, match="'r'"):
        weight_matching({"r": ("g", "g")}, square, square)
