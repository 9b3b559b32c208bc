"""The local learning coefficient λ̂ by SGLD, with many chains run together (REFERENCE §4).

Estimator. From w* (the parameters given), each chain runs

    w ← w − (ε/2) [nβ ∇L_m(w) + γ (w − w*)] + √ε ξ,      ξ ~ N(0, I),

with L_m the mean loss on a minibatch of m rows drawn without replacement (a fresh permutation of
the n rows per epoch, per chain), nβ = n / log n by default and γ the localization. After
``num_burnin`` steps every step is a draw, and

    λ̂_chain = nβ (mean over draws of L_m(w_t) − L_n(w*)).

Which loss: at each draw we record the minibatch loss L_m(w_t) at the point *before* the update,
the same forward pass that gives the gradient (devinterp does the same), so a draw costs nothing
extra; L_m(w_t) is an unbiased estimate of L_n(w_t). L_n(w*) is the exact full-data loss (devinterp
averages a few minibatches instead). ``loss_fn(params, batch)`` must return the *mean* loss over the
rows of ``batch``; the full-data loss is the row-weighted mean over chunks of ``batch_size`` rows.

Chains are one batched computation: parameters are flattened into one vector per chain, stacked
into a (chains, d) tensor, and ``torch.func.vmap(torch.func.grad_and_value(...))`` evaluates every
chain's minibatch loss and gradient in one call. Each chain has its own random streams (noise and
minibatches) seeded from ``numpy.random.SeedSequence([seed, 0]).spawn``, so chain c's trace does
not depend on how many chains run beside it.

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
    "LLCResult",
    "LossFn",
    "estimate_llc",
    "estimate_llc_for_module",
    "choose_epsilon",
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
    localization: float = 10.0
    """γ, the pull back to w*. Keep it small against nβ × the loss curvature (it shrinks the
    estimate by about γ / (nβ h) in a direction of curvature h) but positive, so chains stay near w*
    along flat directions."""
    num_chains: int = 8
    """Number of chains (run together as one batched step)."""
    num_draws: int = 2000
    """Draws per chain after burn-in (every step after burn-in is a draw)."""
    num_burnin: int = 1000
    """SGLD steps per chain before the first draw."""
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
        _require(_is_int(self.num_burnin) and 0 <= self.num_burnin <= MAX_STEPS,
                 f"num_burnin must be an integer from 0 to {MAX_STEPS:,}, got {self.num_burnin!r}")
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

    @property
    def ok(self) -> bool:
        """True when no check raised a warning."""
        return not self.warnings


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

    def to_dict(self, traces: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (NaN stays NaN); loss traces only when ``traces``."""
        out = {
            "llc_mean": self.llc_mean,
            "llc_stderr": self.llc_stderr,
            "llc_std": self.llc_std,
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


def _sgld(
    problem: _Problem,
    epsilon: torch.Tensor,
    nbeta: float,
    gamma: float,
    batch_size: int | None,
    seed: int,
    stream: int,
    burnin: int,
    draws: int,
    acceptance_every: int,
    tick: Callable[[], None],
) -> _ChainRun:
    """Run ``len(epsilon)`` chains from w* together, chain c with step size ``epsilon[c]``."""
    chains = epsilon.numel()
    full = batch_size is None or batch_size >= problem.n
    streams = _Streams(seed, stream, chains, problem.dim, problem.n, None if full else batch_size, problem.w0.dtype)
    grad_and_loss = problem.grad_and_loss_full if full else problem.grad_and_loss
    w0 = problem.w0
    w = w0.expand(chains, -1).clone()
    eps = epsilon.to(w0.dtype)
    half_eps, root_eps = (eps / 2).unsqueeze(1), eps.sqrt().unsqueeze(1)
    losses = torch.empty(chains, draws, dtype=w0.dtype)
    checks = torch.empty(chains, draws // acceptance_every, dtype=w0.dtype)

    def grad_u(w: torch.Tensor, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """∇U(w) = nβ ∇L_B(w) + γ (w − w*) for every chain, and L_B(w)."""
        g, loss = grad_and_loss(w, batch)
        return g.mul_(nbeta).add_(w - w0, alpha=gamma), loss

    for step in range(burnin + draws):
        noise, idx = streams.next()
        batch = problem.data if full else tree_map(lambda t: _rows(t, idx), problem.data)
        g, loss = grad_u(w, batch)
        w_new = w - half_eps * g + root_eps * noise
        draw = step - burnin
        if draw >= 0:
            losses[:, draw] = loss
            if (draw + 1) % acceptance_every == 0:
                g_new, loss_new = grad_u(w_new, batch)
                log_alpha = (
                    nbeta * (loss - loss_new)
                    + 0.5 * gamma * (((w - w0) ** 2).sum(1) - ((w_new - w0) ** 2).sum(1))
                    - ((w - w_new + half_eps * g_new) ** 2).sum(1) / (2 * eps)
                    + 0.5 * (noise**2).sum(1)
                )
                checks[:, (draw + 1) // acceptance_every - 1] = log_alpha.clamp(max=0).exp()
        w = w_new
        tick()
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
    run = _sgld(
        problem, torch.tensor(epsilons, dtype=torch.float64), nbeta, config.localization, config.batch_size,
        config.seed, _SWEEP_STREAM, burnin, config.auto_steps - burnin, 2, tick,
    )
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
    """κ_max = nβ |μ_max(∇²L_B(w*))| + γ on one minibatch B (seeded by ``config.seed``), by Lanczos."""
    rows = min(config.batch_size or problem.n, problem.n)
    pick = torch.randperm(problem.n, generator=torch.Generator().manual_seed(config.seed))[:rows]
    batch = tree_map(lambda t: t[pick], problem.data)
    operator = hvp_operator(lambda w: problem.loss_fn(problem.unflatten(w), batch), problem.w0)
    if problem.dim == 1:
        top = abs(float(operator.matvec(np.ones(1))[0]))
    else:
        start = np.random.default_rng(config.seed).standard_normal(problem.dim)
        top = float(np.abs(eigsh(operator, k=1, which="LM", tol=1e-3, v0=start, return_eigenvectors=False)).max())
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
    with _progress(config, config.auto_steps) as tick:
        return _sweep(problem, config, nbeta, init_loss, kappa, tick)


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
    steps = config.num_burnin + config.num_draws
    auto = config.epsilon == "auto"
    with _progress(config, steps + (config.auto_steps if auto else 0)) as tick:
        sweep = _sweep(problem, config, nbeta, init_loss, kappa, tick) if auto else None
        epsilon = sweep.chosen if sweep is not None else float(config.epsilon)
        run = _sgld(
            problem, torch.full((config.num_chains,), epsilon, dtype=torch.float64), nbeta, config.localization,
            config.batch_size, config.seed, _MAIN_STREAM, config.num_burnin, config.num_draws,
            config.acceptance_every, tick,
        )
    return _result(run, problem, nbeta, init_loss, kappa, epsilon, config, sweep, time.perf_counter() - start)


def _result(
    run: _ChainRun, problem: _Problem, nbeta: float, init_loss: float, kappa: float, epsilon: float,
    config: SGLDConfig, sweep: EpsilonSweep | None, seconds: float,
) -> LLCResult:
    diverged = _diverged(run.losses, init_loss, nbeta, problem.dim, config.divergence_factor)
    healthy = np.flatnonzero(~diverged)
    excess = run.losses - init_loss
    per_chain = np.where(diverged, np.nan, nbeta * excess.mean(axis=1))
    below = tuple(int(c) for c in healthy if _below_start(excess[c]))
    acceptance = np.where(diverged, np.nan, run.acceptance.mean(axis=1) if run.acceptance.size else np.nan)
    acc_mean = float(np.mean(acceptance[healthy])) if healthy.size and run.acceptance.size else math.nan
    acc_ok = math.isnan(acc_mean) or config.min_acceptance <= acc_mean <= config.max_acceptance

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
    if not acc_ok:
        warnings.append(
            f"mean MALA acceptance {acc_mean:.3f} is outside [{config.min_acceptance}, {config.max_acceptance}]: "
            f"epsilon = {epsilon:.3g} is likely too large (the estimate is biased upwards)"
        )

    estimates = per_chain[healthy]
    std = float(estimates.std(ddof=1)) if healthy.size >= 2 else math.nan
    return LLCResult(
        llc_mean=float(estimates.mean()) if healthy.size else math.nan,
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
        ),
        sweep=sweep,
        seconds=seconds,
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


@contextlib.contextmanager
def _progress(config: SGLDConfig, total: int) -> Iterator[Callable[[], None]]:
    """Yield a per-step callback that reports (done, total) to ``config.progress`` about a hundred
    times, and at the last step; or does nothing."""
    report = config.progress
    if report is None:
        yield lambda: None
        return
    every, done = max(1, total // 100), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if done % every == 0 or done == total:
            report(done, total)

    yield tick
