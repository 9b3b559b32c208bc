"""Aoyagi's λ for deep linear networks against the closed forms it must reproduce, and one SGLD check."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.func import grad_and_value, vmap

from progsynth.errors import ConfigError
from progsynth.slt.dln import aoyagi_lambda, aoyagi_subset, check_dln_llc, dln_loss, dln_problem, num_parameters
from progsynth.slt.llc import SGLDConfig, estimate_llc


def rrr_case(m: int, h: int, n: int, r: int) -> tuple[str, Fraction]:
    """Aoyagi & Watanabe (2005), reduced-rank regression: input M, hidden H, output N, true rank r ≤ H.

    Returns (case, λ). Written out independently of the library (as in the sBIC package's
    learnCoef for ReducedRankRegressions) so the general DLN formula is checked against it.
    """
    if n + r <= m + h and m + r <= n + h and h + r <= m + n:
        odd = (m + h + n + r) % 2
        return ("1 odd" if odd else "1 even"), Fraction(2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2 + odd, 8)
    if m + h < n + r:
        return "2", Fraction(h * m - h * r + n * r, 2)
    if n + h < m + r:
        return "3", Fraction(h * n - h * r + m * r, 2)
    return "4", Fraction(m * n, 2)  # m + n < h + r: the hidden layer is wide enough to be regular


@pytest.mark.parametrize("widths", [(3, 4), (5, 5), (1, 7), (9, 2)])
def test_one_layer_is_regular_d_over_2_at_every_rank(widths):
    for rank in range(min(widths) + 1):
        assert aoyagi_lambda(widths, rank) == num_parameters(widths) / 2


@pytest.mark.parametrize(
    "m,h,n,r,case",
    [
        (5, 3, 5, 2, "1 odd"),
        (3, 2, 3, 1, "1 odd"),
        (10, 5, 10, 2, "1 odd"),
        (5, 3, 5, 1, "1 even"),
        (5, 4, 5, 2, "1 even"),
        (4, 3, 8, 1, "2"),
        (2, 1, 4, 0, "2"),
        (8, 3, 4, 1, "3"),
        (4, 1, 2, 1, "3"),
        (3, 8, 4, 2, "4"),
        (1, 4, 2, 1, "4"),
    ],
)
def test_two_layers_match_each_reduced_rank_regression_case(m, h, n, r, case):
    found, expected = rrr_case(m, h, n, r)
    assert found == case
    assert aoyagi_lambda([m, h, n], r) == float(expected)


def test_two_layers_match_reduced_rank_regression_on_a_full_grid():
    mismatches = [
        (m, h, n, r)
        for m, h, n in itertools.product(range(1, 9), repeat=3)
        for r in range(min(m, h, n) + 1)
        if aoyagi_lambda([m, h, n], r) != float(rrr_case(m, h, n, r)[1])
    ]
    assert mismatches == []


def test_reference_example_is_97():
    assert aoyagi_lambda([20, 10, 10, 10, 20], 5) == 97.0
    subset = aoyagi_subset([20, 10, 10, 10, 20], 5)
    assert set(subset.indices) == {1, 2, 3} and subset.ell == 2 and subset.total == 15


def test_lambda_never_exceeds_half_the_parameters():
    for depth in (2, 3, 4):
        for widths in itertools.product(range(1, 6), repeat=depth + 1):
            for r in range(min(widths) + 1):
                lam = aoyagi_lambda(widths, r)
                assert 0 < lam <= num_parameters(widths) / 2, (widths, r, lam)


@pytest.mark.parametrize(
    "widths,rank,needle",
    [
        ([], 0, "at least an input and an output"),
        ([5], 0, "at least an input and an output"),
        ([4, 0, 3], 0, "positive integer, got 0"),
        ([4, 2.5, 3], 1, "positive integer, got 2.5"),
        ([4, True, 3], 1, "positive integer, got True"),
        ([4, 3, 5], -1, "0 <= rank <= min(widths) = 3, got -1"),
        ([4, 3, 5], 4, "0 <= rank <= min(widths) = 3, got 4"),
        ("abc", 0, "positive integer"),
        (7, 0, "sequence of positive integers"),
    ],
)
def test_bad_widths_and_ranks_are_config_errors(widths, rank, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        aoyagi_lambda(widths, rank)


def test_sgld_on_a_small_dln_lands_within_5_percent_of_aoyagi():
    """The automatic burn-in (two relaxation times 1/(εγ)) and γ = 5: within 5 % (it was 10 % with a
    fixed 300-step burn-in at γ = 10)."""
    config = SGLDConfig(num_chains=4, num_draws=600)
    check = check_dln_llc([6, 4, 6], 2, n=2000, config=config)
    assert check.exact == 13.5
    assert abs(check.rel_error) < 0.05, check.to_dict()
    # the check chains at γ/2 may call λ̂ localization-dependent (conservative), but nothing else may fire
    assert all("depends on the localization" in w for w in check.result.diagnostics.warnings)
    row = check.to_dict()
    assert row["lambda"] == 13.5 and row["burnin"][0]["steps"] > 300 and row["nonstationary"] == []
    assert abs(row["llc_mean"] - 13.5) < 2 * row["llc_uncertainty"]
    assert row["llc_systematic"] == pytest.approx(row["llc_mean"] * abs(row["localization_shift"]))
    assert row["llc_uncertainty"] == pytest.approx(math.hypot(row["llc_stderr"], row["llc_systematic"]))


def test_check_dln_llc_rejects_a_bad_data_seed():
    with pytest.raises(ConfigError, match="data_seed"):
        check_dln_llc([3, 3], 1, data_seed=-1)


@pytest.mark.parametrize("widths", [(5,), (4, 3), (6, 4, 6), (3, 5, 2, 4)])
@pytest.mark.parametrize("shared", [True, False])
def test_hand_written_chain_gradients_equal_autograd(widths, shared):
    """dln_loss.chains_grad_and_value against vmap(grad_and_value(dln_loss)), float64, for
    per-chain minibatches and for the full data shared by every chain."""
    g = torch.Generator().manual_seed(len(widths))
    widths = (3, *widths)
    chains, rows = 5, 17
    params = tuple(torch.randn(chains, b, a, generator=g, dtype=torch.float64) for a, b in zip(widths, widths[1:]))
    lead = () if shared else (chains,)
    x = torch.randn(*lead, rows, widths[0], generator=g, dtype=torch.float64)
    y = torch.randn(*lead, rows, widths[-1], generator=g, dtype=torch.float64)
    grads, losses = dln_loss.chains_grad_and_value(params, (x, y))
    in_dims = (0, None if shared else 0)
    expected_grads, expected_losses = vmap(grad_and_value(dln_loss), in_dims=in_dims)(params, (x, y))
    assert losses.shape == (chains,) and torch.allclose(losses, expected_losses, atol=1e-12)
    for mine, theirs in zip(grads, expected_grads, strict=True):
        assert mine.shape == theirs.shape and torch.allclose(mine, theirs, atol=1e-12)


def test_sgld_with_the_hand_written_gradient_follows_autograd():
    """The same chains, float64, with and without the DLN's own gradient: the same draws."""
    params, data = dln_problem((6, 4, 6), 2, n=500)
    params = tuple(p.double() for p in params)
    data = tuple(t.double() for t in data)
    config = SGLDConfig(epsilon=1e-4, num_chains=3, num_burnin=20, num_draws=40, batch_size=100)
    fast = estimate_llc(dln_loss, params, data, config)
    slow = estimate_llc(lambda p, b: dln_loss(p, b), params, data, config)  # no chains_grad_and_value
    assert np.allclose(fast.loss_traces, slow.loss_traces, rtol=1e-9, atol=0)
    assert fast.llc_mean == pytest.approx(slow.llc_mean, rel=1e-8)
