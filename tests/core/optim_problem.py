"""The small regression both optimizer test modules step (test_optim, test_transforms): a 5→16→3
tanh MLP in float64 on fixed data, its loss from a parameter dict, and p' = −∇L."""

from __future__ import annotations

import torch
from torch import nn

STEPS = 200
gen = torch.Generator().manual_seed(0)
X = torch.randn(64, 5, generator=gen, dtype=torch.float64)
Y = torch.randn(64, 3, generator=gen, dtype=torch.float64)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The MLP's mean squared error on the fixed data, from its parameters (names as in ``mlp``)."""
    hidden = torch.tanh(torch.addmm(params["0.bias"], X, params["0.weight"].T))
    return nn.functional.mse_loss(torch.addmm(params["2.bias"], hidden, params["2.weight"].T), Y)


def neg_grad(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """p' = −∇L at ``params`` (what learning_rate(1.0) puts back through the model)."""
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    grads = torch.autograd.grad(loss(leaves), list(leaves.values()))
    return {k: -g for k, g in zip(leaves, grads)}


def assert_put_is_pure(opt, make_params) -> tuple:
    """``opt.put`` from a non-trivial state changes none of its inputs and returns only new tensors
    (so it runs under vmap and torch.func.grad); returns (old params, new params)."""
    import copy

    from torch.utils._pytree import tree_leaves

    params = make_params()
    state, params = opt.put(opt.init(params), params, make_params())
    dp = make_params()
    before = copy.deepcopy((state, params, dp))
    new_state, new_params = opt.put(state, params, dp)
    for old, kept in zip(tree_leaves((state, params, dp)), tree_leaves(before)):
        assert torch.equal(old, kept)
    inputs = {t.data_ptr() for t in tree_leaves((state, params, dp))}
    assert all(t.data_ptr() not in inputs for t in tree_leaves((new_state, new_params)))
    return params, new_params
