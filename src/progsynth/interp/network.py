"""What the analyses need to know about each of the lab's networks, read from parameter names.

Three views, per model name of ``runs.config.ModelConfig``:

- *operand embeddings*: the weight rows that the one-hot residues select. The transformer's and
  the embedding MLP's W_E rows 0..p−1 serve both operands; Gromov's W_in rows 0..p−1 read a and
  rows p..2p−1 read b.
- *neurons*: the hidden units whose activations the per-neuron frequency clusters read: the
  transformer's MLP at ``=`` (ReLU of the residual stream times W_in, plus b_in), Gromov's squared
  hidden units, the embedding MLP's last hidden layer.
- *neuron-to-logit map* (d_hidden, p): W_out W_U for the transformer, W_out for Gromov's MLP, W_U
  for the embedding MLP; for a transformer with ``model.unembed_equals`` only W_U's p residue
  columns, as ``Experiment.logits`` drops the ``=`` logit.

The models compute the neurons inside ``forward`` without exposing them, so
``hidden_activations`` recomputes them from the parameters, following
``StraightforwardTransformer`` up to the MLP for the transformer; its test completes the forward
pass from them and checks the logits against the model's, so the two cannot drift apart silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from progsynth.errors import UnsupportedOptionError
from progsynth.models.mlp import ACTIVATIONS
from progsynth.runs.experiment import Experiment

__all__ = ["OperandEmbedding", "operand_embeddings", "hidden_activations", "neuron_to_logit", "loss_on"]

MODELS = ("transformer", "gromov", "mlp")
"""The model names these views know."""


@dataclass(frozen=True)
class OperandEmbedding:
    """Rows ``offset .. offset + p − 1`` of parameter ``param`` embed the residues of ``operands``."""

    param: str
    offset: int
    operands: tuple[int, ...]
    """0 for a, 1 for b; (0, 1) when both operands share the rows."""


def _model(experiment: Experiment) -> str:
    name = experiment.config.model.name
    if name not in MODELS:
        raise UnsupportedOptionError(f"interp knows the models {list(MODELS)}, got {name!r}")
    return name


def operand_embeddings(experiment: Experiment) -> list[OperandEmbedding]:
    """The operand embeddings of the experiment's model (module docstring)."""
    if _model(experiment) == "gromov":
        return [OperandEmbedding("W_in", 0, (0,)), OperandEmbedding("W_in", experiment.task.p, (1,))]
    return [OperandEmbedding("W_E", 0, (0, 1))]


def _n_hidden_layers(params: dict[str, torch.Tensor]) -> int:
    return sum(1 for name in params if name.startswith("b_") and name[2:].isdigit())


@torch.no_grad()
def hidden_activations(experiment: Experiment, params: dict[str, torch.Tensor],
                       rows: torch.Tensor | None = None) -> torch.Tensor:
    """(N, d_hidden) float64: the neurons' activations on every data row, or on ``rows`` only
    (module docstring)."""
    name = _model(experiment)
    P = {k: v.to(torch.float64) for k, v in params.items()}
    every = slice(None) if rows is None else rows
    if name == "gromov":
        hidden = experiment.inputs[every].to(torch.float64) @ P["W_in"]
        return hidden * hidden
    operands = experiment.data.operands[every]
    if name == "mlp":
        x = P["W_E"][operands].reshape(operands.shape[0], -1)
        act = ACTIVATIONS[experiment.config.model.activation]
        for i in range(_n_hidden_layers(P)):
            x = act(x @ P[f"W_{i}"] + P[f"b_{i}"])
        return x
    tokens = experiment.inputs[every]
    stream = P["W_E"][tokens] + P["W_pos"]  # (N, 3, d_model)
    q = torch.einsum("nd,hde->nhe", stream[:, -1], P["W_Q"])
    k = torch.einsum("npd,hde->nhpe", stream, P["W_K"])
    v = torch.einsum("npd,hde->nhpe", stream, P["W_V"])
    attn = torch.softmax(torch.einsum("nhe,nhpe->nhp", q, k) / math.sqrt(P["W_Q"].shape[-1]), dim=-1)
    z = torch.einsum("nhp,nhpe->nhe", attn, v)
    resid = stream[:, -1] + torch.einsum("nhe,hed->nd", z, P["W_O"])
    pre = resid @ P["W_in"] + (P["b_in"] if "b_in" in P else 0)
    return torch.relu(pre)


def neuron_to_logit(experiment: Experiment, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """(d_hidden, p) float64: how each neuron's activation moves each logit (module docstring)."""
    name = _model(experiment)
    if name == "transformer":
        unembed = params["W_U"][:, :experiment.data.n_classes]  # without the '=' column of unembed_equals
        return params["W_out"].to(torch.float64) @ unembed.to(torch.float64)
    return params["W_out" if name == "gromov" else "W_U"].to(torch.float64)


@torch.no_grad()
def loss_on(experiment: Experiment, logits: torch.Tensor, rows: torch.Tensor | None = None) -> float:
    """The run's own loss (cross-entropy or MSE, as it trained) of ``logits`` (N, p) on data ``rows``
    (default all), so analysis losses compare with the training metrics. With ``model.unembed_equals``
    the metrics' loss also counts the ``=`` logit, which ``logits`` (``Experiment.logits``) leave out;
    the loss here is over the p residues, as the paper's analyses compute it."""
    rows = torch.arange(logits.shape[0]) if rows is None else rows
    targets = experiment.targets[rows]
    if targets.dtype.is_floating_point:
        targets = targets[:, :logits.shape[1]].to(logits.dtype)
    return float(experiment.loss.get(targets, logits[rows]))
