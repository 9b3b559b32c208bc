"""The local learning coefficient λ̂ by SGLD, with many chains run together (REFERENCE §4).

Estimator. From w* (the parameters given), each chain runs

    w ← w − (ε/2) [nβ ∇L_m(w) + γ (w − w*)] + √ε ξ,      ξ ~ N(0, I),

with L_m the mean loss on a minibatch of m rows drawn without replacement (a fresh permutation of
the n rows per epoch, per chain), nβ = n / log n by default and γ the localization (5 by default).
After the burn-in every step is a draw, and

    λ̂_chain = nβ (mean over draws of L_m(w_t) − L_n(w*)).

Burn-in (``num_burnin=None``, the default: ``auto_burnin``). Along a direction the loss does not
see, SGLD is an Ornstein-Uhlenbeck process held by γ alone: its spread, which starts at 0 at w*,
relaxes to 1/γ as 1 − exp(−εγt) after t steps, so a chain needs several relaxation times 1/(εγ)
before its draws are stationary. At a singular point such directions are only nearly flat (the
loss grows as a product of several small weights), and their slow spread raises the loss slowly:
a burn-in shorter than 1/(εγ) leaves λ̂ low. On the deep linear network [8, 6, 4, 6, 8] at rank 2
(λ = 17.5; ε ≈ 2.5e-5, γ = 10, so 1/(εγ) ≈ 4,000 steps) the former fixed 1,000 burn-in steps gave
15.4, a 20,000-step burn-in 16.6, and λ̂ over consecutive quarters of a long run kept rising
(README → Reliability). The burn-in is therefore ``burnin_relaxations`` (2) relaxation times,
⌈2 / (εγ)⌉ steps, kept within [``min_burnin``, ``max_burnin``] = [1,000, 8,000] per phase (the cap
bounds the cost; the non-stationarity check below says when it was not enough).

Why γ = 5 and not 10: even at stationarity γ confines the nearly flat directions, whose reach at
nβ ≈ 1,000 is comparable with the localization width 1/√γ, and that lowers λ̂ on deep singular
networks ([8, 6, 4, 6, 8] rank 2: 14.8 at γ = 30, 16.5 at 10, 17.8 at 5 with long chains). Weaker
localization lets chains drift along the network's symmetries towards points of higher curvature
(and, far away, higher local λ), which ε must follow: hence the burn-in retunes of ε below. γ = 5
with them kept every network of README → Results within 5 %; γ = 1–3 at the sweep's ε overshot by
8–25 %.

Which loss: at each draw we record the minibatch loss L_m(w_t) at the point *before* the update,

Which loss: at each draw we record the minibatch loss L_m(w_t) at the point *before* the update,
the same forward pass that gives the gradient (devinterp does the same), so a draw costs nothing
extra; L_m(w_t) is an unbiased estimate of L_n(w_t). L_n(w*) is the exact full-data loss (devinterp
averages a few minibatches instead). ``loss_fn(params, batch)`` must return the *mean* loss over the
rows of ``batch``; the full-data loss is the row-weighted mean over chunks of ``batch_size`` rows.

Chains are one batched computation: parameters are flattened into one vector per chain, stacked
into a (chains, d) tensor, and ``torch.func.vmap(torch.func.grad_and_value(...))`` evaluates every
chain's minibatch loss and gradient in one call. Each chain has its own random streams (noise and
minibatches) seeded from ``numpy.random.SeedSequence([seed, 0]).spawn``, so at a given ε and
burn-in chain c's trace does not depend on how many chains run beside it (ε's burn-in retunes use
the main chains' mean acceptance, so with ``epsilon="auto"`` they share ε).

λ̂ reported = mean of λ̂_chain over healthy chains; its standard error = std over those chains
(ddof = 1) / √(number of healthy chains) (chains are independent; draws within a chain are not).
Each chain's λ̂ also gets its own standard error, nβ × the batch-means standard error of its excess
loss over 10 blocks of consecutive draws (``llc_stderr_per_chain``).

Diagnostics (each names the chains it concerns and adds a line to ``diagnostics.warnings``):

- **Divergence**: a chain diverged if any recorded loss is NaN or ±inf, or if at some draw
  L_m(w_t) − L_n(w*) > ``divergence_factor`` × max(d / (2 nβ), |L_n(w*)|). d/(2nβ) is the rise of the
  expected loss of a regular model (λ = d/2, the largest λ a minimum can have) and |L_n(w*)| is
  the scale of the loss itself, so only a real blow-up (ε too large, the chain left the basin)
  crosses it. Diverged chains are reported and excluded; the others still give the estimate.
- **Not a minimum**: a healthy chain whose draws lie systematically below L_n(w*): its mean
  excess loss is below −3 standard errors, the standard error from 10 consecutive blocks of draws
  (batch means, so autocorrelated draws do not inflate the evidence). At a local minimum the
  excess is ≥ 0 on average; a significantly negative one means SGLD found lower loss nearby.
- **Acceptance**: the Metropolis-adjusted Langevin (MALA) acceptance probability of the SGLD
  step, computed every ``acceptance_every`` draws on the *same* minibatch B at both ends of the
  step (one more gradient, at the proposal; mixing two minibatches, as devinterp does, buries the
  acceptance in minibatch noise of size nβ · std(L_m)). With U(w) = nβ L_B(w) + γ/2 ‖w − w*‖² and
  the proposal w' = w − (ε/2)∇U(w) + √ε ξ,

      α = min(1, exp[U(w) − U(w') − ‖w − w' + (ε/2)∇U(w')‖² / (2ε) + ‖ξ‖² / 2]).

  Flagged when the mean over healthy chains lies outside [``min_acceptance``, ``max_acceptance``]
  (0.75 and 1 by default: on the deep-linear-network checks, runs with mean acceptance ≥ 0.8
  stayed within a few % of Aoyagi's λ and runs at 0.55–0.7 overshot it by 15–35 %).

- **Chains that never moved**: a healthy chain whose root-mean-square distance per coordinate
  from w* at its last step is below ``min_displacement`` × the scale of w* (the RMS coordinate of
  w*; 1/√γ when w* is 0). A step size so small that the chains stay at w* gives λ̂ ≈ 0 whatever
  the model, and the acceptance cannot see it (at such ε the acceptance's ‖·‖²/(2ε) term is
  rounding noise in float32), so the displacement is the check (README → Reliability has the
  runs that set the threshold). Also flagged: a single healthy chain (no standard error) and
  fewer than ``min_draws`` draws.
- **Not stationary**: per healthy chain, the mean excess loss of the last quarter of draws minus
  that of the third quarter (``drift``, in λ units after × nβ), and that over √(se₃² + se₄²), each
  quarter's standard error from 10 blocks of consecutive draws (``drift_z``). The run is flagged
  when the chains' mean drift exceeds ``max_drift_t`` = 4 standard errors *across chains* (a t
  statistic over independent chains); the warning names the chains whose own |``drift_z``| exceeds
  ``max_drift_z`` = 4 in that direction. Why across chains: batch means from 10 blocks of a quarter
  underestimate the standard error of a chain that mixes slowly, so a stationary chain's
  |``drift_z``| often reaches 4–8 (a quadratic whose autocorrelation time is 30–65 draws, 400 draws:
  8 of 24 stationary chains beyond 4), while a burn-in that was too short makes every chain drift
  the same way (the same quadratic from w* without burn-in: t ≈ 8–20, every chain beyond 4). The
  flag says λ̂ may be biased by more than its ± shows (the ± measures only the spread between
  chains); a longer burn-in is the remedy.
- **Localization dependence**: ``check_localization_chains`` (4) extra chains at each f·γ, f in
  ``check_localization_factors`` (½ and 2), run in the same batch, with the same ε and their own
  streams, and not part of λ̂. λ̂ is meant as its limit γ → 0; extrapolating it linearly in γ from γ
  and f·γ to γ = 0 moves it by (λ̂(γ) − λ̂(fγ)) / (f − 1), and ``localization_shift`` is the largest
  such correction relative to λ̂ (positive: λ̂ rises as γ weakens). On a regular model it is ≈ 0;
  where γ confines flat directions that matter it is positive, and when one factor's exceeds
  ``max_localization_shift`` (12 %) while its λ̂ differs from the main one by more than 2 combined
  standard errors (std over chains / √chains on each side, so noise alone is not flagged), the run
  is flagged: λ̂ then depends on a setting with no right value. Why both sides: on some small deep
  networks λ̂ is flat between γ and 2γ but rises below γ ([4, 3, 3, 4] rank 1, [4, 4, 4, 4, 4, 4, 4]
  rank 2: 8–13 % low, seen only at γ/2), on others it falls above γ and four chains at γ/2 may not
  show it ([5, 5, 5, 5, 5] rank 1, [6, 6, 6, 6, 6, 6] rank 2: 13–16 % low, seen at 2γ); a longer
  burn-in or a larger nβ did not help either (README → Reliability). The chains at γ/2 relax more
  slowly, so the automatic burn-in follows them (``auto_burnin``).

  The same chains give the estimate a **systematic uncertainty** from the localization,
  ``llc_systematic`` = the largest |λ̂(γ) − λ̂(fγ)| / |f − 1| (2 |λ̂(γ) − λ̂(γ/2)| or |λ̂(γ) − λ̂(2γ)|),
  the size of the correction the estimator cannot make reliably, reported on every run, flagged or
  not. It is noisy (the check chains' own standard error enters it) and so conservative on
  estimates that are already right. ``llc_uncertainty`` = √(``llc_stderr``² + ``llc_systematic``²)
  is the ± to read when judging λ̂ against a number; NaN without check chains, where the estimator
  cannot say how much γ shapes λ̂. It does not cover ε's discretisation bias, which the acceptance
  and curvature checks below watch.
- **Step against curvature**: κ_max, the largest |eigenvalue| of ∇²U at w* on one minibatch (nβ
  times the loss Hessian's, plus γ; Lanczos on Hessian-vector products, ``hvp_operator``). SGLD inflates the spread
  along a direction of curvature κ by ≈ εκ/4 (exactly 1/(1 − εκ/4) for a Gaussian), so a run with
  ε κ_max > ``flag_step_curvature`` is flagged. This is the check that still works in low
  dimension, where MALA acceptance stays high even for biased steps (d = 24 at εκ ≈ 1.3: acceptance
  0.8, estimate 39 % high); acceptance is the check that sees curvature growing away from w*.

``epsilon="auto"`` (``choose_epsilon``): one chain per candidate ε of a log grid, all run together
for ``auto_steps`` steps from w*; the acceptance of each is its mean MALA acceptance over the second
half of its steps (measured at every other step), 0 if it diverged. The acceptance step is where that
acceptance, interpolated linearly in log ε between neighbouring candidates, first falls to
``target_acceptance`` (0.95): the largest step (fastest mixing) whose discretisation error is still
small. The curvature step is ``max_step_curvature`` / κ_max (0.25 / κ_max). ε is the smaller of the
two. Why 0.95 and not the usual 0.9: on seven deep linear networks (benchmarks/llc.py) the 0.9 rule
left a regular model 7 % high and one very singular network 22 % high; 0.95 kept all seven within
6 %, with long-run acceptances of 0.87–0.96. On those networks the two steps nearly coincide.

Burn-in retunes (``epsilon="auto"`` only). The sweep's chains are young; a long burn-in carries
chains to where the curvature is higher and the acceptance lower, and there SGLD's bias is upward
and large (on [5, 10, 15, 10, 5] rank 5, λ = 12.5: the sweep's ε gave acceptance 0.79 after
10,000 steps and λ̂ 17.6 % high; ε/2 gave 0.93 and +5 %, ε/4 0.97 and +2 %). So the main chains'
MALA acceptance is measured over the second half of each burn-in phase; below
``retune_acceptance`` (0.9), ε is multiplied by ((1 − ``target_acceptance``) / (1 − acceptance))^(2/3)
(MALA's rejection grows about as ε^(3/2)) and the chains burn in for another phase from where they
are, at most ``max_retunes`` (2) times. ``LLCResult.burnin`` lists the phases; ``epsilon`` is the last.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import functional_call, grad, grad_and_value, vmap
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from progsynth.errors import ConfigError, LensTypeError, NonFiniteError, UnsupportedOptionError
from progsynth.tasks.common import MAX_SEED

__all__ = [
    "SGLDConfig",
    "LLCDiagnostics",
    "EpsilonSweep",
    "BurninPhase",
    "LLCResult",
    "LossFn",
    "estimate_llc",
    "estimate_llc_for_module",
    "choose_epsilon",
    "auto_burnin",
    "default_nbeta",
    "hvp_operator",
    "squared_error",
    "model_outputs",
    "MODULE_LOSSES",
]

LossFn = Callable[[Any, Any], torch.Tensor]
"""``loss_fn(params, batch) -> scalar``: the mean loss over the rows of ``batch`` at ``params``.

A loss function may also carry a hand-written gradient for every chain at once,
``loss_fn.chains_grad_and_value(params, batch) -> (grads, losses)``: params a pytree like the
parameters with a leading chain dimension C on every leaf, batch a pytree like the data whose
leaves have a leading chain dimension too (each chain's minibatch), or none (the full data, shared
by every chain); grads like params, losses (C,). SGLD then uses it instead of
``vmap(grad_and_value(loss_fn))``, whose per-operation cost dominates on small networks. It must
compute the same function (``slt.dln.dln_loss`` has one; its tests check it against autograd)."""

_MAIN_STREAM, _SWEEP_STREAM = 0, 1
MAX_CHAINS, MAX_TRACE, MAX_STEPS = 10_000, 10**8, 10**9
"""Bounds ``SGLDConfig.validate`` puts on chains, chains × draws (the traces kept in memory) and
steps, so a typo is an error rather than an out-of-memory crash or a run that never ends."""


@dataclass(frozen=True)
class SGLDConfig:
    """Hyper-parameters of the SGLD estimator and its diagnostics."""

    epsilon: float | str = "auto"
    """Step size ε, or ``"auto"`` to pick it by ``choose_epsilon``."""
    nbeta: float | None = None
    """Inverse temperature nβ; ``None`` means n / log n with n the number of data rows."""
    localization: float = 5.0
    """γ, the pull back to w*. Keep it small against nβ × the loss curvature (it shrinks the
    estimate by about γ / (nβ h) in a direction of curvature h) but positive, so chains stay near w*
    along flat directions. 5 rather than the former 10: at 10 it lowered λ̂ of deep singular networks
    by 5–25 % (module docstring); the localization-check chains say when it still shapes λ̂."""
    num_chains: int = 8
    """Number of chains (run together as one batched step)."""
    num_draws: int = 2000
    """Draws per chain after burn-in (every step after burn-in is a draw)."""
    num_burnin: int | None = None
    """SGLD steps per chain before the first draw; ``None``: ``auto_burnin``, a few relaxation times
    of the localization at the chosen ε (module docstring)."""
    batch_size: int | None = 500
    """Minibatch size m; ``None`` (or ≥ n) uses all n rows at every step."""
    seed: int = 0
    """Seed (≥ 0) of every random stream; chain c's streams depend only on (seed, c)."""
    divergence_factor: float = 10.0
    """A chain diverged when L_m − L_n(w*) exceeds this × max(d/(2nβ), |L_n(w*)|)."""
    acceptance_every: int = 10
    """Compute the MALA acceptance at every this-many-th draw (each costs one extra gradient)."""
    min_acceptance: float = 0.75
    """Lower end of the healthy range of the mean MALA acceptance (module docstring)."""
    max_acceptance: float = 1.0
    """Upper end of the healthy range of the mean MALA acceptance."""
    max_step_curvature: float = 0.25
    """Cap on ε·κ_max for ``epsilon="auto"``, κ_max the top curvature of U at w* (module docstring):
    SGLD inflates the variance along a direction of curvature κ by ≈ εκ/4, so 0.25 bounds that
    bias by ≈ 6 % even along the stiffest direction."""
    flag_step_curvature: float = 0.5
    """A run whose ε·κ_max exceeds this (≈ 14 % variance bias along the stiffest direction) is flagged."""
    min_displacement: float = 0.01
    """A healthy chain whose final RMS distance from w* is below this fraction of the scale of w*
    never moved (module docstring): flagged."""
    min_draws: int = 100
    """Fewer draws per chain than this are flagged: the per-chain standard error comes from 10
    blocks of consecutive draws, which need about ten draws each."""
    target_acceptance: float = 0.95
    """The sweep acceptance ``epsilon="auto"`` aims for. Higher than the usual ≈ 0.9 (REFERENCE §4)
    because the sweep's chains are young: at deep singular points acceptance falls as chains
    spread, and the long runs it picks settle at 0.87–0.96 (module docstring)."""
    auto_epsilons: tuple[float, ...] = tuple(float(f"{10 ** (k / 2):.3g}") for k in range(-16, -1))
    """Candidate step sizes for ``epsilon="auto"``: the half-decade log grid 1e-8, 3.16e-8, …, 0.316."""
    auto_steps: int = 400
    """SGLD steps of each candidate chain in the ``epsilon="auto"`` sweep."""
    burnin_relaxations: float = 2.0
    """``num_burnin=None`` burns in for this many relaxation times 1/(εγ) of the localization."""
    min_burnin: int = 1000
    """Fewest burn-in steps ``num_burnin=None`` runs."""
    max_burnin: int = 8000
    """Most burn-in steps ``num_burnin=None`` runs per phase (bounds the cost at small εγ)."""
    retune_acceptance: float = 0.9
    """With ``epsilon="auto"``, a burn-in phase whose chains' mean MALA acceptance (second half of the
    phase) is below this lowers ε towards ``target_acceptance`` and burns in again (module docstring)."""
    max_retunes: int = 2
    """Most extra burn-in phases those retunes may add."""
    check_localization_chains: int = 4
    """Extra chains per factor of ``check_localization_factors``, at localization γ × that factor, run
    in the same batch (same ε, own streams) but not part of λ̂: they measure how much γ shapes the
    estimate (module docstring). 0 turns the check off."""
    check_localization_factors: tuple[float, ...] = (0.5, 2.0)
    """The check chains' γ relative to ``localization`` (each positive, not 1): one on each side of
    γ, since λ̂(γ) bends on some networks below γ and on others above it (module docstring). The
    burn-in follows the slowest relaxation, that of the smallest γ."""
    max_localization_shift: float = 0.12
    """Flag when extrapolating λ̂ linearly in γ from the main and check chains to γ → 0 would raise
    it by more than this fraction (module docstring)."""
    max_drift_t: float = 4.0
    """The run is flagged as not stationary when the chains' mean drift (last quarter of draws against
    the third) exceeds this many standard errors across chains (module docstring)."""
    max_drift_z: float = 4.0
    """Of a flagged run, the warning names the chains whose own drift exceeds this many batch-means
    standard errors (all chains when none does)."""
    progress: Callable[[int, int], None] | None = None
    """Called as (SGLD steps done, steps in all) about a hundred times a run; None: silent. The
    library draws nothing itself: the command line turns this into its progress bar."""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad field."""
        _require(self.progress is None or callable(self.progress),
                 f"progress must be None or a callable (done, total), got {self.progress!r}")
        if isinstance(self.epsilon, str):
            _require(self.epsilon == "auto", f"epsilon must be a positive number or 'auto', got {self.epsilon!r}")
        else:
            _require(_is_positive(self.epsilon), f"epsilon must be a positive number or 'auto', got {self.epsilon!r}")
        _require(self.nbeta is None or _is_positive(self.nbeta), f"nbeta must be positive or None, got {self.nbeta!r}")
        _require(_is_number(self.localization) and self.localization >= 0,
                 f"localization (gamma) must be a number >= 0, got {self.localization!r}")
        for name in ("num_chains", "num_draws", "acceptance_every", "auto_steps"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 1, f"{name} must be a positive integer, got {value!r}")
        _require(self.auto_steps >= 4, f"auto_steps must be at least 4, got {self.auto_steps!r}")
        _require(self.num_chains <= MAX_CHAINS, f"num_chains must be at most {MAX_CHAINS}, got {self.num_chains!r}")
        _require(self.num_chains * self.num_draws <= MAX_TRACE,
                 f"num_chains × num_draws must be at most {MAX_TRACE:,} (the loss traces are kept), got "
                 f"{self.num_chains} × {self.num_draws}")
        _require(self.auto_steps <= MAX_STEPS, f"auto_steps must be at most {MAX_STEPS:,}, got {self.auto_steps!r}")
        _require(self.num_burnin is None or (_is_int(self.num_burnin) and 0 <= self.num_burnin <= MAX_STEPS),
                 f"num_burnin must be None or an integer from 0 to {MAX_STEPS:,}, got {self.num_burnin!r}")
        _require(_is_positive(self.burnin_relaxations),
                 f"burnin_relaxations must be a positive number, got {self.burnin_relaxations!r}")
        _require(_is_int(self.min_burnin) and _is_int(self.max_burnin) and 0 <= self.min_burnin <= self.max_burnin
                 <= MAX_STEPS, f"need integers 0 <= min_burnin <= max_burnin <= {MAX_STEPS:,}, got "
                 f"{self.min_burnin!r}, {self.max_burnin!r}")
        _require(_is_number(self.retune_acceptance) and 0 <= self.retune_acceptance <= self.target_acceptance,
                 f"retune_acceptance must lie in [0, target_acceptance], got {self.retune_acceptance!r}")
        _require(_is_int(self.max_retunes) and 0 <= self.max_retunes <= 10,
                 f"max_retunes must be an integer from 0 to 10, got {self.max_retunes!r}")
        _require(_is_positive(self.max_drift_z), f"max_drift_z must be a positive number, got {self.max_drift_z!r}")
        _require(_is_positive(self.max_drift_t), f"max_drift_t must be a positive number, got {self.max_drift_t!r}")
        _require(_is_int(self.check_localization_chains) and 0 <= self.check_localization_chains <= MAX_CHAINS,
                 f"check_localization_chains must be an integer from 0 to {MAX_CHAINS}, got "
                 f"{self.check_localization_chains!r}")
        factors = self.check_localization_factors
        _require(isinstance(factors, tuple) and 1 <= len(factors) <= 4
                 and all(_is_positive(f) and f != 1 for f in factors),
                 f"check_localization_factors must be a tuple of 1 to 4 positive numbers other than 1, got "
                 f"{factors!r}")
        _require(self.num_chains + len(factors) * self.check_localization_chains <= MAX_CHAINS,
                 f"num_chains + check chains must be at most {MAX_CHAINS}")
        _require(_is_positive(self.max_localization_shift),
                 f"max_localization_shift must be a positive number, got {self.max_localization_shift!r}")
        _require(self.batch_size is None or (_is_int(self.batch_size) and self.batch_size >= 1),
                 f"batch_size must be a positive integer or None, got {self.batch_size!r}")
        _require(_is_int(self.seed) and 0 <= self.seed <= MAX_SEED,
                 f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        _require(_is_number(self.min_displacement) and 0 <= self.min_displacement < 1,
                 f"min_displacement must lie in [0, 1), got {self.min_displacement!r}")
        _require(_is_int(self.min_draws) and self.min_draws >= 0,
                 f"min_draws must be an integer >= 0, got {self.min_draws!r}")
        _require(_is_positive(self.divergence_factor),
                 f"divergence_factor must be a positive number, got {self.divergence_factor!r}")
        _require(_is_number(self.min_acceptance) and _is_number(self.max_acceptance)
                 and 0 <= self.min_acceptance < self.max_acceptance <= 1,
                 f"need 0 <= min_acceptance < max_acceptance <= 1, got {self.min_acceptance!r}, {self.max_acceptance!r}")
        _require(_is_positive(self.max_step_curvature) and self.max_step_curvature < 4,
                 f"max_step_curvature must lie in (0, 4) (SGLD is unstable at eps*kappa >= 4), got {self.max_step_curvature!r}")
        _require(_is_positive(self.flag_step_curvature),
                 f"flag_step_curvature must be a positive number, got {self.flag_step_curvature!r}")
        _require(_is_number(self.target_acceptance) and 0 < self.target_acceptance < 1,
                 f"target_acceptance must lie in (0, 1), got {self.target_acceptance!r}")
        _require(isinstance(self.auto_epsilons, tuple) and len(self.auto_epsilons) >= 1
                 and all(_is_positive(e) for e in self.auto_epsilons)
                 and list(self.auto_epsilons) == sorted(set(self.auto_epsilons)),
                 f"auto_epsilons must be a non-empty increasing tuple of positive numbers, got {self.auto_epsilons!r}")


def _scale_of(w0: torch.Tensor, localization: float) -> float:
    """The scale against which a chain's displacement is judged: the RMS coordinate of w*, or
    when w* is 0 the localisation width 1/√γ (1 without localisation)."""
    rms = float(w0.double().pow(2).mean().sqrt())
    if rms > 0:
        return rms
    return 1 / math.sqrt(localization) if localization > 0 else 1.0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class LLCDiagnostics:
    """What tells a user whether to trust λ̂ (rules in the module docstring)."""

    diverged: tuple[int, ...]
    """Chains that diverged (NaN/inf or blow-up); excluded from the estimate."""
    below_start: tuple[int, ...]
    """Healthy chains whose loss lies significantly below L_n(w*): w* is not a local minimum."""
    acceptance: tuple[float, ...]
    """Mean MALA acceptance per chain (NaN for diverged chains)."""
    acceptance_mean: float
    """Mean acceptance over healthy chains (NaN if none is healthy or none was measured)."""
    acceptance_ok: bool
    """Whether ``acceptance_mean`` lies in [min_acceptance, max_acceptance]."""
    top_curvature: float
    """κ_max: the largest |eigenvalue| of ∇²U at w* (U = nβ L_B + γ/2 ‖w − w*‖², one minibatch B)."""
    step_curvature: float
    """ε · κ_max; flagged above ``flag_step_curvature``."""
    warnings: tuple[str, ...]
    """One readable line per problem found; empty when every check passed."""
    nonstationary: tuple[int, ...] = ()
    """Healthy chains whose last quarter of draws drifted from the third (``drift_z`` beyond
    ``max_drift_z``): λ̂ may be biased beyond its standard error."""
    drift: tuple[float, ...] = ()
    """Per chain, nβ × (mean excess loss of the last quarter of draws − that of the third): the drift
    in λ units (NaN for diverged chains or fewer than 8 draws)."""
    drift_z: tuple[float, ...] = ()
    """Per chain, ``drift`` over its batch-means standard error."""
    check_llcs: tuple[float, ...] = ()
    """λ̂ of the localization-check chains, per factor of ``check_localization_factors``."""
    check_llc: float = math.nan
    """Of ``check_llcs``, the one whose extrapolation moves λ̂ most; NaN without check chains."""
    localization_shift: float = math.nan
    """(λ̂ − ``check_llc``) / ((f − 1) λ̂) for that factor f: the relative change of λ̂ when
    extrapolated linearly in γ from γ and f·γ to γ → 0 (positive: λ̂ rises as γ weakens), the
    largest in size over the factors; flagged above ``max_localization_shift``."""

    @property
    def ok(self) -> bool:
        """True when no check raised a warning."""
        return not self.warnings


@dataclass(frozen=True)
class BurninPhase:
    """One phase of the burn-in: its step size, its length and the chains' mean MALA acceptance
    over its second half (NaN when not measured: a fixed ε, or the last phase allowed)."""

    epsilon: float
    steps: int
    acceptance: float


@dataclass(frozen=True)
class EpsilonSweep:
    """The short runs behind ``epsilon="auto"``: one chain per candidate ε."""

    epsilons: tuple[float, ...]
    acceptance: tuple[float, ...]
    """Mean MALA acceptance of each candidate over the second half of its steps (0 if it diverged)."""
    llc: tuple[float, ...]
    """λ̂ of each candidate over the second half of its steps (NaN if it diverged); for reading only."""
    acceptance_epsilon: float
    """Where the acceptance crosses the target (interpolated)."""
    curvature_epsilon: float
    """``max_step_curvature`` / κ_max."""
    chosen: float
    """The ε picked: the smaller of the two."""
    note: str
    """Empty, or why the rule fell back to an end of the grid."""


@dataclass(frozen=True, eq=False)
class LLCResult:
    """λ̂ with its spread, the loss traces behind it and the diagnostics."""

    llc_mean: float
    """Mean of the per-chain estimates over healthy chains (NaN if none is healthy)."""
    llc_stderr: float
    """Standard error of ``llc_mean``: std over healthy chains / √(their number); NaN with < 2."""
    llc_std: float
    """Standard deviation (ddof = 1) of the healthy chains' estimates; NaN with < 2."""
    llc_per_chain: np.ndarray
    """λ̂ of every chain, shape (chains,); NaN for diverged chains."""
    llc_stderr_per_chain: np.ndarray
    """Standard error of each chain's λ̂ from 10 consecutive blocks of its draws (batch means, so
    autocorrelation within the chain is accounted for), shape (chains,); NaN for diverged chains."""
    loss_traces: np.ndarray
    """Minibatch loss L_m(w_t) at every draw, shape (chains, draws)."""
    init_loss: float
    """L_n(w*), the full-data loss at the given parameters."""
    nbeta: float
    epsilon: float
    localization: float
    n: int
    """Number of data rows."""
    num_params: int
    """d, the number of scalar parameters sampled."""
    diagnostics: LLCDiagnostics
    sweep: EpsilonSweep | None
    """The ε sweep when ``epsilon="auto"`` was used, else None."""
    seconds: float
    """Wall time of the whole estimate (sweep included)."""
    burnin: tuple[BurninPhase, ...] = ()
    """The burn-in's phases (one unless ``epsilon="auto"`` retuned ε); ``epsilon`` is the last one's."""
    llc_systematic: float = math.nan
    """|λ̂ − λ̂ of the localization-check chains| / |f − 1|: the size of the correction to γ → 0 that
    linear extrapolation from γ and f·γ would make, a systematic uncertainty the standard error does
    not contain (module docstring); NaN without check chains."""

    @property
    def llc_uncertainty(self) -> float:
        """√(``llc_stderr``² + ``llc_systematic``²): the ± to compare λ̂ against a number with; NaN when
        either part is unknown (no check chains: how much γ shapes λ̂ was not measured)."""
        return math.hypot(self.llc_stderr, self.llc_systematic)

    def to_dict(self, traces: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (NaN stays NaN); loss traces only when ``traces``."""
        out = {
            "llc_mean": self.llc_mean,
            "llc_stderr": self.llc_stderr,
            "llc_std": self.llc_std,
            "llc_systematic": self.llc_systematic,
            "llc_uncertainty": self.llc_uncertainty,
            "llc_per_chain": self.llc_per_chain.tolist(),
            "llc_stderr_per_chain": self.llc_stderr_per_chain.tolist(),
            "init_loss": self.init_loss,
            "nbeta": self.nbeta,
            "epsilon": self.epsilon,
            "localization": self.localization,
            "n": self.n,
            "num_params": self.num_params,
            "diagnostics": asdict(self.diagnostics),
            "sweep": asdict(self.sweep) if self.sweep is not None else None,
            "burnin": [asdict(phase) for phase in self.burnin],
            "seconds": self.seconds,
        }
        if traces:
            out["loss_traces"] = self.loss_traces.tolist()
        return out


def default_nbeta(n: int) -> float:
    """nβ = n / log n, the default inverse temperature (Watanabe's WBIC temperature)."""
    if not _is_int(n) or n < 2:
        raise ConfigError(f"the default nbeta = n / log n needs n >= 2 data rows, got n = {n!r}")
    return n / math.log(n)


def squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the squared error summed over every other dimension: (1/m) Σ_i ‖ŷ_i − y_i‖².

    The ``"mse"`` loss of ``estimate_llc_for_module`` (2 × the unit-variance Gaussian negative
    log-likelihood up to a constant). Its scale sets SGLD's effective temperature, not λ.
    """
    return ((prediction - target) ** 2).reshape(prediction.shape[0], -1).sum(1).mean()


def model_outputs(output: torch.Tensor, loss: str) -> torch.Tensor:
    """The part of a module's output that the named loss reads: for ``"cross_entropy"``, logits of
    shape (batch, positions, classes) are read at the last position (the grokking transformer's
    answer token); otherwise the whole output."""
    return output[:, -1] if loss == "cross_entropy" and output.dim() == 3 else output


MODULE_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "mse": squared_error,
}
"""Losses by name for module-level analyses: ``MODULE_LOSSES[name](model_outputs(module(x), name), y)``,
a mean over rows (cross-entropy takes class-index targets)."""


class _Problem:
    """A loss function over flat parameter vectors and a data set, prepared for batched SGLD."""

    def __init__(self, loss_fn: LossFn, params: Any, data: Any):
        leaves, self.spec = tree_flatten(params)
        if not leaves or not all(isinstance(p, torch.Tensor) and p.is_floating_point() for p in leaves):
            raise LensTypeError(
                "params must be a non-empty pytree (tuple/list/dict) of floating-point tensors, got leaves "
                f"{[type(p).__name__ for p in leaves]!r}"
            )
        dtypes = {p.dtype for p in leaves}
        if len(dtypes) != 1:
            raise LensTypeError(f"all parameter tensors must share one dtype, got {sorted(map(str, dtypes))}")
        self.shapes = [p.shape for p in leaves]
        self.sizes = [p.numel() for p in leaves]
        self.w0 = torch.cat([p.detach().reshape(-1) for p in leaves])
        self.dim = self.w0.numel()

        data_leaves = tree_flatten(data)[0]
        if not data_leaves or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in data_leaves):
            raise LensTypeError("data must be a tensor or a pytree of tensors with a leading row dimension")
        rows = {t.shape[0] for t in data_leaves}
        if len(rows) != 1:
            raise LensTypeError(f"every data tensor must have the same number of rows, got {sorted(rows)}")
        self.data, self.n = data, rows.pop()
        self.loss_fn = loss_fn
        if callable(getattr(loss_fn, "chains_grad_and_value", None)):
            self.grad_and_loss = self.grad_and_loss_full = self._chains_grad_and_loss
        else:
            self.grad_and_loss = vmap(grad_and_value(self._flat_loss), in_dims=(0, 0))
            self.grad_and_loss_full = vmap(grad_and_value(self._flat_loss), in_dims=(0, None))

    def unflatten(self, w: torch.Tensor) -> Any:
        """The params pytree whose leaves are views into the flat vector ``w`` (d,), or, for stacked
        vectors (C, d), leaves with that leading dimension."""
        parts = torch.split(w, self.sizes, dim=-1)
        lead = w.shape[:-1]
        return tree_unflatten([part.view(*lead, *shape) for part, shape in zip(parts, self.shapes)], self.spec)

    def _flat_loss(self, w: torch.Tensor, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.unflatten(w), batch)

    def _chains_grad_and_loss(self, w: torch.Tensor, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradients (C, d), losses (C,)) for stacked flat parameters w (C, d), by the loss
        function's own ``chains_grad_and_value`` (``LossFn``)."""
        grads, losses = self.loss_fn.chains_grad_and_value(self.unflatten(w), batch)
        return torch.cat([g.reshape(w.shape[0], -1) for g in tree_flatten(grads)[0]], dim=1), losses

    def full_loss(self, chunk: int) -> float:
        """L_n(w*): the row-weighted mean of ``loss_fn`` over chunks of ``chunk`` rows."""
        params = self.unflatten(self.w0)
        total = 0.0
        with torch.no_grad():
            for start in range(0, self.n, chunk):
                batch = tree_map(lambda t: t[start : start + chunk], self.data)
                total += float(self.loss_fn(params, batch)) * min(chunk, self.n - start)
        return total / self.n


class _Streams:
    """Per-chain random streams: Gaussian noise and minibatch indices, pre-drawn in blocks.

    Chain c draws from two generators seeded by ``SeedSequence([seed, stream]).spawn(...)[c]``, in
    blocks whose size depends only on d, so its numbers are the same whether it runs alone or with
    others.
    """

    def __init__(self, seed: int, stream: int, chains: int, dim: int, n: int, batch: int | None, dtype: torch.dtype):
        self.dim, self.n, self.batch, self.dtype = dim, n, batch, dtype
        self.block = max(1, min(256, (1 << 20) // dim))
        self.generators = []
        for child in np.random.SeedSequence([seed, stream]).spawn(chains):
            noise_seed, data_seed = (int(s) for s in child.generate_state(2))
            self.generators.append(
                (torch.Generator().manual_seed(noise_seed), torch.Generator().manual_seed(data_seed))
            )
        self.pools = [torch.empty(0, dtype=torch.int64) for _ in range(chains)]
        self.noise = self.indices = None
        self.pos = self.block

    def _refill(self) -> None:
        self.noise = torch.stack(
            [torch.randn(self.block, self.dim, generator=g, dtype=self.dtype) for g, _ in self.generators], dim=1
        )
        if self.batch is not None:
            need, blocks = self.block * self.batch, []
            for c, (_, g) in enumerate(self.generators):
                pool = self.pools[c]
                while pool.numel() < need:
                    pool = torch.cat([pool, torch.randperm(self.n, generator=g)])
                blocks.append(pool[:need].view(self.block, self.batch))
                self.pools[c] = pool[need:]
            self.indices = torch.stack(blocks, dim=1)
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(noise (chains, d), minibatch row indices (chains, m), or None for full batches)."""
        if self.pos == self.block:
            self._refill()
        i, self.pos = self.pos, self.pos + 1
        return self.noise[i], (self.indices[i] if self.indices is not None else None)


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` for a (chains, m) index, by ``index_select`` (several times faster than fancy indexing)."""
    return t.index_select(0, idx.reshape(-1)).view(*idx.shape, *t.shape[1:])


@dataclass(frozen=True)
class _ChainRun:
    losses: np.ndarray
    """(chains, draws) minibatch losses at the draws."""
    acceptance: np.ndarray
    """(chains, checks) MALA acceptance probabilities."""
    displacement: np.ndarray
    """(chains,) root-mean-square distance per coordinate from w* at the last step."""


class _Chains:
    """Chains started at w* and run together, chain c with step size ``epsilon[c]`` and localization
    ``gamma[c]`` (a number: the same for all). Their positions
    and random streams persist from one ``run`` to the next, so a burn-in in phases (and the draws
    after it) continue exactly where the last call stopped."""

    def __init__(
        self, problem: _Problem, epsilon: torch.Tensor, nbeta: float, gamma: float | torch.Tensor,
        batch_size: int | None,
        seed: int, stream: int,
    ):
        chains = epsilon.numel()
        self.full = batch_size is None or batch_size >= problem.n
        self.streams = _Streams(seed, stream, chains, problem.dim, problem.n, None if self.full else batch_size,
                                problem.w0.dtype)
        self.grad_and_loss = problem.grad_and_loss_full if self.full else problem.grad_and_loss
        self.problem, self.nbeta = problem, nbeta
        self.gamma = torch.as_tensor(gamma, dtype=problem.w0.dtype).expand(chains).clone()
        self.gamma_col = self.gamma.unsqueeze(1)
        self.w0 = problem.w0
        self.w = self.w0.expand(chains, -1).clone()
        self.set_epsilon(epsilon)

    def set_epsilon(self, epsilon: torch.Tensor) -> None:
        self.eps = epsilon.to(self.w0.dtype)
        self.half_eps, self.root_eps = (self.eps / 2).unsqueeze(1), self.eps.sqrt().unsqueeze(1)

    def _grad_u(self, w: torch.Tensor, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """∇U(w) = nβ ∇L_B(w) + γ (w − w*) for every chain, and L_B(w)."""
        g, loss = self.grad_and_loss(w, batch)
        return g.mul_(self.nbeta).add_(self.gamma_col * (w - self.w0)), loss

    def run(self, steps: int, acceptance_every: int, tick: Callable[[], None]) -> _ChainRun:
        """``steps`` SGLD steps; the loss before every step, and the MALA acceptance at every
        ``acceptance_every``-th step (none when 0)."""
        chains = self.w.shape[0]
        losses = torch.empty(chains, steps, dtype=self.w0.dtype)
        checks = torch.empty(chains, steps // acceptance_every if acceptance_every else 0, dtype=self.w0.dtype)
        w, w0, nbeta, gamma, eps = self.w, self.w0, self.nbeta, self.gamma, self.eps
        for step in range(steps):
            noise, idx = self.streams.next()
            batch = self.problem.data if self.full else tree_map(lambda t: _rows(t, idx), self.problem.data)
            g, loss = self._grad_u(w, batch)
            w_new = w - self.half_eps * g + self.root_eps * noise
            losses[:, step] = loss
            if acceptance_every and (step + 1) % acceptance_every == 0:
                g_new, loss_new = self._grad_u(w_new, batch)
                log_alpha = (
                    nbeta * (loss - loss_new)
                    + 0.5 * gamma * (((w - w0) ** 2).sum(1) - ((w_new - w0) ** 2).sum(1))
                    - ((w - w_new + self.half_eps * g_new) ** 2).sum(1) / (2 * eps)
                    + 0.5 * (noise**2).sum(1)
                )
                checks[:, (step + 1) // acceptance_every - 1] = log_alpha.clamp(max=0).exp()
            w = w_new
            tick()
        self.w = w
        displacement = (w - w0).double().pow(2).mean(1).sqrt()
        return _ChainRun(losses.double().numpy(), checks.double().numpy(), displacement.numpy())


def _diverged(losses: np.ndarray, init_loss: float, nbeta: float, dim: int, factor: float) -> np.ndarray:
    """Per chain: a non-finite loss, or a rise above L_n(w*) beyond the blow-up threshold."""
    threshold = factor * max(dim / (2 * nbeta), abs(init_loss))
    finite = np.isfinite(losses).all(axis=1)
    rise = np.where(np.isfinite(losses), losses - init_loss, np.inf).max(axis=1, initial=-np.inf)
    return ~finite | (rise > threshold)


def _batch_means_stderr(trace: np.ndarray) -> float:
    """Standard error of the mean of a chain's trace from 10 blocks of consecutive draws (inf with < 2 draws)."""
    blocks = min(10, trace.size)
    if blocks < 2:
        return math.inf
    means = np.array([part.mean() for part in np.array_split(trace, blocks)])
    return float(means.std(ddof=1) / math.sqrt(blocks))


def _below_start(excess: np.ndarray) -> bool:
    """Mean excess below −3 batch-means standard errors."""
    return bool(excess.mean() < 0 and excess.mean() < -3 * _batch_means_stderr(excess))


def _localization_check(
    run: _ChainRun, problem: _Problem, nbeta: float, init_loss: float, config: SGLDConfig
) -> list[tuple[float, float, bool]]:
    """Per factor f of ``check_localization_factors``: (λ̂ of its healthy check chains at f·γ, the
    relative correction (λ̂ − that) / ((f − 1) λ̂) that extrapolating λ̂ linearly in γ from γ and f·γ
    to γ → 0 would make, whether the two λ̂ differ by more than 2 combined standard errors (std over
    chains / √chains each)); (NaN, NaN, False) with fewer than 2 healthy chains on either side or
    λ̂ ≤ 0, and an empty list without check chains."""
    if config.check_localization_chains == 0:
        return []
    diverged = _diverged(run.losses, init_loss, nbeta, problem.dim, config.divergence_factor)
    per_chain = nbeta * (run.losses.mean(axis=1) - init_loss)
    ours = per_chain[: config.num_chains][~diverged[: config.num_chains]]
    checks = []
    for k, factor in enumerate(config.check_localization_factors):
        group = slice(config.num_chains + k * config.check_localization_chains,
                      config.num_chains + (k + 1) * config.check_localization_chains)
        theirs = per_chain[group][~diverged[group]]
        if ours.size < 2 or theirs.size < 2 or ours.mean() <= 0:
            checks.append((math.nan, math.nan, False))
            continue
        main_llc, check_llc = float(ours.mean()), float(theirs.mean())
        se = math.hypot(ours.std(ddof=1) / math.sqrt(ours.size), theirs.std(ddof=1) / math.sqrt(theirs.size))
        correction = (main_llc - check_llc) / ((factor - 1) * main_llc)
        checks.append((check_llc, correction, abs(main_llc - check_llc) > 2 * se))
    return checks


def _drift(excess: np.ndarray) -> tuple[float, float]:
    """(mean of the last quarter of draws − mean of the third quarter, that difference over
    √(se₃² + se₄²), each quarter's standard error by batch means); (nan, nan) with fewer than 8 draws."""
    quarter = excess.size // 4
    if quarter < 2:
        return math.nan, math.nan
    third, last = excess[-2 * quarter : -quarter], excess[-quarter:]
    diff = float(last.mean() - third.mean())
    se = math.hypot(_batch_means_stderr(third), _batch_means_stderr(last))
    return diff, (diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff)))


def _pooled_drift(drift: np.ndarray) -> float:
    """The chains' mean drift over its standard error across chains (independent, so autocorrelation
    within a chain cannot fake significance); NaN with fewer than 2 chains."""
    drift = drift[np.isfinite(drift)]
    if drift.size < 2:
        return math.nan
    se = float(drift.std(ddof=1)) / math.sqrt(drift.size)
    mean = float(drift.mean())
    return mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))


def _choose(epsilons: tuple[float, ...], acceptance: np.ndarray, target: float) -> tuple[float, str]:
    """The auto-ε rule (module docstring) on a sweep's acceptances."""
    below = np.flatnonzero(acceptance < target)
    if below.size == 0:
        return epsilons[-1], f"every candidate up to {epsilons[-1]:.3g} kept acceptance >= {target}; took the largest"
    k = int(below[0])
    if k == 0:
        return epsilons[0], f"even the smallest candidate {epsilons[0]:.3g} had acceptance < {target}; took it"
    hi, lo = acceptance[k - 1], acceptance[k]
    t = (hi - target) / (hi - lo)
    return float(epsilons[k - 1] * (epsilons[k] / epsilons[k - 1]) ** t), ""


def _sweep(
    problem: _Problem, config: SGLDConfig, nbeta: float, init_loss: float, kappa: float, tick: Callable[[], None]
) -> EpsilonSweep:
    epsilons = config.auto_epsilons
    burnin = config.auto_steps // 2
    chains = _Chains(problem, torch.tensor(epsilons, dtype=torch.float64), nbeta, config.localization,
                     config.batch_size, config.seed, _SWEEP_STREAM)
    chains.run(burnin, 0, tick)
    run = chains.run(config.auto_steps - burnin, 2, tick)
    diverged = _diverged(run.losses, init_loss, nbeta, problem.dim, config.divergence_factor)
    acceptance = np.where(diverged, 0.0, np.nan_to_num(run.acceptance.mean(axis=1), nan=0.0))
    llc = np.where(diverged, np.nan, nbeta * (run.losses.mean(axis=1) - init_loss))
    by_acceptance, note = _choose(epsilons, acceptance, config.target_acceptance)
    by_curvature = config.max_step_curvature / kappa
    return EpsilonSweep(
        tuple(epsilons), tuple(acceptance.tolist()), tuple(llc.tolist()), by_acceptance, by_curvature,
        min(by_acceptance, by_curvature), note,
    )


def _prepare(loss_fn: LossFn, params: Any, data: Any, config: SGLDConfig) -> tuple[_Problem, float, float, float]:
    """Validate, build the problem, and compute nβ, L_n(w*) and κ_max."""
    if not isinstance(config, SGLDConfig):
        raise ConfigError(f"config must be an SGLDConfig, got {type(config).__name__}")
    config.validate()
    problem = _Problem(loss_fn, params, data)
    nbeta = config.nbeta if config.nbeta is not None else default_nbeta(problem.n)
    init_loss = problem.full_loss(config.batch_size or problem.n)
    if not math.isfinite(init_loss):
        raise NonFiniteError(f"the loss at the given parameters is {init_loss}; the LLC needs a finite L_n(w*)")
    return problem, nbeta, init_loss, _top_curvature(problem, nbeta, config)


def _top_curvature(problem: _Problem, nbeta: float, config: SGLDConfig) -> float:
    """κ_max = nβ |μ_max(∇²L_B(w*))| + γ on one minibatch B (seeded by ``config.seed``), by Lanczos;
    a Hessian that is 0 (a deep linear network at w* = 0, where the loss starts at third or higher
    order) gives κ_max = γ rather than an ARPACK error. Eight Lanczos vectors (ARPACK's default is
    20) reach the same top eigenvalue to its 1e-3 tolerance in 10-14 Hessian-vector products instead
    of 22, which on the refined LLC's short chains was a third of each estimate's time."""
    rows = min(config.batch_size or problem.n, problem.n)
    pick = torch.randperm(problem.n, generator=torch.Generator().manual_seed(config.seed))[:rows]
    batch = tree_map(lambda t: t[pick], problem.data)
    operator = hvp_operator(lambda w: problem.loss_fn(problem.unflatten(w), batch), problem.w0)
    if problem.dim == 1:
        top = abs(float(operator.matvec(np.ones(1))[0]))
    else:
        start = np.random.default_rng(config.seed).standard_normal(problem.dim)
        if not np.any(operator.matvec(start)):  # Hessian 0 (e.g. a deep linear network at w* = 0): ARPACK fails
            top = 0.0
        else:
            top = float(np.abs(eigsh(operator, k=1, which="LM", tol=1e-3, ncv=8, v0=start, return_eigenvectors=False)).max())
    if not math.isfinite(top):
        raise NonFiniteError(f"the loss curvature at the given parameters is {top}")
    return nbeta * top + config.localization


def hvp_operator(fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor) -> LinearOperator:
    """The Hessian of a scalar function of a flat vector at ``w`` as a scipy ``LinearOperator`` (float64),
    each product by reverse-over-reverse differentiation (the gradient of ∇f · v). Forward mode
    would be cheaper but covers fewer operations and makes torch load JIT decompositions."""
    gradient = grad(fn)

    def matvec(v: np.ndarray) -> np.ndarray:
        tangent = torch.as_tensor(np.asarray(v).reshape(-1), dtype=w.dtype)
        return grad(lambda u: torch.dot(gradient(u), tangent))(w).detach().double().numpy()

    return LinearOperator((w.numel(), w.numel()), matvec=matvec, dtype=np.float64)


def choose_epsilon(loss_fn: LossFn, params: Any, data: Any, config: SGLDConfig = SGLDConfig()) -> EpsilonSweep:
    """Run the ``epsilon="auto"`` sweep alone (rule in the module docstring) and return it."""
    problem, nbeta, init_loss, kappa = _prepare(loss_fn, params, data, config)
    with _progress(config, config.auto_steps) as progress:
        return _sweep(problem, config, nbeta, init_loss, kappa, progress.tick)


def estimate_llc(loss_fn: LossFn, params: Any, data: Any, config: SGLDConfig = SGLDConfig()) -> LLCResult:
    """Estimate the local learning coefficient of ``loss_fn`` at ``params`` on ``data`` by batched SGLD.

    ``params`` is a pytree (tensor, tuple, list or dict) of floating-point tensors of one dtype,
    ``data`` a tensor or pytree of tensors sharing a leading row dimension n, and
    ``loss_fn(params, batch)`` the mean loss over the rows of ``batch`` (it must be traceable by
    ``torch.func``: no in-place updates of its inputs, no ``.item()``). Nothing is trained or
    modified. See the module docstring for the estimator, the diagnostics and ``epsilon="auto"``.
    """
    start = time.perf_counter()
    problem, nbeta, init_loss, kappa = _prepare(loss_fn, params, data, config)
    auto = config.epsilon == "auto"
    planned = (config.auto_steps if auto else 0) + (config.num_burnin or 0) + config.num_draws
    with _progress(config, planned) as progress:
        sweep = _sweep(problem, config, nbeta, init_loss, kappa, progress.tick) if auto else None
        epsilon = sweep.chosen if sweep is not None else float(config.epsilon)
        gamma = [config.localization] * config.num_chains
        for factor in config.check_localization_factors if config.check_localization_chains else ():
            gamma += [config.localization * factor] * config.check_localization_chains
        chains = _Chains(problem, torch.full((len(gamma),), epsilon, dtype=torch.float64), nbeta,
                         torch.tensor(gamma), config.batch_size, config.seed, _MAIN_STREAM)
        phases = _burn_in(chains, epsilon, auto, config, nbeta, init_loss, problem.dim, progress)
        run = chains.run(config.num_draws, config.acceptance_every, progress.tick)
    return _result(run, problem, nbeta, init_loss, kappa, phases, config, sweep, time.perf_counter() - start)


def auto_burnin(epsilon: float, config: SGLDConfig) -> int:
    """The burn-in ``num_burnin=None`` runs at step size ε (module docstring): ``burnin_relaxations``
    relaxation times 1/(εγ) of the weakest localization in the batch (the check chains' when
    smallest of ``check_localization_factors`` is below 1), within [``min_burnin``, ``max_burnin``]."""
    gamma = config.localization
    if config.check_localization_chains:
        gamma *= min(1.0, *config.check_localization_factors)
    if gamma <= 0:
        return config.max_burnin
    steps = math.ceil(config.burnin_relaxations / (epsilon * gamma))
    return int(min(config.max_burnin, max(config.min_burnin, steps)))


def _burn_in(
    chains: _Chains, epsilon: float, auto: bool, config: SGLDConfig, nbeta: float, init_loss: float, dim: int,
    progress: _Progress,
) -> tuple[BurninPhase, ...]:
    """Burn the chains in; with ``epsilon="auto"``, lower ε and burn in again while the chains'
    acceptance over the second half of a phase is below ``retune_acceptance`` (module docstring)."""
    phases = []
    for phase in range(1 + (config.max_retunes if auto else 0)):
        steps = config.num_burnin if config.num_burnin is not None else auto_burnin(epsilon, config)
        check = auto and phase < config.max_retunes
        progress.extend(steps - (config.num_burnin if phase == 0 and config.num_burnin is not None else 0))
        first = chains.run(steps // 2, 0, progress.tick)
        second = chains.run(steps - steps // 2, config.acceptance_every if check else 0, progress.tick)
        acceptance = math.nan
        if check and second.acceptance.size:
            main = config.num_chains  # the localization-check chains follow the main ones and do not steer ε
            losses = np.concatenate([first.losses[:main], second.losses[:main]], axis=1)
            healthy = ~_diverged(losses, init_loss, nbeta, dim, config.divergence_factor)
            acceptance = float(second.acceptance[:main][healthy].mean()) if healthy.any() else 0.0
        phases.append(BurninPhase(epsilon, steps, acceptance))
        if not check or not acceptance < config.retune_acceptance:
            break
        # MALA's rejection rate grows about as ε^(3/2): aim the next phase at target_acceptance
        epsilon *= ((1 - config.target_acceptance) / max(1 - acceptance, 1e-12)) ** (2 / 3)
        chains.set_epsilon(torch.full_like(chains.eps, epsilon, dtype=torch.float64))
    return tuple(phases)


def _result(
    run: _ChainRun, problem: _Problem, nbeta: float, init_loss: float, kappa: float,
    phases: tuple[BurninPhase, ...], config: SGLDConfig, sweep: EpsilonSweep | None, seconds: float,
) -> LLCResult:
    epsilon = phases[-1].epsilon
    checks = _localization_check(run, problem, nbeta, init_loss, config)
    check_llcs = tuple(c[0] for c in checks)
    check_llc, check_shift = math.nan, math.nan
    for value, shift, _ in checks:
        if math.isfinite(shift) and not abs(shift) <= abs(check_shift):  # the largest correction
            check_llc, check_shift = value, shift
    flagged = sorted(((shift, value, factor) for (value, shift, significant), factor
                      in zip(checks, config.check_localization_factors)
                      if significant and shift > config.max_localization_shift), reverse=True)
    main = config.num_chains
    run = _ChainRun(run.losses[:main], run.acceptance[:main], run.displacement[:main])
    diverged = _diverged(run.losses, init_loss, nbeta, problem.dim, config.divergence_factor)
    healthy = np.flatnonzero(~diverged)
    excess = run.losses - init_loss
    per_chain = np.where(diverged, np.nan, nbeta * excess.mean(axis=1))
    below = tuple(int(c) for c in healthy if _below_start(excess[c]))
    acceptance = np.where(diverged, np.nan, run.acceptance.mean(axis=1) if run.acceptance.size else np.nan)
    acc_mean = float(np.mean(acceptance[healthy])) if healthy.size and run.acceptance.size else math.nan
    acc_ok = math.isnan(acc_mean) or config.min_acceptance <= acc_mean <= config.max_acceptance
    drift = np.array([_drift(excess[c]) if not diverged[c] else (math.nan, math.nan) for c in range(diverged.size)])
    drift_llc, drift_z = nbeta * drift[:, 0], drift[:, 1]
    pooled = _pooled_drift(drift_llc[healthy])
    if abs(pooled) > config.max_drift_t:  # a drift shared by the chains: name those that show it alone
        named = [int(c) for c in healthy if drift_z[c] * pooled > 0 and abs(drift_z[c]) > config.max_drift_z]
        nonstationary = tuple(named) or tuple(int(c) for c in healthy)
    else:
        nonstationary = ()

    warnings = []
    if sweep is not None and sweep.note:
        warnings.append(f"epsilon='auto': {sweep.note}")
    if diverged.any():
        warnings.append(
            f"{int(diverged.sum())} of {diverged.size} chains diverged (chains {np.flatnonzero(diverged).tolist()}) "
            f"and were dropped; epsilon = {epsilon:.3g} may be too large"
        )
    if healthy.size == 0:
        warnings.append("no healthy chain is left: the estimate is NaN")
    if below:
        warnings.append(
            f"chains {list(below)} sit significantly below L_n(w*) = {init_loss:.6g}: the parameters are not a "
            "local minimum, so the LLC there is not meaningful"
        )
    if epsilon * kappa > config.flag_step_curvature:
        warnings.append(
            f"epsilon * kappa_max = {epsilon * kappa:.3g} exceeds {config.flag_step_curvature}: SGLD inflates the "
            f"spread along the stiffest direction by about {epsilon * kappa / 4:.0%}; use a smaller epsilon"
        )
    if healthy.size == 1:
        warnings.append("only one healthy chain: λ̂ has no standard error (shown as nan); run at least 2 chains")
    if config.num_draws < config.min_draws:
        warnings.append(f"only {config.num_draws} draws per chain (fewer than {config.min_draws}): λ̂ and its "
                        "per-chain standard errors are too noisy to trust; use more draws")
    scale = _scale_of(problem.w0, config.localization)
    stuck = tuple(int(c) for c in healthy if run.displacement[c] < config.min_displacement * scale)
    if stuck:
        warnings.append(
            f"chains {list(stuck)} barely moved (RMS distance from w* {float(run.displacement[list(stuck)].max()):.2g} "
            f"against a scale of {scale:.2g}): epsilon = {epsilon:.3g} is too small or the run too short, "
            "so the estimate says nothing about the LLC"
        )
    if nonstationary:
        warnings.append(
            f"the chains are not stationary: λ̂ over the last quarter of draws differs from the third quarter's by "
            f"{float(np.mean(drift_llc[healthy])):+.3g} on average over the chains ({pooled:+.1f} standard errors "
            f"across chains; chains {list(nonstationary)} show it beyond {config.max_drift_z:g} se alone), so λ̂ may be "
            "biased by more than its ± shows; run a longer burn-in (num_burnin)"
        )
    for shift, value, factor in flagged[:1]:
        warnings.append(
            f"λ̂ depends on the localization: {config.check_localization_chains} chains at γ = "
            f"{config.localization * factor:g} give {value:.4g}, and extrapolating λ̂ "
            f"at γ = {config.localization:g} from there to γ → 0 raises λ̂ by {shift:.0%} (more than "
            f"{config.max_localization_shift:.0%}): γ confines flat directions of this singular point, so λ̂ may be "
            "biased (usually low) by more than its standard error shows; read it with llc_uncertainty"
        )
    if not acc_ok:
        warnings.append(
            f"mean MALA acceptance {acc_mean:.3f} is outside [{config.min_acceptance}, {config.max_acceptance}]: "
            f"epsilon = {epsilon:.3g} is likely too large (the estimate is biased upwards)"
        )

    estimates = per_chain[healthy]
    std = float(estimates.std(ddof=1)) if healthy.size >= 2 else math.nan
    llc_mean = float(estimates.mean()) if healthy.size else math.nan
    return LLCResult(
        llc_mean=llc_mean,
        llc_stderr=std / math.sqrt(healthy.size) if healthy.size >= 2 else math.nan,
        llc_std=std,
        llc_per_chain=per_chain,
        llc_stderr_per_chain=np.array(
            [nbeta * _batch_means_stderr(excess[c]) if not diverged[c] else math.nan for c in range(diverged.size)]
        ),
        loss_traces=run.losses,
        init_loss=init_loss,
        nbeta=nbeta,
        epsilon=epsilon,
        localization=float(config.localization),
        n=problem.n,
        num_params=problem.dim,
        diagnostics=LLCDiagnostics(
            diverged=tuple(int(c) for c in np.flatnonzero(diverged)),
            below_start=below,
            acceptance=tuple(acceptance.tolist()),
            acceptance_mean=acc_mean,
            acceptance_ok=acc_ok,
            top_curvature=kappa,
            step_curvature=epsilon * kappa,
            warnings=tuple(warnings),
            nonstationary=nonstationary,
            check_llcs=check_llcs,
            check_llc=check_llc,
            localization_shift=check_shift,
            drift=tuple(drift_llc.tolist()),
            drift_z=tuple(drift_z.tolist()),
        ),
        sweep=sweep,
        seconds=seconds,
        burnin=phases,
        llc_systematic=abs(llc_mean * check_shift),  # NaN without check chains (module docstring)
    )


def estimate_llc_for_module(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str = "cross_entropy",
    config: SGLDConfig = SGLDConfig(),
) -> LLCResult:
    """λ̂ of an ``nn.Module`` at its current parameters on data (x, y); the module is not modified.

    ``loss`` names an entry of ``MODULE_LOSSES``: ``"cross_entropy"`` (class-index targets; see
    ``model_outputs`` for sequence outputs) or ``"mse"`` (``squared_error``). Every parameter with ``requires_grad`` is sampled;
    buffers are held fixed; the module runs in eval mode (no dropout, frozen batch-norm statistics).
    This is the entry point the run store calls at each checkpoint.
    """
    if loss not in MODULE_LOSSES:
        raise UnsupportedOptionError(f"loss must be one of {sorted(MODULE_LOSSES)}, got {loss!r}")
    if not isinstance(module, nn.Module):
        raise LensTypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, torch.Tensor):
            raise LensTypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    criterion = MODULE_LOSSES[loss]
    params = {name: p.detach() for name, p in module.named_parameters() if p.requires_grad}
    buffers = dict(module.named_buffers())

    def loss_fn(params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        return criterion(model_outputs(functional_call(module, (params, buffers), (inputs,)), loss), targets)

    was_training = module.training
    module.eval()
    try:
        return estimate_llc(loss_fn, params, (x, y), config)
    finally:
        module.train(was_training)


class _Progress:
    """Reports (done, total) to ``config.progress`` about a hundred times, and at the last step;
    ``extend`` adds steps to the total as they become known (the burn-in's phases)."""

    def __init__(self, report: Callable[[int, int], None] | None, total: int):
        self.report, self.total, self.done = report, total, 0

    def extend(self, steps: int) -> None:
        self.total += steps

    def tick(self) -> None:
        if self.report is None:
            return
        self.done += 1
        if self.done % max(1, self.total // 100) == 0 or self.done == self.total:
            self.report(self.done, self.total)


@contextlib.contextmanager
def _progress(config: SGLDConfig, total: int) -> Iterator[_Progress]:
    yield _Progress(config.progress, total)
