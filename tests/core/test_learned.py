"""The learned optimizer lens: known settings of φ against torch.optim, the meta-gradient through an
unrolled training against finite differences, validation, finiteness and vmap."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from progsynth.core.learned import init_phi, learned_optimizer, phi_shapes
from progsynth.core.learner import Learner
from progsynth.core.losses import learning_rate, mse
from progsynth.core.smooth import mlp
from progsynth.errors import ConfigError, LensTypeError, NonFiniteError

STEPS = 200
gen = torch.Generator().manual_seed(0)
X = torch.randn(64, 5, generator=gen, dtype=torch.float64)
Y = torch.randn(64, 3, generator=gen, dtype=torch.float64)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()


_SHAPE = _net()  # the architecture functional_call runs with given parameters


def _neg_grad(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """p' = −∇L of the network's MSE at ``params``."""
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    out = torch.func.functional_call(_SHAPE, leaves, (X,))
    grads = torch.autograd.grad(nn.functional.mse_loss(out, Y), list(leaves.values()))
    return {k: -g for k, g in zip(leaves, grads)}


def _against_torch(opt, make_torch) -> float:
    """Largest parameter difference over ``STEPS`` steps between the lens and a torch.optim loop."""
    net = _net()
    torch_opt = make_torch(list(net.parameters()))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    state = opt.init(params)
    worst = 0.0
    for _ in range(STEPS):
        state, params = opt.put(state, params, _neg_grad(params))
        torch_opt.zero_grad()
        nn.functional.mse_loss(net(X), Y).backward()
        torch_opt.step()
        worst = max(worst, max(float((params[k] - v).abs().max()) for k, v in net.named_parameters()))
    return worst


def test_momentum_kind_is_torch_sgd_with_momentum_per_tensor() -> None:
    lrs, betas = [0.05, 0.1, 0.02, 0.08], [0.9, 0.5, 0.95, 0.7]  # one (lr, momentum) per tensor
    phi = {"log_lr": torch.tensor([math.log(v) for v in lrs], dtype=torch.float64),
           "logit_momentum": torch.tensor([math.log(b / (1 - b)) for b in betas], dtype=torch.float64)}
    opt = learned_optimizer("momentum", phi)

    def sgd(params):
        return torch.optim.SGD([{"params": [p], "lr": lr, "momentum": b} for p, lr, b in zip(params, lrs, betas)])

    assert _against_torch(opt, sgd) < 1e-6


def test_mlp_kind_at_its_starting_point_is_torch_adam() -> None:
    opt = learned_optimizer("mlp", init_phi("mlp", 0.01, dtype=torch.float64))
    assert _against_torch(opt, lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.9, 0.999))) < 1e-6


def _unrolled(kind: str, phi: dict[str, torch.Tensor], steps: int = 6) -> torch.Tensor:
    """Mean loss after each of ``steps`` supervised steps (core.learner) with the learned lens."""
    model = mlp([5, 4, 3], "tanh", dtype=torch.float64)
    params = model.init(torch.Generator().manual_seed(1))
    opt = dataclasses.replace(learned_optimizer(kind, phi), check_finite=False)
    learner = Learner(model, mse(), opt, learning_rate(1.0))
    state, losses = learner.init(params), []
    for _ in range(steps):
        state, _ = learner.step(state, X, Y)
        losses.append(mse().get(Y, learner.predict(state, X)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("kind", ["momentum", "mlp"])
def test_meta_gradient_through_the_unroll_matches_finite_differences(kind: str) -> None:
    phi = init_phi(kind, 0.05, 0.6, n_tensors=4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    if kind == "mlp":  # away from the Adam starting point, so every entry of φ matters
        phi["w2"] = torch.linspace(-0.5, 0.5, phi["w2"].numel(), dtype=torch.float64)
        phi["b1"] = torch.linspace(-0.2, 0.3, phi["b1"].numel(), dtype=torch.float64)
    grad = torch.func.grad(lambda f: _unrolled(kind, f))(phi)
    h = 1e-6
    for name, value in phi.items():
        for i in range(value.numel()):
            up, down = dict(phi), dict(phi)
            up[name] = value.flatten().clone().index_add_(0, torch.tensor([i]), torch.tensor([h], dtype=value.dtype)).view_as(value)
            down[name] = value.flatten().clone().index_add_(0, torch.tensor([i]), torch.tensor([-h], dtype=value.dtype)).view_as(value)
            numeric = float(_unrolled(kind, up) - _unrolled(kind, down)) / (2 * h)
            analytic = float(grad[name].flatten()[i])
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, i)


def test_phi_is_validated_once_with_one_line_errors() -> None:
    good = init_phi("momentum", 0.1, n_tensors=2)
    with pytest.raises(ConfigError, match="kind must be one of momentum, mlp, got 'adam'"):
        learned_optimizer("adam", good)
    with pytest.raises(ConfigError, match=r"φ must have entries \['log_lr', 'logit_momentum'\]"):
        learned_optimizer("momentum", {"log_lr": good["log_lr"]})
    with pytest.raises(ConfigError, match=r"φ\['logit_momentum'\] must be a floating-point tensor of shape \(2,\)"):
        learned_optimizer("momentum", {**good, "logit_momentum": torch.zeros(3)})
    with pytest.raises(ConfigError, match=r"φ\['log_lr'\] holds NaN or inf"):
        learned_optimizer("momentum", {**good, "log_lr": torch.tensor([0.0, math.nan])})
    with pytest.raises(ConfigError, match="hidden must be an integer in"):
        learned_optimizer("mlp", init_phi("mlp", 0.1), {"hidden": 0})
    with pytest.raises(ConfigError, match=r"unknown hyper-parameter\(s\) \['beta3'\]"):
        phi_shapes("mlp", {"beta3": 0.5})
    with pytest.raises(ConfigError, match="leaf_names must be None or a list of strings"):
        learned_optimizer("momentum", good, leaf_names=[1, 2])
    with pytest.raises(ConfigError, match=r"φ\['log_lr'\] must be a floating-point tensor of shape \(3,\)"):
        learned_optimizer("momentum", good, leaf_names=["a", "b", "c"])


def test_per_tensor_rates_refuse_parameters_of_another_model() -> None:
    opt = learned_optimizer("momentum", init_phi("momentum", 0.1, n_tensors=2), leaf_names=["['w']", "['b']"])
    with pytest.raises(LensTypeError, match="per-tensor step sizes for 2 parameter tensors, but the parameters have 3"):
        opt.init({"w": torch.zeros(2), "b": torch.zeros(1), "c": torch.zeros(1)})
    with pytest.raises(LensTypeError, match=r"belong to parameters \['w'\], \['b'\], but these parameters are \['u'\]"):
        opt.init({"u": torch.zeros(2), "b": torch.zeros(1)})
    state = opt.init({"w": torch.zeros(2), "b": torch.zeros(1)})
    with pytest.raises(NonFiniteError, match=r"p' holds NaN or inf in parameter leaf \['b'\]"):
        opt.put(state, {"w": torch.zeros(2), "b": torch.zeros(1)}, {"w": torch.ones(2), "b": torch.tensor([math.inf])})


@pytest.mark.parametrize("kind", ["momentum", "mlp"])
def test_without_the_finite_check_it_runs_under_vmap_like_one_seed_at_a_time(kind: str) -> None:
    opt = dataclasses.replace(learned_optimizer(kind, init_phi(kind, 0.05, n_tensors=2)), check_finite=False)
    params = (torch.randn(3, 4, generator=gen), torch.randn(3, 2, generator=gen))  # 3 seeds stacked
    grads = (torch.randn(3, 4, generator=gen), torch.randn(3, 2, generator=gen))

    def two_steps(p, d):
        state, p = opt.put(opt.init(p), p, d)
        return opt.put(state, p, d)[1]

    batched = torch.func.vmap(two_steps)(params, grads)
    for seed in range(3):
        one = two_steps(tuple(t[seed] for t in params), tuple(t[seed] for t in grads))
        for a, b in zip(batched, one):
            torch.testing.assert_close(a[seed], b)
