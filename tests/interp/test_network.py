"""interp/network.py: the neurons and neuron-to-logit map agree with each model's own forward pass."""

from __future__ import annotations

import pytest
import torch

from progsynth.interp.network import hidden_activations, loss_on, neuron_to_logit, operand_embeddings
from progsynth.runs.config import ModelConfig, RunConfig
from progsynth.tasks.modular import ModularTask
from progsynth.runs.experiment import Experiment

MODELS = {
    "transformer": (ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=24), "W_out"),
    # p + 1 outputs as trained; the neuron-to-logit map and the logits both leave out the '=' column
    "transformer-unembed-equals": (ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=24, unembed_equals=True),
                                   "W_out"),
    "gromov": (ModelConfig(name="gromov", d_mlp=24), "W_out"),
    "mlp": (ModelConfig(name="mlp", d_model=8, d_mlp=24), "W_U"),
}
"""Each model, and the parameter that carries the neurons to the logits (and nothing else)."""


@pytest.mark.parametrize("name", list(MODELS))
def test_neurons_times_neuron_to_logit_is_the_models_mlp_contribution(name):
    """Zeroing the neurons' read-out removes exactly hidden_activations @ neuron_to_logit from the
    logits: the recomputed neurons are the model's own."""
    model, readout = MODELS[name]
    experiment = Experiment(RunConfig(task=ModularTask(p=7), model=model, dtype="float64"))
    params = experiment.init_params(3)
    if "b_in" in params:  # make biases matter
        params["b_in"] = torch.randn_like(params["b_in"])
    hidden = hidden_activations(experiment, params)
    assert hidden.shape == (49, 24) and bool((hidden != 0).any())
    without = experiment.logits({**params, readout: torch.zeros_like(params[readout])})
    contribution = experiment.logits(params) - without
    assert torch.allclose(hidden @ neuron_to_logit(experiment, params), contribution, atol=1e-10)


def test_operand_embeddings():
    gromov = Experiment(RunConfig(task=ModularTask(p=7), model=MODELS["gromov"][0], loss="mse"))
    assert [(e.param, e.offset, e.operands) for e in operand_embeddings(gromov)] == [("W_in", 0, (0,)),
                                                                                     ("W_in", 7, (1,))]
    transformer = Experiment(RunConfig(task=ModularTask(p=7), model=MODELS["transformer"][0]))
    assert [(e.param, e.offset, e.operands) for e in operand_embeddings(transformer)] == [("W_E", 0, (0, 1))]


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_loss_on_is_the_runs_own_loss(loss):
    experiment = Experiment(RunConfig(task=ModularTask(p=7), model=MODELS["gromov"][0], loss=loss))
    params = experiment.init_params(0)
    logits = experiment.logits(params)
    evaluated = experiment.evaluate(params)
    assert loss_on(experiment, logits, experiment.data.train_idx) == pytest.approx(evaluated["train_loss"], rel=1e-6)
    assert loss_on(experiment, logits, experiment.data.test_idx) == pytest.approx(evaluated["test_loss"], rel=1e-6)
