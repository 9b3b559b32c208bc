"""The supervised learning step as the put of one composite lens (Cruttwell et al., §1 of REFERENCE).

    optimizer ; model ; loss ; learning rate

    p̄        = U.get(s, p)                      the parameters the model uses (Nesterov looks ahead)
    ŷ, r_f   = f.forward(p̄, x)                  model forward, residuals kept
    l, r_e   = e.forward(y, ŷ)                  loss, a lens parametrised by the target y
    α        = rate.put(l)                      −ε over the reals; the error bits over Z2
    ŷ'       = e.backward(r_e, α)[1]            reverse derivative of the loss
    p'       = f.backward(r_f, ŷ')[0]           reverse derivative of the model (no input grad)
    (s, p)   ← U.put(s, p, p')                  optimizer update

The same function trains smooth models on torch tensors and Boolean circuits on bit-packed words:
nothing here knows which category it is in. Over the reals the step size lives in the optimizer
(as in torch.optim and optax), so the default rate lens is ``learning_rate(1.0)`` and ``p' = −∇``;
``learning_rate(ε)`` with ``gd(lr=1)`` is the paper's literal form and gives the same trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from progsynth.core.lens import Lens, Para
from progsynth.errors import NonFiniteError


class TrainState(NamedTuple):
    """What a learner carries from step to step: optimizer state, parameters, steps taken."""

    opt_state: Any
    params: Any
    step: int


@dataclass
class Learner:
    """A model, a loss, an optimizer and a rate lens, composed into one supervised step.

    ``model`` is a ``Para`` (P × X → Ŷ); ``loss`` a ``Para`` whose parameter is the target
    (Y × Ŷ → L); ``optimizer`` an optimizer lens from ``core.optim``; ``rate`` a lens L → 1
    from ``core.losses`` (``learning_rate`` over the reals, ``error_rate`` over Z2).
    """

    model: Para
    loss: Para
    optimizer: Any
    rate: Lens

    def init(self, params: Any) -> TrainState:
        """Start training from the given parameters (for example ``model.init(generator)``)."""
        return TrainState(self.optimizer.init(params), params, 0)

    def step(self, state: TrainState, x: Any, y: Any) -> tuple[TrainState, Any]:
        """One supervised step: the put of optimizer ; model ; loss ; rate. Returns (state, loss).

        A ``NonFiniteError`` from the optimizer (p' holds NaN or inf) is re-raised with the step
        number and, when the batch itself holds NaN or inf, with that named as the cause.
        """
        used = self.optimizer.get(state.opt_state, state.params)
        y_hat, r_model = self.model.forward(used, x)
        loss, r_loss = self.loss.forward(y, y_hat)
        alpha = self.rate.put(loss, ())
        _, dy_hat = self.loss.backward(r_loss, alpha)
        dparams, _ = self.model.backward(r_model, dy_hat, need_input_grad=False)
        try:
            opt_state, params = self.optimizer.put(state.opt_state, state.params, dparams)
        except NonFiniteError as error:
            raise NonFiniteError(f"step {state.step}: {error}{_nonfinite_data(x, y)}") from error
        return TrainState(opt_state, params, state.step + 1), loss

    def predict(self, state: TrainState, x: Any) -> Any:
        """The model's output with the parameters the optimizer would use now."""
        return self.model.get(self.optimizer.get(state.opt_state, state.params), x)


def _nonfinite_data(x: Any, y: Any) -> str:
    """Name the batch as the culprit when it holds NaN or inf (the optimizer only sees p', so its
    error alone would suggest a diverging loss). Runs only on the error path: no cost per step."""
    bad = [
        f"{what} holds {int((~torch.isfinite(value)).sum())} NaN or inf entries"
        for what, value in (("the input x", x), ("the target y", y))
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    return f"; cause: {' and '.join(bad)}" if bad else ""
