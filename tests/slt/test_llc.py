"""The batched SGLD estimator: against d/2 on a regular model, its diagnostics, seeds and errors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from progsynth.errors import ConfigError, LensTypeError, NonFiniteError, UnsupportedOptionError
from progsynth.models.linear import dln_data, dln_module, dln_true_solution, random_dln
from progsynth.slt.dln import dln_loss
from progsynth.slt.llc import (
    SGLDConfig,
    auto_burnin,
    choose_epsilon,
    default_nbeta,
    estimate_llc,
    estimate_llc_for_module,
)

QUICK = SGLDConfig(num_chains=4, num_burnin=200, num_draws=400)


def regression(widths=(6, 4), rank=4, n=2000, seed=0):
    """One linear layer at its true parameter (λ = d/2) with data."""
    generator = torch.Generator().manual_seed(seed)
    params = dln_true_solution(list(widths), rank, generator)
    return params, dln_data(params, n, 0.1, generator)


def cliff_loss(params, threshold):
    """The regression loss, NaN wherever some weight moved more than ``threshold`` from w*."""
    w_star = params[0].clone()

    def loss(p, batch):
        far = (p[0] - w_star).abs().max() > threshold
        return dln_loss(p, batch) + torch.where(far, torch.tensor(math.nan), torch.tensor(0.0))

    return loss


def test_regular_model_gives_half_the_dimension():
    params, data = regression()
    result = estimate_llc(dln_loss, params, data, QUICK)
    assert result.num_params == 24 and result.n == 2000
    assert result.llc_mean == pytest.approx(12.0, rel=0.10)
    assert result.nbeta == pytest.approx(2000 / math.log(2000))
    assert result.diagnostics.ok, result.diagnostics.warnings
    assert result.sweep is not None and result.epsilon == result.sweep.chosen
    assert result.loss_traces.shape == (4, 400)
    assert result.llc_stderr == pytest.approx(np.std(result.llc_per_chain, ddof=1) / 2)
    assert result.llc_stderr_per_chain.shape == (4,) and (result.llc_stderr_per_chain > 0).all()


def test_a_nan_chain_is_dropped_and_the_others_still_estimate():
    params, data = regression((4, 3), 3, n=500)
    config = SGLDConfig(epsilon=1e-3, num_chains=6, num_burnin=100, num_draws=300, batch_size=None)
    cliff = estimate_llc(cliff_loss(params, 0.29), params, data, config)
    safe = estimate_llc(cliff_loss(params, 10.0), params, data, config)
    assert cliff.diagnostics.diverged == (0,)
    assert np.isnan(cliff.llc_per_chain[0]) and np.isnan(cliff.loss_traces[0]).any()
    assert np.isnan(cliff.llc_stderr_per_chain[0]) and np.isfinite(cliff.llc_stderr_per_chain[1:]).all()
    np.testing.assert_array_equal(cliff.llc_per_chain[1:], safe.llc_per_chain[1:])  # chains are independent
    assert cliff.llc_mean == pytest.approx(np.mean(safe.llc_per_chain[1:]))
    assert cliff.llc_mean == pytest.approx(6.0, rel=0.15)
    assert any("1 of 6 chains diverged (chains [0])" in w for w in cliff.diagnostics.warnings)
    assert not safe.diagnostics.diverged


def test_a_blow_up_diverges_every_chain_and_the_estimate_is_nan():
    params, data = regression()
    result = estimate_llc(dln_loss, params, data, SGLDConfig(epsilon=0.05, num_chains=3, num_burnin=20, num_draws=50))
    assert result.diagnostics.diverged == (0, 1, 2)
    assert math.isnan(result.llc_mean) and math.isnan(result.llc_stderr)
    assert any("no healthy chain" in w for w in result.diagnostics.warnings)


def test_chains_run_together_match_a_chain_run_alone():
    params, data = regression()
    config = SGLDConfig(epsilon=1e-4, num_chains=3, num_burnin=50, num_draws=100)
    together = estimate_llc(dln_loss, params, data, config)
    alone = estimate_llc(dln_loss, params, data, SGLDConfig(epsilon=1e-4, num_chains=1, num_burnin=50, num_draws=100))
    np.testing.assert_allclose(alone.loss_traces[0], together.loss_traces[0], rtol=1e-5)
    assert not np.allclose(together.loss_traces[0], together.loss_traces[1])  # chains are not copies
    again = estimate_llc(dln_loss, params, data, config)
    np.testing.assert_array_equal(again.loss_traces, together.loss_traces)  # same seed, same numbers


def test_a_point_that_is_not_a_minimum_is_flagged():
    _, data = regression()
    elsewhere = random_dln([6, 4], torch.Generator().manual_seed(5))
    result = estimate_llc(dln_loss, elsewhere, data, SGLDConfig(epsilon=1e-4, num_chains=2, num_burnin=50, num_draws=200))
    assert result.diagnostics.below_start == (0, 1)
    assert result.llc_mean < 0
    assert any("not a local minimum" in w for w in result.diagnostics.warnings)


def quadratic(d=200, n=1000):
    """U = nβ ‖w‖²/2 (a Gaussian posterior of curvature nβ per direction), data-free."""
    return (lambda w, batch: 0.5 * (w**2).sum() + 0.0 * batch.sum()), torch.zeros(d), torch.zeros(n, 1)


def test_sgld_bias_on_a_gaussian_matches_the_closed_form():
    # SGLD (unadjusted Langevin) on U = κ‖w‖²/2 samples N(0, 1/(κ(1 − εκ/4))): λ̂ = (d/2) / (1 − εκ/4)
    loss, w, data = quadratic()
    kappa = default_nbeta(1000)
    result = estimate_llc(loss, w, data, SGLDConfig(epsilon=0.5 / kappa, localization=0.0, num_chains=4,
                                                    num_burnin=100, num_draws=500))
    assert result.diagnostics.top_curvature == pytest.approx(kappa, rel=1e-5)
    assert result.diagnostics.step_curvature == pytest.approx(0.5, rel=1e-5)
    assert result.llc_mean == pytest.approx(100 / (1 - 0.5 / 4), rel=0.03)


def test_a_large_step_is_flagged_by_acceptance_in_high_dimension():
    loss, w, data = quadratic(d=600)
    config = SGLDConfig(epsilon=0.8 / default_nbeta(1000), localization=0.0, num_chains=2, num_burnin=100,
                        num_draws=300, flag_step_curvature=10.0)
    result = estimate_llc(loss, w, data, config)
    assert result.diagnostics.acceptance_mean < 0.6 and not result.diagnostics.acceptance_ok
    assert [w for w in result.diagnostics.warnings if "MALA acceptance" in w]
    assert not [w for w in result.diagnostics.warnings if "kappa_max" in w]


def test_a_large_step_is_flagged_by_curvature_in_low_dimension():
    params, data = regression()  # d = 24: acceptance stays high even for a badly biased step
    result = estimate_llc(dln_loss, params, data, SGLDConfig(epsilon=2e-3, num_chains=2, num_burnin=100, num_draws=200))
    assert not result.diagnostics.diverged and result.diagnostics.acceptance_ok
    assert result.diagnostics.step_curvature > 1.0
    assert [w for w in result.diagnostics.warnings if "kappa_max" in w]
    assert result.llc_mean > 12.0 * 1.2  # and indeed the estimate is biased upwards


def test_auto_epsilon_interpolates_where_acceptance_crosses_the_target():
    params, data = regression()
    sweep = choose_epsilon(dln_loss, params, data, QUICK)
    acc = np.array(sweep.acceptance)
    k = int(np.flatnonzero(acc < QUICK.target_acceptance)[0])
    assert acc[k - 1] >= QUICK.target_acceptance
    assert sweep.epsilons[k - 1] <= sweep.acceptance_epsilon <= sweep.epsilons[k]
    assert sweep.chosen == min(sweep.acceptance_epsilon, sweep.curvature_epsilon)
    assert sweep.note == ""
    assert acc[-1] == 0.0 and math.isnan(sweep.llc[-1])  # the largest steps diverge


def test_the_module_wrapper_matches_the_functional_path():
    params, data = regression()
    module = dln_module(params)
    module.train()
    before = [p.clone() for p in module.parameters()]
    config = SGLDConfig(epsilon=1e-4, num_chains=2, num_burnin=20, num_draws=60)
    via_module = estimate_llc_for_module(module, *data, loss="mse", config=config)
    via_function = estimate_llc(dln_loss, params, data, config)
    np.testing.assert_allclose(via_module.loss_traces, via_function.loss_traces, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters())) and module.training


def test_cross_entropy_on_a_classifier():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(600, 5, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    result = estimate_llc_for_module(model, x, y, config=SGLDConfig(num_chains=2, num_burnin=100, num_draws=200))
    assert 0 < result.llc_mean < result.num_params / 2 + 5
    json.dumps(result.to_dict(traces=True))  # JSON-ready


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("epsilon", -1.0, "epsilon must be a positive number or 'auto'"),
        ("epsilon", "fast", "epsilon must be a positive number or 'auto', got 'fast'"),
        ("num_chains", 0, "num_chains must be a positive integer, got 0"),
        ("num_draws", 2.5, "num_draws must be a positive integer"),
        ("num_burnin", -1, "num_burnin must be None or an integer from 0 to"),
        ("num_draws", 10**20, "num_chains × num_draws must be at most"),
        ("num_chains", 10**6, "num_chains must be at most 10000"),
        ("batch_size", 0, "batch_size must be a positive integer or None"),
        ("seed", -3, "seed must be an integer from 0 to 9223372036854775807, got -3"),
        ("seed", 10**20, "seed must be an integer from 0 to"),
        ("localization", -1.0, "localization"),
        ("nbeta", 0.0, "nbeta must be positive"),
        ("min_acceptance", 1.5, "min_acceptance"),
        ("target_acceptance", 1.0, "target_acceptance must lie in"),
        ("auto_epsilons", (1e-3, 1e-4), "increasing"),
    ],
)
def test_bad_config_values_name_themselves(field, value, needle):
    params, data = regression(n=50)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        estimate_llc(dln_loss, params, data, SGLDConfig(**{field: value}))


def test_bad_inputs_are_reported():
    params, (x, y) = regression(n=50)
    with pytest.raises(LensTypeError, match="floating-point"):
        estimate_llc(dln_loss, (torch.ones(4, 6, dtype=torch.int64),), (x, y))
    with pytest.raises(LensTypeError, match="same number of rows"):
        estimate_llc(dln_loss, params, (x, y[:10]))
    with pytest.raises(NonFiniteError, match="finite"):
        estimate_llc(dln_loss, (torch.full((4, 6), math.nan),), (x, y))
    with pytest.raises(UnsupportedOptionError, match="hinge"):
        estimate_llc_for_module(dln_module(params), x, y, loss="hinge")
    with pytest.raises(ConfigError, match="n >= 2"):
        default_nbeta(1)
    with pytest.raises(ConfigError, match="SGLDConfig"):
        estimate_llc(dln_loss, params, (x, y), {"epsilon": 1e-4})


def test_chains_that_never_moved_are_flagged():
    params, data = regression()
    stuck = estimate_llc(dln_loss, params, data, SGLDConfig(epsilon=1e-12, num_chains=2, num_burnin=50,
                                                             num_draws=200))
    assert abs(stuck.llc_mean) < 0.1  # λ̂ ≈ 0 for a regular model with λ = 12: meaningless
    assert any("barely moved" in w for w in stuck.diagnostics.warnings), stuck.diagnostics.warnings
    moving = estimate_llc(dln_loss, params, data, SGLDConfig(epsilon=1e-4, num_chains=2, num_burnin=50,
                                                              num_draws=200))
    assert not any("barely moved" in w for w in moving.diagnostics.warnings)


def test_one_chain_and_few_draws_are_flagged():
    params, data = regression()
    one = estimate_llc(dln_loss, params, data, SGLDConfig(epsilon=1e-4, num_chains=1, num_burnin=50, num_draws=200))
    assert math.isnan(one.llc_stderr)
    assert any("only one healthy chain" in w for w in one.diagnostics.warnings), one.diagnostics.warnings
    few = estimate_llc(dln_loss, params, data, SGLDConfig(epsilon=1e-4, num_chains=2, num_burnin=50, num_draws=5))
    assert any("only 5 draws per chain (fewer than 100)" in w for w in few.diagnostics.warnings)
    enough = estimate_llc(dln_loss, params, data, SGLDConfig(epsilon=1e-4, num_chains=2, num_burnin=50,
                                                              num_draws=100))
    assert not any("draws per chain" in w or "one healthy" in w for w in enough.diagnostics.warnings)


def test_the_sampler_reports_progress_through_its_callback_and_draws_nothing(capsys):
    """The library is silent: progress goes to the callback, about a hundred times and at the end."""
    seen = []
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    params = {"w": torch.tensor([1.0, -2.0, 0.5])}
    config = SGLDConfig(num_chains=2, num_draws=250, num_burnin=50, epsilon=1e-4, batch_size=50,
                        progress=lambda done, total: seen.append((done, total)))
    estimate_llc(lambda p, batch: ((batch[0] @ p["w"] - batch[1]) ** 2).mean(), params, (x, y), config)
    assert seen[-1] == (300, 300) and 90 <= len(seen) <= 101 and all(t == 300 for _, t in seen)
    assert capsys.readouterr() == ("", "")
    with pytest.raises(ConfigError, match="progress must be None or a callable"):
        SGLDConfig(progress=True).validate()


def test_a_drifting_trace_is_flagged_and_a_stationary_one_is_not():
    # U = nβ L + γ‖w‖²/2 with L = 0.005 ‖w‖² (d = 200): curvature ≈ 1.55, so at ε = 5e-4 the chains'
    # spread from w* = 0 relaxes over ≈ 1,300 steps and the loss still rises through 400 draws
    loss, w, data = (lambda p, batch: 0.005 * (p**2).sum() + 0.0 * batch.sum()), torch.zeros(200), torch.zeros(1000, 1)
    config = SGLDConfig(localization=0.1, num_chains=4, num_draws=400, check_localization_chains=0)
    young = estimate_llc(loss, w, data, dataclasses.replace(config, epsilon=5e-4, num_burnin=0))
    assert young.diagnostics.nonstationary == (0, 1, 2, 3), young.diagnostics.drift_z
    assert all(z > 4 and drift > 0 for z, drift in zip(young.diagnostics.drift_z, young.diagnostics.drift))
    assert any("not stationary" in w and "may be biased" in w for w in young.diagnostics.warnings)
    # relaxation ≈ 65 steps at ε = 1e-2: stationary after 1,000 (chain 1 still shows drift_z > 4 alone:
    # slow mixing, not drift, which is why the flag pools the chains)
    settled = estimate_llc(loss, w, data, dataclasses.replace(config, epsilon=1e-2, num_burnin=1000, seed=1))
    assert settled.diagnostics.nonstationary == () and settled.diagnostics.ok, settled.diagnostics.warnings
    assert max(abs(z) for z in settled.diagnostics.drift_z) > 4
    assert settled.llc_mean > 5 * young.llc_mean  # the young chains' λ̂ was far too low and rising


def test_the_automatic_burnin_spans_two_relaxation_times_of_the_localization():
    params, data = regression()
    result = estimate_llc(dln_loss, params, data, SGLDConfig(num_chains=2, num_draws=200))
    first = result.burnin[0]
    # two relaxation times of the weakest localization in the batch: the check chains' γ/2
    assert first.steps == auto_burnin(first.epsilon, SGLDConfig()) == min(8000, max(1000, math.ceil(2 / (first.epsilon * 2.5))))
    assert auto_burnin(first.epsilon, SGLDConfig(check_localization_chains=0)) == max(1000, math.ceil(2 / (first.epsilon * 5)))
    assert auto_burnin(1e-9, SGLDConfig()) == 8000 and auto_burnin(1.0, SGLDConfig()) == 1000
    assert auto_burnin(1e-4, SGLDConfig(localization=0.0)) == 8000
    fixed = estimate_llc(dln_loss, params, data, SGLDConfig(epsilon=1e-4, num_chains=2, num_burnin=70, num_draws=200))
    assert [(p.epsilon, p.steps) for p in fixed.burnin] == [(1e-4, 70)] and math.isnan(fixed.burnin[0].acceptance)


def test_a_low_burnin_acceptance_retunes_epsilon_downwards():
    params, data = regression()
    # a demanding threshold (and short phases) forces retunes; each aims ε at the target by the ε^(3/2) rule
    config = SGLDConfig(num_chains=2, num_draws=200, target_acceptance=0.999, retune_acceptance=0.999,
                        min_burnin=100, max_burnin=200)
    strict = estimate_llc(dln_loss, params, data, config)
    phases = strict.burnin
    assert len(phases) >= 2 and strict.sweep is not None and phases[0].epsilon == strict.sweep.chosen
    for before, after in zip(phases, phases[1:]):
        assert before.acceptance < 0.999
        assert after.epsilon == pytest.approx(before.epsilon * (0.001 / (1 - before.acceptance)) ** (2 / 3))
        assert after.epsilon < before.epsilon
    assert strict.epsilon == phases[-1].epsilon
    assert json.loads(json.dumps(strict.to_dict()))["burnin"][-1]["epsilon"] == phases[-1].epsilon
    relaxed = estimate_llc(dln_loss, params, data, dataclasses.replace(config, retune_acceptance=0.0))
    assert len(relaxed.burnin) == 1 and relaxed.epsilon == relaxed.sweep.chosen


def test_the_localization_check_is_quiet_on_a_regular_model_and_flags_a_singular_point():
    params, data = regression()
    regular = estimate_llc(dln_loss, params, data, QUICK)
    assert regular.loss_traces.shape == (4, 400)  # the check chains are not part of λ̂
    assert abs(regular.diagnostics.localization_shift) < 0.06 and regular.diagnostics.ok
    assert regular.diagnostics.check_llc == pytest.approx(12.0, rel=0.1)
    off = estimate_llc(dln_loss, params, data, dataclasses.replace(QUICK, check_localization_chains=0))
    np.testing.assert_array_equal(off.loss_traces, regular.loss_traces)  # the check chains change nothing else
    assert math.isnan(off.diagnostics.localization_shift) and math.isnan(off.diagnostics.check_llc)
    assert off.diagnostics.check_llcs == ()
    # the systematic uncertainty: the largest γ → 0 correction |λ̂(γ) − λ̂(fγ)| / |f − 1| over f = 1/2, 2
    below, above = regular.diagnostics.check_llcs
    corrections = (2 * abs(regular.llc_mean - below), abs(regular.llc_mean - above))
    assert regular.llc_systematic == pytest.approx(max(corrections))
    assert regular.diagnostics.check_llc == (below, above)[corrections.index(max(corrections))]
    assert regular.llc_uncertainty == pytest.approx(math.hypot(regular.llc_stderr, regular.llc_systematic))
    assert regular.llc_uncertainty >= regular.llc_stderr
    row = json.loads(json.dumps(regular.to_dict()))
    assert row["llc_systematic"] == regular.llc_systematic and row["llc_uncertainty"] == regular.llc_uncertainty
    assert math.isnan(off.llc_systematic) and math.isnan(off.llc_uncertainty)  # not measured: not claimed
    # a deep network at w* = 0: λ = 3, and γ decides how far its flat directions reach
    generator = torch.Generator().manual_seed(0)
    zero = dln_true_solution([3, 3, 3, 3], 0, generator)
    flat = estimate_llc(dln_loss, zero, dln_data(zero, 2000, 0.1, generator),
                        SGLDConfig(num_chains=4, num_draws=600, check_localization_chains=8))
    assert flat.diagnostics.localization_shift > 0.12
    assert flat.llc_systematic == pytest.approx(flat.llc_mean * flat.diagnostics.localization_shift)
    # the total ± now carries the γ-dependence the standard error misses
    assert flat.llc_uncertainty >= flat.llc_systematic > max(0.12 * flat.llc_mean, 2 * flat.llc_stderr)
    assert any("depends on the localization" in w and "may be biased" in w for w in flat.diagnostics.warnings)
    assert flat.llc_mean < 0.9 * 3 and abs(flat.llc_mean - 3) < 2 * flat.llc_uncertainty  # low, and the ± says so
