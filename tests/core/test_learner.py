"""The supervised step ``optimizer ; model ; loss ; rate`` through ``core.learner.Learner``."""

from __future__ import annotations

import pytest
import torch

from progsynth.core.learner import Learner
from progsynth.core.losses import learning_rate, softmax_cross_entropy
from progsynth.core.optim import adam, gd
from progsynth.core.smooth import mlp
from progsynth.errors import NonFiniteError, ProgsynthError
from progsynth.tasks.tabular import load_iris

DT = torch.float64


def _flat(params: tuple) -> list[torch.Tensor]:
    return [t for part in params for t in part]


def _toy_problem() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(32, 5, generator=gen, dtype=DT), torch.randint(0, 3, (32,), generator=gen)


def test_rate_and_step_size_are_interchangeable() -> None:
    """learning_rate(ε) with gd(lr=1) (the paper's literal form) walks the same trajectory as
    learning_rate(1) with gd(lr=ε) (the torch.optim form)."""
    eps, x, y = 0.3, *_toy_problem()
    model = mlp([5, 8, 3], "tanh", dtype=DT)
    params = model.init(torch.Generator().manual_seed(1))
    paper = Learner(model, softmax_cross_entropy(), gd(lr=1.0), learning_rate(eps))
    torch_form = Learner(model, softmax_cross_entropy(), gd(lr=eps), learning_rate(1.0))
    s_paper, s_torch = paper.init(params), torch_form.init(params)
    losses = []
    for _ in range(25):
        s_paper, loss_paper = paper.step(s_paper, x, y)
        s_torch, loss_torch = torch_form.step(s_torch, x, y)
        torch.testing.assert_close(loss_paper, loss_torch)
        for a, b in zip(_flat(s_paper.params), _flat(s_torch.params)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        losses.append(float(loss_paper))
    assert s_paper.step == s_torch.step == 25
    assert losses[-1] < 0.9 * losses[0]  # the trajectory goes somewhere: both really trained
    # A different ε gives a different trajectory, so the comparison above can fail.
    other = Learner(model, softmax_cross_entropy(), gd(lr=1.0), learning_rate(2 * eps))
    s_other, _ = other.step(other.init(params), x, y)
    assert not torch.allclose(s_other.params[0][0], paper.step(paper.init(params), x, y)[0].params[0][0])


def test_sigmoid_mlp_learns_iris() -> None:
    """4→20→3 sigmoid MLP, full-batch Iris, standardised features, Adam: ≥ 0.97 training accuracy."""
    x, y = load_iris(torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    model = mlp([4, 20, 3], "sigmoid")
    learner = Learner(model, softmax_cross_entropy(), adam(lr=0.05), learning_rate(1.0))
    state = learner.init(model.init(torch.Generator().manual_seed(0)))
    first_loss = None
    for _ in range(200):
        state, loss = learner.step(state, x, y)
        first_loss = float(loss) if first_loss is None else first_loss
    accuracy = float((learner.predict(state, x).argmax(dim=1) == y).double().mean())
    assert accuracy >= 0.97, accuracy
    assert float(loss) < 0.1 < first_loss
    assert state.step == 200


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_input_raises_a_clear_error(bad: float) -> None:
    x, y = _toy_problem()
    x = x.clone()
    x[3, 2] = bad
    model = mlp([5, 8, 3], dtype=DT)
    learner = Learner(model, softmax_cross_entropy(), adam(lr=1e-2), learning_rate(1.0))
    state = learner.init(model.init(torch.Generator().manual_seed(0)))
    before = [t.clone() for t in _flat(state.params)]
    with pytest.raises(NonFiniteError) as info:
        learner.step(state, x, y)
    message = str(info.value)
    assert isinstance(info.value, ProgsynthError)
    assert message.startswith("step 0: adam: p' holds NaN or inf")
    assert message.endswith("cause: the input x holds 1 NaN or inf entries")
    for a, b in zip(before, _flat(state.params)):  # the state handed in is untouched
        assert torch.equal(a, b)


def test_nonfinite_target_is_named_as_the_cause() -> None:
    x, labels = _toy_problem()
    y = torch.nn.functional.one_hot(labels, 3).to(DT)
    y[0, 0] = float("nan")
    model = mlp([5, 8, 3], dtype=DT)
    learner = Learner(model, softmax_cross_entropy(), gd(lr=0.1), learning_rate(1.0))
    with pytest.raises(NonFiniteError, match="cause: the target y holds 1 NaN or inf entries$"):
        learner.step(learner.init(model.init(torch.Generator().manual_seed(0))), x, y)


def test_diverging_parameters_are_not_blamed_on_the_data() -> None:
    x, y = _toy_problem()
    model = mlp([5, 8, 3], dtype=DT)
    params = model.init(torch.Generator().manual_seed(0))
    params = ((params[0][0] * float("inf"), params[0][1]), (), params[2])
    learner = Learner(model, softmax_cross_entropy(), gd(lr=0.1), learning_rate(1.0))
    with pytest.raises(NonFiniteError) as info:
        learner.step(learner.init(params), x, y)
    assert "step 0: gd: p' holds NaN or inf" in str(info.value) and "cause" not in str(info.value)
