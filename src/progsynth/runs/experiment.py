"""Everything a run's configuration determines, built once: data, model, lenses and learner.

Training (``runs.train``) and analyses that re-open a run both build an ``Experiment`` from the
run's config, so a checkpoint always meets the exact model and data it was trained with. The data
comes from ``run_data``, the one place that turns a config into the labels as trained (with the
config's label noise on the training rows), which the program search of a run reads too.

Outputs as trained and outputs as analysed (``ModelConfig.unembed_equals``): the transformer may
unembed to p + 1 outputs, the ``=`` token's logit included, as the paper's code does. Training, and
whatever looks at training itself (the optimizer, the loss lens ``loss`` and the targets ``targets``,
``y_train``, ``y_test``; the LLC, the NTK and its factorisation, which differentiate the module as
trained), sees all ``n_outputs`` columns; with MSE the ``=`` output's target is 0. Analyses of the
learned function read ``logits``, which drops the ``=`` column as the paper's analyses do, so every
analysis sees the p residue logits whatever the switch. ``evaluate`` reports the losses over the
outputs as trained (what the paper's training code logs) and the accuracies over the p residues.
An analysis loss of the p residue logits (``interp.network.loss_on``) therefore differs from the
metrics' loss by the softmax mass the ``=`` logit takes, when the switch is on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from progsynth.core.learner import Learner, TrainState
from progsynth.core.losses import learning_rate, mse, softmax_cross_entropy
from progsynth.core.optim import optimizer_from_name
from progsynth.core.transforms import parse_chain
from progsynth.core.smooth import from_module
from progsynth.models import build_model
from progsynth.runs.config import RunConfig
from progsynth.tasks.common import TaskData, with_label_noise

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def run_data(config: RunConfig) -> TaskData:
    """The data a run with ``config`` trains on: its task's examples and split, with
    ``config.label_noise`` of the training labels replaced by random wrong ones (seeded by
    ``config.label_noise_seed``; test labels true). Every reader of a run's labels goes through
    here, so each analysis sees exactly the labels that were trained."""
    return with_label_noise(config.task.dataset(), config.label_noise, config.label_noise_seed)


class Experiment:
    """Data, model and learner for one run configuration (shared by every seed of a group).

    ``data`` and ``labels`` are the labels as trained (``run_data``): with label noise, the noisy
    labels on the training rows and the true labels on the test rows."""

    def __init__(self, config: RunConfig):
        config.validate()
        self.config = config
        self.dtype = DTYPES[config.dtype]
        self.task = config.task
        self.data = run_data(config)
        self.module_template = self.build_module(seed=0)
        inputs = self.data.inputs(getattr(self.module_template, "input_kind", "tokens"), self.dtype)
        labels = self.data.labels
        # Columns of the module's output as trained: the classes, plus the '=' logit with
        # model.unembed_equals (module docstring).
        self.n_outputs = self.data.n_classes + (1 if config.model.unembed_equals else 0)
        targets = labels if config.loss == "cross_entropy" else \
            torch.nn.functional.one_hot(labels, self.n_outputs).to(self.dtype)
        self.inputs, self.labels, self.targets = inputs, labels, targets
        train, test = self.data.train_idx, self.data.test_idx
        self.x_train, self.y_train, self.labels_train = inputs[train], targets[train], labels[train]
        self.x_test, self.y_test, self.labels_test = inputs[test], targets[test], labels[test]
        self.n_train = int(train.numel())
        batch = config.batch_size or self.n_train
        self.steps_per_epoch = -(-self.n_train // batch)
        # The model as trained: the module's composite of core primitives (``lens()``: the
        # quadratic MLP, the embedding MLP) over the module's own parameter names, so checkpoints
        # are unchanged; a module without one (the transformer) through autograd (from_module).
        composite = getattr(self.module_template, "lens", None)
        self.model = composite() if composite is not None else from_module(self.module_template,
                                                                           name=config.model.name)
        precision = DTYPES[config.loss_dtype] if config.loss_dtype else None
        self.loss = softmax_cross_entropy(precision) if config.loss == "cross_entropy" else mse()
        optimizer = self._optimizer()
        self.learner = Learner(self.model, self.loss, optimizer, learning_rate(1.0))
        # Under vmap the optimizer cannot sync to check p' is finite; the multi-seed trainer checks
        # the loss of every seed outside vmap instead.
        self._vmap_learner = Learner(self.model, self.loss, replace(optimizer, check_finite=False),
                                     learning_rate(1.0))

    def build_module(self, seed: int) -> nn.Module:
        """A freshly initialised network for ``seed`` (deterministic)."""
        m = self.config.model
        return build_model(m.name, self.task, seed=seed, dtype=self.dtype, d_model=m.d_model, n_heads=m.n_heads,
                           d_head=m.d_head, d_mlp=m.d_mlp, init=m.init, activation=m.activation,
                           unembed_equals=m.unembed_equals)

    def init_params(self, seed: int) -> dict[str, torch.Tensor]:
        """The initial parameters for ``seed`` as the lens's parameter dict: copies of the seed's
        module's named parameters, the same dict for the composite and the from_module lens."""
        return {name: p.detach().clone() for name, p in self.build_module(seed).named_parameters()}

    def _optimizer(self) -> Any:
        o = self.config.optim
        if o.learned:  # a meta-trained optimizer (runs.meta), read when first stepped; refused if its files changed
            from progsynth.runs.meta import LearnedFromFile

            return LearnedFromFile(o.learned, o.learned_sha256)
        if o.chain:  # a composite of gradient transformations (core.transforms), parsed safely
            return parse_chain(o.chain)
        hyper: dict[str, Any] = {"lr": o.lr, "weight_decay": o.weight_decay}
        if o.name in ("adam", "adamw"):
            hyper["betas"] = (o.beta1, o.beta2)
        elif o.name in ("momentum", "nesterov"):
            hyper["momentum"] = o.beta1
        if o.warmup_steps:
            hyper["warmup_steps"] = o.warmup_steps
        return optimizer_from_name(o.name, **hyper)

    def pure_step(self, opt_state: Any, params: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, Any, torch.Tensor]:
        """The learner's step as a pure function of tensors (what the multi-seed trainer vmaps)."""
        state, loss = self._vmap_learner.step(TrainState(opt_state, params, 0), x, y)
        return state.opt_state, state.params, loss

    @torch.no_grad()
    def logits(self, params: Any, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """The network's output on ``inputs`` (default: the full grid of pairs): the class logits,
        (N, n_classes), without the ``=`` column of ``model.unembed_equals`` (module docstring)."""
        return self._classes(self.model.get(params, self.inputs if inputs is None else inputs))

    def _classes(self, outputs: torch.Tensor) -> torch.Tensor:
        """The class columns of the module's outputs as trained (all of them without the switch)."""
        return outputs[..., :self.data.n_classes] if self.n_outputs != self.data.n_classes else outputs

    @torch.no_grad()
    def evaluate(self, params: Any) -> dict[str, float]:
        """Train/test loss and accuracy and the sum of squared weights, for metrics.jsonl. The loss
        is over the outputs as trained (with ``model.unembed_equals``, all p + 1), the accuracy over
        the class logits (module docstring)."""
        row: dict[str, float] = {}
        for split, x, y, labels in (("train", self.x_train, self.y_train, self.labels_train),
                                     ("test", self.x_test, self.y_test, self.labels_test)):
            if x.shape[0] == 0:
                row[f"{split}_loss"], row[f"{split}_accuracy"] = float("nan"), float("nan")
                continue
            out = self.model.get(params, x)
            row[f"{split}_loss"] = float(self.loss.get(y, out))
            row[f"{split}_accuracy"] = float((self._classes(out).argmax(-1) == labels).double().mean())
        row["weight_norm"] = float(sum((t.double() ** 2).sum() for t in params.values()))
        return row
