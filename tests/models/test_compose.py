"""Models built by composition: the quadratic MLP, the embedding MLP and deep linear networks as
composites of the core's primitives, against the same models as nn.Modules under autograd.

The composite is what trains (``Experiment.model``); the module is what analyses read. These tests
hold the two to the same function and the same reverse derivative (float64, 1e-10), keep the
module's parameter names (so checkpoints written by either load into the other), and train the
composite through the single-seed, vmapped multi-seed and resumed paths of ``runs.train``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from progsynth.core.learner import Learner
from progsynth.core.lens import regroup
from progsynth.core.smooth import from_module, linear, square
from progsynth.errors import ConfigError, LensTypeError
from progsynth.models.linear import dln_forward, dln_lens, dln_module, random_dln
from progsynth.models.mlp import EmbeddingMLP, EmbeddingMLPConfig, GromovConfig, GromovMLP
from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore, flatten_named
from progsynth.runs.train import resume, train
from progsynth.tasks.modular import ModularTask

DT = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)
FEW = settings(max_examples=20, deadline=None)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _against_autograd(module: torch.nn.Module, lens, x: torch.Tensor, seed: int) -> None:
    """The composite's get and put (all parameters, and the input when it is real) equal the
    module's forward and torch.autograd's gradients through it."""
    params = lens.init()
    names = [name for name, _ in module.named_parameters()]
    assert list(params) == names  # the module's names, in its order: the checkpoints' keys
    y, residual = lens.forward(params, x)
    x_ = x.clone().requires_grad_() if x.is_floating_point() else x
    expected_y = module(x_)
    torch.testing.assert_close(y, expected_y.detach(), **TOL)
    dy = torch.randn(y.shape, generator=_gen(seed), dtype=DT)
    dparams, dx = lens.backward(residual, dy)
    wanted = (*module.parameters(), x_) if x.is_floating_point() else tuple(module.parameters())
    expected = torch.autograd.grad(expected_y, wanted, dy)
    assert list(dparams) == names
    for name, want in zip(names, expected):
        torch.testing.assert_close(dparams[name], want, **TOL)
    if x.is_floating_point():
        torch.testing.assert_close(dx, expected[-1], **TOL)
    else:
        assert dx is None


@FEW
@given(n_in=st.integers(1, 9), n_out=st.integers(1, 7), width=st.integers(1, 12), rows=st.integers(1, 8),
       seed=st.integers(0, 2**16))
def test_gromov_composite_equals_module_under_autograd(n_in: int, n_out: int, width: int, rows: int,
                                                        seed: int) -> None:
    module = GromovMLP(GromovConfig(n_in, n_out, width), _gen(seed), DT)
    x = torch.randn(rows, n_in, generator=_gen(seed + 1), dtype=DT)
    _against_autograd(module, module.lens(), x, seed + 2)


@FEW
@given(vocab=st.integers(1, 6), n_operands=st.integers(1, 3), extra=st.integers(0, 1),
       n_classes=st.integers(1, 5), d_embed=st.integers(1, 4),
       hidden=st.lists(st.integers(1, 6), max_size=2).map(tuple), activation=st.sampled_from(["relu", "gelu"]),
       rows=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_embedding_mlp_composite_equals_module_under_autograd(vocab: int, n_operands: int, extra: int,
                                                              n_classes: int, d_embed: int, hidden: tuple,
                                                              activation: str, rows: int, seed: int) -> None:
    config = EmbeddingMLPConfig(vocab, n_operands, n_classes, d_embed, hidden, activation)
    module = EmbeddingMLP(config, _gen(seed), DT)
    with torch.no_grad():  # non-zero biases, so their reverse derivative is checked where it matters
        for i in range(len(hidden)):
            getattr(module, f"b_{i}").normal_(generator=_gen(seed + 3))
    tokens = torch.randint(vocab, (rows, n_operands + extra), generator=_gen(seed + 1))  # extra: the unread '='
    _against_autograd(module, module.lens(), tokens, seed + 2)


@FEW
@given(widths=st.lists(st.integers(1, 6), min_size=2, max_size=5), rows=st.integers(1, 8),
       seed=st.integers(0, 2**16))
def test_dln_composite_equals_module_under_autograd(widths: list[int], rows: int, seed: int) -> None:
    params = random_dln(widths, _gen(seed), DT)
    module = dln_module(params)
    lens = dln_lens(widths, DT)
    x = torch.randn(rows, widths[0], generator=_gen(seed + 1), dtype=DT)
    x_ = x.clone().requires_grad_()
    expected_y = module(x_)
    y, residual = lens.forward(params, x)
    torch.testing.assert_close(y, expected_y.detach(), **TOL)
    torch.testing.assert_close(dln_forward(params, x), y, atol=0, rtol=0)  # one forward pass, not two
    dy = torch.randn(y.shape, generator=_gen(seed + 2), dtype=DT)
    dparams, dx = lens.backward(residual, dy)
    expected = torch.autograd.grad(expected_y, (*module.parameters(), x_), dy)
    assert isinstance(dparams, tuple) and len(dparams) == len(params)
    for got, want in zip((*dparams, dx), expected):
        torch.testing.assert_close(got, want, **TOL)
    assert [tuple(w.shape) for w in lens.init(_gen(0))] == [tuple(w.shape) for w in params]


def test_regroup_keeps_the_callers_names_and_order_and_refuses_others() -> None:
    body = linear(3, 4, bias=False, dtype=DT, layout="in_out") >> square(4) >> linear(4, 2, bias=False, dtype=DT,
                                                                                    layout="in_out")
    lens = body.reparam(regroup((("W_in",), (), ("W_out",))))
    w_in, w_out = torch.randn(3, 4, dtype=DT), torch.randn(4, 2, dtype=DT)
    x, dy = torch.randn(5, 3, dtype=DT), torch.randn(5, 2, dtype=DT)
    dparams, _ = lens.put({"W_out": w_out, "W_in": w_in}, x, dy)
    assert list(dparams) == ["W_out", "W_in"]  # the order given, so optimizers see one tree structure
    (dw_in,), (), (dw_out,) = body.put(((w_in,), (), (w_out,)), x, dy)[0]
    assert torch.equal(dparams["W_in"], dw_in) and torch.equal(dparams["W_out"], dw_out)
    with pytest.raises(LensTypeError, match=r"expects parameters as a dict with names \['W_in', 'W_out'\], "
                                            r"got \['W_hidden', 'W_in'\]"):
        lens.get({"W_in": w_in, "W_hidden": w_out}, x)
    with pytest.raises(ConfigError, match="distinct names"):
        regroup((("W",), ("W",)))
    with pytest.raises(ConfigError, match=r"positions must be 0 \.\.\. 1"):
        regroup(((0,), (2,)))


# ---------------------------------------------------------------------------------------------
# Training the composite through runs.train

GROMOV = RunConfig(task=ModularTask(p=7, train_fraction=0.6), model=ModelConfig(name="gromov", d_mlp=12),
                   optim=OptimConfig(lr=1e-2, weight_decay=1.0), loss="mse", epochs=6, metrics_every=3,
                   max_checkpoints=3)
MLP = RunConfig(task=ModularTask(p=7, train_fraction=0.6), model=ModelConfig(name="mlp", d_model=4, d_mlp=16),
                optim=OptimConfig(lr=3e-3, weight_decay=0.1), epochs=6, metrics_every=3, max_checkpoints=3)


@pytest.mark.parametrize("config, parts", [
    (GROMOV, ["linear(14, 12)", "square", "linear(12, 7)"]),
    (MLP, ["embedding(7, 4, positions=2)", "linear(8, 16)", "relu", "linear(16, 7)"]),
], ids=["gromov", "mlp"])
def test_experiment_trains_the_composite(config: RunConfig, parts: list[str]) -> None:
    experiment = Experiment(config)
    assert [part.name for part in experiment.model.inner.parts] == parts
    module = experiment.build_module(0)
    params = experiment.init_params(0)
    torch.testing.assert_close(experiment.logits(params), module(experiment.inputs).detach(), atol=0, rtol=0)


@pytest.mark.parametrize("config", [GROMOV, MLP], ids=["gromov", "mlp"])
def test_a_checkpoint_written_by_the_module_lens_resumes_under_the_composite(tmp_path: Path,
                                                                             config: RunConfig) -> None:
    """A run directory as the from_module trainer wrote it (its parameter and optimizer-state names),
    at step 3, resumed by the composite trainer: the same names load, and the remaining steps match
    the module lens stepped on (float32 round-off apart)."""
    experiment = Experiment(config)
    composite = experiment.learner
    module = Learner(from_module(experiment.module_template), composite.loss, composite.optimizer, composite.rate)
    state = module.init(experiment.init_params(0))

    def tensors(s) -> dict[str, torch.Tensor]:
        return {**flatten_named("params", s.params), **flatten_named("opt", s.opt_state)}

    store = RunStore.create(tmp_path / "run", config, tensors(state))
    for _ in range(3):
        state, _ = module.step(state, experiment.x_train, experiment.y_train)
    store.save_checkpoint(3, tensors(state), True)
    assert set(tensors(state)) == set(tensors(composite.init(experiment.init_params(0))))

    result = resume(tmp_path / "run")
    assert result.steps == config.epochs and not result.interrupted
    for _ in range(config.epochs - 3):
        state, _ = module.step(state, experiment.x_train, experiment.y_train)
    loaded = RunStore.open(tmp_path / "run").load_checkpoint().tensors
    for key, value in tensors(state).items():
        torch.testing.assert_close(loaded[key], value, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("config", [GROMOV, MLP], ids=["gromov", "mlp"])
def test_vmapped_seeds_of_the_composite_match_each_seed_alone(tmp_path: Path, config: RunConfig) -> None:
    train(config, tmp_path / "group", seeds=[0, 1])
    alone = train(config.override(seed=1), tmp_path / "alone").run_dirs[0]
    a = RunStore.open(alone).load_checkpoint().tensors
    b = RunStore.open(tmp_path / "group" / "seed-1").load_checkpoint().tensors
    c = RunStore.open(tmp_path / "group" / "seed-0").load_checkpoint().tensors
    for key in a:
        if key.startswith("params"):
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
            assert not torch.equal(b[key], c[key])


def test_minibatch_resume_of_the_composite_is_bit_identical(tmp_path: Path) -> None:
    config = MLP.override(batch_size=8, epochs=3)
    train(config, tmp_path / "full")
    train(config, tmp_path / "part", should_stop=lambda step: step == 5)  # mid-epoch
    resume(tmp_path / "part")
    full = RunStore.open(tmp_path / "full").load_checkpoint().tensors
    part = RunStore.open(tmp_path / "part").load_checkpoint().tensors
    assert full.keys() == part.keys() and all(torch.equal(full[k], part[k]) for k in full)
