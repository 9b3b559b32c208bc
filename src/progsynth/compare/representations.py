"""What ``compare`` reads from one checkpoint: its representations at two sites and its answers.

Sites, the same for every architecture so that runs of different models compare on one footing
(CKA, mutual k-NN and stitching need only the same input rows, not the same widths):

- ``embedding``: the operand embeddings of each input, concatenated in operand order: the rows
  W_E[operand] of the transformer and the embedding MLP, the rows W_in[i·vocab + operand_i] of
  Gromov's MLP (its one-hot input selects them; its first layer is the embedding);
- ``hidden``: the hidden units the analyses read (``interp.network.hidden_activations``): the
  transformer's MLP neurons at ``=``, Gromov's squared units, the embedding MLP's last hidden
  layer.

All in float64, on a fixed set of data rows (``tasks.common.sample_rows``): the same rows for
every run and every checkpoint, so that similarities at different steps compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from progsynth.interp.network import hidden_activations
from progsynth.runs.experiment import Experiment

__all__ = ["SITES", "Snapshot", "snapshot"]

SITES = ("embedding", "hidden")
"""The representation sites every run is read at (module docstring)."""


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One checkpoint's representations on the sampled rows and its answers on every row."""

    representations: dict[str, torch.Tensor]
    """Site name → (rows, width) float64."""
    answers: torch.Tensor
    """(N,) int64: the network's argmax on every data row."""


def _embedding(experiment: Experiment, params: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    operands = experiment.data.operands[rows]
    if experiment.config.model.name == "gromov":
        offsets = torch.arange(operands.shape[1]) * experiment.data.vocab
        return params["W_in"].to(torch.float64)[operands + offsets].reshape(len(rows), -1)
    return params["W_E"].to(torch.float64)[operands].reshape(len(rows), -1)


@torch.no_grad()
def snapshot(experiment: Experiment, params: dict[str, torch.Tensor], rows: torch.Tensor) -> Snapshot:
    """Read one checkpoint's parameters (module docstring)."""
    hidden = hidden_activations(experiment, params, rows)
    return Snapshot({"embedding": _embedding(experiment, params, rows), "hidden": hidden},
                    experiment.logits(params).argmax(1))
