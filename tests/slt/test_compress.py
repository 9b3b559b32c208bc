"""``slt.compress``: networks with planted degeneracies compress back to their irreducible width.

Each check starts from a random network of width k (Gaussian weights; ReLU biases set to minus the
median pre-activation on the data so every unit fires on about half the rows, hence no unit is dead
or linear there), plants redundant units (dead, duplicates, zero outgoing, constant, opposite-sign
linear pairs), shuffles the units, and expects ``compress`` to return width k (k + 2 when the
planted linear pairs sum to a rank-1 map, which needs one pair) with outputs within 1e-6 (float64).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from progsynth.errors import ConfigError, UnsupportedOptionError
from progsynth.models.mlp import EmbeddingMLP, EmbeddingMLPConfig, GromovConfig, GromovMLP
from progsynth.models.transformer import Transformer, TransformerConfig
from progsynth.slt.compress import KINDS, compress
from progsynth.slt.degeneracy import compress as compress_reexported

F64 = torch.float64


def normal(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


def uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g, dtype=F64))


def centred_bias(X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Minus the median of w·x over the data rows: the unit fires on about half of them."""
    return -(X @ w).median()


def plant(g: torch.Generator, X: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
          kind: str, plan: dict[str, int]
          ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, dict[str, int], int]:
    """Add planted units to one layer: W (n_in, k), b (k,) or None, A (k, n_out), X the layer's input
    on the data. Returns the new W, b, A (units shuffled), the units each reduction should remove,
    and the width ``compress`` should leave beyond k."""
    n_in, k = W.shape
    n_out = A.shape[1]
    cols: list[tuple[torch.Tensor, float, torch.Tensor]] = []
    expect = {kind_: 0 for kind_ in KINDS}

    def add(w: torch.Tensor, bias: float, a: torch.Tensor) -> None:
        cols.append((w, float(bias), a))

    for _ in range(plan.get("dead", 0)):
        add(normal(g, n_in), -1e4, normal(g, n_out))
        expect["dead"] += 1
    for _ in range(plan.get("duplicate", 0)):
        i = int(torch.randint(k, (), generator=g))
        c = {"relu": uniform(g, 0.5, 2.0), "square": uniform(g, 0.5, 2.0) * (-1) ** i,
             "tanh": float((-1) ** i), "gelu": 1.0}[kind]
        add(c * W[:, i], c * float(b[i]) if b is not None else 0.0, normal(g, n_out))
        expect["duplicate"] += 1
    for _ in range(plan.get("zero", 0)):
        w = normal(g, n_in)
        add(w, float(centred_bias(X, w)) if b is not None else 0.0, torch.zeros(n_out, dtype=F64))
        expect["zero-out"] += 1
    for _ in range(plan.get("constant", 0)):
        add(torch.zeros(n_in, dtype=F64), uniform(g, 0.5, 1.5) if b is not None else 0.0, normal(g, n_out))
        expect["constant"] += 1
    pairs, shared, common = 0, plan.get("shared", 0), normal(g, n_out)

    def pair(w: torch.Tensor, bias: float, a: torch.Tensor) -> None:
        c = uniform(g, 0.5, 2.0)
        add(w, bias, a)
        add(-c * w, -c * bias, -a / c)

    for _ in range(plan.get("cancel", 0)):  # two pairs with M = a wᵀ − (a/s)(s w)ᵀ = 0
        w, a, s = normal(g, n_in), normal(g, n_out), uniform(g, 0.5, 2.0)
        pair(w, float(centred_bias(X, w)), a)
        pair(s * w, float(-(X @ (s * w)).quantile(0.3)), -a / s)
        pairs += 2
    for _ in range(shared):  # pairs whose outgoing weights share one direction: M has rank 1
        w = normal(g, n_in)
        pair(w, float(centred_bias(X, w)), uniform(g, 0.5, 2.0) * common)
        pairs += 1
    rank = 1 if shared else 0
    expect["linear-pairs"] = 2 * (pairs - rank) if pairs > rank else 0
    if cols:
        W = torch.cat([W, torch.stack([w for w, _, _ in cols], 1)], 1)
        b = torch.cat([b, torch.tensor([bias for _, bias, _ in cols], dtype=F64)]) if b is not None else None
        A = torch.cat([A, torch.stack([a for _, _, a in cols])])
    order = torch.randperm(W.shape[1], generator=g)
    return W[:, order], (b[order] if b is not None else None), A[order], expect, 2 * rank


def base_layer(g: torch.Generator, X: torch.Tensor, k: int, n_out: int, bias: bool = True):
    W = normal(g, X.shape[1], k)
    b = torch.stack([centred_bias(X, W[:, j]) for j in range(k)]) if bias else None
    return W, b, normal(g, k, n_out)


def sequential(W: torch.Tensor, b: torch.Tensor, A: torch.Tensor, c: torch.Tensor, act: nn.Module) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(*W.shape), act, nn.Linear(*A.shape)).to(F64)
    with torch.no_grad():
        model[0].weight.copy_(W.T)
        model[0].bias.copy_(b)
        model[2].weight.copy_(A.T)
        model[2].bias.copy_(c)
    return model


def check(result, width: tuple[int, ...], expect: dict[str, int] | None = None) -> None:
    assert result.widths_after == width, [r.to_dict() for r in result.reductions]
    assert result.max_output_diff < 1e-6 * max(1.0, result.output_scale)
    if expect is not None:
        assert result.counts == expect, [r.to_dict() for r in result.reductions]


plans = st.fixed_dictionaries({
    "dead": st.integers(0, 2), "duplicate": st.integers(0, 3), "zero": st.integers(0, 2),
    "constant": st.integers(0, 2), "cancel": st.integers(0, 1), "shared": st.integers(0, 3),
})


@settings(max_examples=30, deadline=None)
@given(n_in=st.integers(2, 6), k=st.integers(1, 8), n_out=st.integers(1, 5), plan=plans, seed=st.integers(0, 2**31))
def test_relu_sequential_compresses_to_the_planted_width(n_in, k, n_out, plan, seed):
    g = torch.Generator().manual_seed(seed)
    X = normal(g, 64, n_in)
    W, b, A = base_layer(g, X, k, n_out)
    W, b, A, expect, extra = plant(g, X, W, b, A, "relu", plan)
    model = sequential(W, b, A, normal(g, n_out), nn.ReLU())
    result = compress(model, X)
    check(result, (k + extra,), expect)
    assert isinstance(result.model, nn.Sequential) and result.model[0].out_features == k + extra
    assert result.params_after == (k + extra) * (n_in + 1 + n_out) + n_out
    assert model[0].out_features == W.shape[1]  # the original is untouched
    json.dumps(result.to_dict())


def test_reduction_report_names_the_units():
    g = torch.Generator().manual_seed(0)
    X = normal(g, 64, 3)
    W, b, A = base_layer(g, X, 3, 2)
    W = torch.cat([W, 2 * W[:, :1], torch.zeros(3, 1, dtype=F64)], 1)  # unit 3 = 2 × unit 0; unit 4 constant
    b = torch.cat([b, 2 * b[:1], torch.tensor([0.5], dtype=F64)])
    A = torch.cat([A, normal(g, 2, 2)])
    result = compress(sequential(W, b, A, torch.zeros(2, dtype=F64), nn.ReLU()), X)
    by_kind = {r.kind: r for r in result.reductions}
    assert by_kind["duplicate"].units == (3,) and by_kind["duplicate"].into == 0
    assert by_kind["constant"].units == (4,)
    assert result.layers == ("0",) and result.widths_before == (5,) and result.widths_after == (3,)


def test_the_reexport_from_degeneracy_is_the_same_function():
    assert compress_reexported is compress


@settings(max_examples=10, deadline=None)
@given(k=st.integers(2, 6), plan=plans, seed=st.integers(0, 2**31))
def test_deep_relu_sequential_compresses_every_layer(k, plan, seed):
    g = torch.Generator().manual_seed(seed)
    X = normal(g, 64, 4)
    W0, b0, A0 = base_layer(g, X, k, 5)  # k ≥ 2: with one input, layer 1's units would all be parallel
    W0, b0, A0, _, extra0 = plant(g, X, W0, b0, A0, "relu", plan)
    H = torch.relu(X @ W0 + b0)
    W1 = A0  # layer 0's outgoing weights are layer 1's incoming ones
    b1 = torch.stack([centred_bias(H, W1[:, j]) for j in range(W1.shape[1])])
    W1, b1, A1, _, extra1 = plant(g, H, W1, b1, normal(g, W1.shape[1], 2), "relu",
                                  {"dead": plan["dead"], "duplicate": plan["duplicate"], "zero": plan["zero"]})
    model = nn.Sequential(nn.Linear(4, W0.shape[1]), nn.ReLU(), nn.Linear(*W1.shape), nn.ReLU(),
                          nn.Linear(*A1.shape)).to(F64)
    with torch.no_grad():
        for linear, (w, bias) in zip(model[::2], [(W0, b0), (W1, b1), (A1, normal(g, 2))]):
            linear.weight.copy_(w.T)
            linear.bias.copy_(bias)
    check(compress(model, X), (k + extra0, 5 + extra1))


def test_tanh_sequential_merges_equal_and_negated_units():
    g = torch.Generator().manual_seed(1)
    X = normal(g, 64, 4)
    W, b, A = normal(g, 4, 5), normal(g, 5), normal(g, 5, 3)
    W = torch.cat([W, -W[:, :1], W[:, 1:2]], 1)  # unit 5 = −unit 0 (tanh is odd), unit 6 = unit 1
    b, A = torch.cat([b, -b[:1], b[1:2]]), torch.cat([A, normal(g, 2, 3)])
    W, b, A, expect, _ = plant(g, X, W, b, A, "tanh", {"duplicate": 4, "zero": 1, "constant": 2})
    expect["duplicate"] += 2
    result = compress(sequential(W, b, A, normal(g, 3), nn.Tanh()), X)
    check(result, (5,), expect)
    assert result.model[0].out_features == 5
    scales = [r.detail for r in result.reductions if r.kind == "duplicate"]
    assert any("-1 ×" in s for s in scales) and any("= 1 ×" in s for s in scales)


@settings(max_examples=10, deadline=None)
@given(k=st.integers(1, 8), plan=plans, seed=st.integers(0, 2**31))
def test_gromov_mlp_compresses_to_the_planted_width(k, plan, seed):
    g = torch.Generator().manual_seed(seed)
    p = 5
    a, b_ = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    X = torch.cat([nn.functional.one_hot(a.flatten(), p), nn.functional.one_hot(b_.flatten(), p)], 1).to(F64)
    W, _, A = base_layer(g, X, k, p, bias=False)
    W, _, A, expect, _ = plant(g, X, W, None, A, "square",
                               {"duplicate": plan["duplicate"], "zero": plan["zero"], "constant": plan["constant"]})
    model = GromovMLP(GromovConfig(n_in=2 * p, n_out=p, width=W.shape[1]), dtype=F64)
    with torch.no_grad():
        model.W_in.copy_(W)
        model.W_out.copy_(A)
    result = compress(model, X)
    check(result, (k,), expect)
    assert isinstance(result.model, GromovMLP) and result.model.config.width == k


def all_pairs(p: int, equals: int | None = None) -> torch.Tensor:
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    columns = [a.flatten(), b.flatten()] + ([torch.full((p * p,), equals)] if equals is not None else [])
    return torch.stack(columns, 1)


@settings(max_examples=8, deadline=None)
@given(k=st.integers(2, 6), plan=plans, seed=st.integers(0, 2**31))
def test_embedding_mlp_compresses_both_hidden_layers(k, plan, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = all_pairs(5)
    config = EmbeddingMLPConfig(vocab=5, n_operands=2, n_classes=5, d_embed=3, hidden=(6, 6))
    probe = EmbeddingMLP(replace(config, hidden=(6,)), dtype=F64)  # W_0 = I: layer 0's input on the data
    with torch.no_grad():
        probe.W_E.copy_(normal(g, 5, 3))
        probe.W_0.copy_(torch.eye(6, dtype=F64))
    X = probe.preactivations(tokens)[0].detach()
    W0, b0, A0 = base_layer(g, X, k, 4)
    W0, b0, A0, _, extra0 = plant(g, X, W0, b0, A0, "relu", plan)
    H = torch.relu(X @ W0 + b0)
    b1 = torch.stack([centred_bias(H, A0[:, j]) for j in range(4)])
    W1, b1, WU, _, _ = plant(g, H, A0, b1, normal(g, 4, 5), "relu", {"dead": 1, "duplicate": plan["duplicate"],
                                                                      "zero": plan["zero"]})
    model = EmbeddingMLP(replace(config, hidden=(W0.shape[1], W1.shape[1])), dtype=F64)
    with torch.no_grad():
        model.W_E.copy_(probe.W_E)
        for name, value in (("W_0", W0), ("b_0", b0), ("W_1", W1), ("b_1", b1), ("W_U", WU)):
            getattr(model, name).copy_(value)
    result = compress(model, tokens)
    check(result, (k + extra0, 4))
    assert isinstance(result.model, EmbeddingMLP) and result.model.config.hidden == (k + extra0, 4)


def test_gelu_merges_only_equal_units():
    g = torch.Generator().manual_seed(2)
    tokens = all_pairs(4)
    config = EmbeddingMLPConfig(vocab=4, n_operands=2, n_classes=4, d_embed=3, hidden=(5,), activation="gelu")
    model = EmbeddingMLP(config, generator=g, dtype=F64)
    W, b, A = model.W_0.detach(), normal(g, 5), model.W_U.detach()
    W = torch.cat([W, W[:, :2], 2 * W[:, 2:3], normal(g, 6, 1)], 1)  # two equal copies, one scaled, one zero-out
    b = torch.cat([b, b[:2], 2 * b[2:3], normal(g, 1)])
    A = torch.cat([A, normal(g, 3, 4), torch.zeros(1, 4, dtype=F64)])
    big = EmbeddingMLP(replace(config, hidden=(9,)), dtype=F64)
    with torch.no_grad():
        for name, value in (("W_E", model.W_E), ("W_0", W), ("b_0", b), ("W_U", A)):
            getattr(big, name).copy_(value)
    result = compress(big, tokens)
    check(result, (6,), {**dict.fromkeys(KINDS, 0), "duplicate": 2, "zero-out": 1})


@settings(max_examples=8, deadline=None)
@given(k=st.integers(1, 6), plan=plans, seed=st.integers(0, 2**31))
def test_transformer_mlp_compresses_to_the_planted_width(k, plan, seed):
    g = torch.Generator().manual_seed(seed)
    p, d_model = 7, 8
    tokens = all_pairs(p, equals=p)
    config = TransformerConfig(p=p, d_model=d_model, n_heads=2, d_head=4, d_mlp=d_model)
    probe = Transformer(config, generator=g, dtype=F64)  # W_in = I, b_in = 0: the stream at '=' on the data
    with torch.no_grad():
        probe.W_in.copy_(torch.eye(d_model, dtype=F64))
        probe.b_in.zero_()
    X = probe.preactivations(tokens)[0].detach()
    W, b, A = base_layer(g, X, k, d_model)
    W, b, A, expect, extra = plant(g, X, W, b, A, "relu", plan)
    model = Transformer(replace(config, d_mlp=W.shape[1]), dtype=F64)
    with torch.no_grad():
        model.load_state_dict({**probe.state_dict(), "W_in": W, "b_in": b, "W_out": A, "b_out": normal(g, d_model)})
    result = compress(model, tokens)
    check(result, (k + extra,), expect)
    assert type(result.model) is Transformer and result.model.config.d_mlp == k + extra
    assert result.model.config == replace(config, d_mlp=k + extra)


def test_negligible_units_are_removed_and_reported_with_their_change():
    g = torch.Generator().manual_seed(3)
    X = normal(g, 64, 4)
    W, b, A = base_layer(g, X, 4, 3)
    tiny = 1e-5 * normal(g, 4, 1)
    W, b, A = torch.cat([W, tiny], 1), torch.cat([b, torch.zeros(1, dtype=F64)]), torch.cat([A, 1e-3 * normal(g, 1, 3)])
    model = sequential(W, b, A, normal(g, 3), nn.ReLU())
    result = compress(model, X)
    (negligible,) = result.reductions
    assert negligible.kind == "negligible" and negligible.units == (4,)
    assert 0 < negligible.change <= 1e-6 * result.output_scale
    assert result.widths_after == (4,) and result.max_output_diff == pytest.approx(negligible.change, rel=1e-6)
    assert compress(model, X, tolerance=1e-10).widths_after == (5,)


def test_negligible_units_before_the_last_layer_are_checked_by_running_the_model():
    g = torch.Generator().manual_seed(4)
    X = normal(g, 64, 3)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).to(F64)
    with torch.no_grad():
        model[0].weight[3] *= 1e-5
        model[0].bias[3] = 0.0
        model[2].weight[:, 3] *= 1e-2
    result = compress(model, X)
    negligible = [(r.layer, r.units) for r in result.reductions if r.kind == "negligible"]
    assert negligible == [("0", (3,))]
    assert result.max_output_diff <= 1e-6 * result.output_scale


@pytest.mark.parametrize("model", [
    nn.Conv1d(1, 1, 1),
    nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1)),
    nn.Sequential(nn.Linear(2, 3)),
    nn.Sequential(nn.Linear(2, 3), nn.ReLU()),
])
def test_unknown_architectures_are_refused_naming_what_is_supported(model):
    with pytest.raises(UnsupportedOptionError, match="compress supports EmbeddingMLP, GromovMLP, Transformer") as info:
        compress(model, torch.zeros(2, 2))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("tolerance", [0, 0.0, -1.0, math.nan, math.inf, True, "1e-6"])
def test_bad_tolerances_are_config_errors(tolerance):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with pytest.raises(ConfigError, match="tolerance must be a finite number > 0"):
        compress(model, torch.zeros(2, 2), tolerance=tolerance)


def test_float32_models_stay_float32_and_close():
    model = Transformer(TransformerConfig(p=7, d_model=16, n_heads=2, d_head=8, d_mlp=32),
                        generator=torch.Generator().manual_seed(5))
    tokens = all_pairs(7, equals=7)
    result = compress(model, tokens)
    assert result.model.W_in.dtype == torch.float32
    assert result.max_output_diff <= 1e-5 * result.output_scale
    assert result.params_after <= result.params_before
