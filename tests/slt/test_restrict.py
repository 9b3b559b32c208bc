"""The refined LLC (slt.restrict, `progsynth llc --restrict/--data`): against the unrestricted
sampler, a regular subset's d/2, the transformer's components, and the rows a run gains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.errors import ConfigError
from progsynth.models.linear import dln_data, dln_module, random_dln
from progsynth.models.transformer import Transformer, TransformerConfig
from progsynth.report.phases import _llc_rows, summary
from progsynth.runs.store import RunStore
from progsynth.slt.llc import SGLDConfig, default_nbeta, estimate_llc_for_module
from progsynth.slt.restrict import resolve, restricted_module
from progsynth.slt.run_llc import load_llc, refined_rows

runner = CliRunner()
FAST = ["--chains", "3", "--draws", "60", "--burnin", "20", "--epsilon", "5e-4"]


def small_dln() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    params = random_dln([6, 5, 4], generator, dtype=torch.float64)
    x, y = dln_data(params, 2000, generator=generator)
    return dln_module(params), x, y


def test_restricting_to_every_weight_reproduces_the_unrestricted_draws():
    module, x, y = small_dln()
    config = SGLDConfig(num_chains=2, num_draws=100, num_burnin=50, epsilon=1e-4)
    whole = estimate_llc_for_module(module, x, y, "mse", config)
    restricted = estimate_llc_for_module(restricted_module(module, resolve(module, "*")), x, y, "mse", config)
    assert restricted.llc_per_chain.tolist() == pytest.approx(whole.llc_per_chain.tolist(), rel=1e-12)


def test_a_regular_subset_gives_half_its_dimension():
    # With the first layer frozen at a full-rank W1, the loss in W2 alone is a linear regression on
    # the features W1 x: regular, so λ = d_subset / 2 = 20 / 2.
    module, x, y = small_dln()
    restriction = resolve(module, "1.weight")
    assert restriction.size == 20
    config = SGLDConfig(num_chains=4, num_draws=1000, num_burnin=1000)
    result = estimate_llc_for_module(restricted_module(module, restriction), x, y, "mse", config)
    assert result.llc_mean == pytest.approx(10.0, rel=0.10)
    assert result.num_params == 20


def test_transformer_components_move_only_their_weights():
    model = Transformer(TransformerConfig(p=7, d_model=8, n_heads=2, d_head=4, d_mlp=16),
                        torch.Generator().manual_seed(0), dtype=torch.float64)
    tokens = torch.tensor([[a, b, 7] for a in range(7) for b in range(7)])
    sizes = {name: resolve(model, name).size for name in model.components()}
    assert sizes == {"embedding": 8 * 8 + 3 * 8, "head0": 4 * 8 * 4, "head1": 4 * 8 * 4,
                     "mlp": 8 * 16 + 16 + 16 * 8 + 8, "unembedding": 8 * 7}
    assert sum(sizes.values()) == sum(p.numel() for p in model.parameters())
    wrapped = restricted_module(model, resolve(model, "head1"))
    assert torch.equal(wrapped(tokens), model(tokens))
    # head1's weights are W_Q[1], W_K[1], W_V[1], W_O[1], each its own tensor, in that order; their
    # gradients are the whole model's gradients' slices at head 1
    full = torch.autograd.grad(model(tokens).square().sum(), [model.W_Q, model.W_K, model.W_V, model.W_O])
    moved = list(wrapped.parameters())
    assert len(moved) == 4
    grads = torch.autograd.grad(wrapped(tokens).square().sum(), moved)
    for g, whole in zip(grads, full):
        assert torch.allclose(g, whole[1], rtol=1e-10, atol=1e-12)


def test_a_pattern_that_matches_nothing_lists_the_parameters():
    model = Transformer(TransformerConfig(p=5, d_model=8, n_heads=2, d_head=4, d_mlp=8))
    with pytest.raises(ConfigError, match="matches no component or parameter.*head0.*W_pos"):
        resolve(model, "attention")
    assert resolve(model, "W_Q,W_K").size == 2 * 2 * 8 * 4
    assert resolve(model, "b_*").parts == {"b_in": None, "b_out": None}


def test_cli_restricted_rows_stay_out_of_the_main_curve_and_are_skipped_on_rerun(run: Path):
    steps = RunStore.open(run).checkpoint_steps()
    last = str(steps[-1])
    first = runner.invoke(app, ["llc", str(run), "--checkpoints", last, *FAST, "--restrict", "all-components", "--json"])
    assert first.exit_code == 0, first.output
    out = json.loads(first.output.strip().splitlines()[-1])
    assert sorted(e["restrict"] for e in out["estimates"]) == ["input", "output"]
    assert {e["params_sampled"] for e in out["estimates"]} == {46 * 96, 96 * 23}
    measures = RunStore.open(run).measures()
    assert _llc_rows(measures).empty  # the whole-network curve has no estimate yet
    refined = refined_rows(measures)
    assert refined["restrict"].tolist() == ["input", "output"] and (refined["step"] == steps[-1]).all()
    assert "refined λ̂ by component" not in [m.what for m in summary(run).missing]
    assert summary(run).to_dict()["refined_llc"].keys() == {"input (train)", "output (train)"}

    again = runner.invoke(app, ["llc", str(run), "--checkpoints", last, *FAST, "--restrict", "output", "--json"])
    assert json.loads(again.output.strip().splitlines()[-1])["skipped"] == [steps[-1]]

    held_out = runner.invoke(app, ["llc", str(run), "--checkpoints", last, *FAST, "--data", "test", "--json"])
    assert held_out.exit_code == 0, held_out.output
    (row,) = json.loads(held_out.output.strip().splitlines()[-1])["estimates"]
    n_test = 23 * 23 - round(0.5 * 23 * 23)
    assert row["data"] == "test" and row["restrict"] is None
    assert row["nbeta"] == pytest.approx(default_nbeta(n_test), rel=0.02)
    assert load_llc(run).empty and len(load_llc(run, data="test")) == 1


def test_cli_bad_restrict_or_data_fails_in_one_line_and_writes_nothing(run: Path):
    last = str(RunStore.open(run).checkpoint_steps()[-1])
    bad = runner.invoke(app, ["llc", str(run), "--checkpoints", last, *FAST, "--restrict", "W_Q"])
    assert bad.exit_code == 1 and "W_in" in bad.output and "Traceback" not in bad.output
    data = runner.invoke(app, ["llc", str(run), "--checkpoints", last, *FAST, "--data", "everything"])
    assert data.exit_code == 1 and "'everything'" in data.output and "train" in data.output
    assert RunStore.open(run).measures().empty
