"""The empirical neural tangent kernel Θ = J Jᵀ on a set of inputs, its spectrum, and how its top
eigenfunctions line up with a modular program.

J is the Jacobian of the flattened outputs f_w(x) ∈ R^{N·C} (N inputs, C outputs each) with respect
to all d parameters, so Θ is an (N·C) × (N·C) positive semi-definite matrix. Gradient descent with
step η moves the outputs by −η Θ ∇ℓ (``factorisation``): the top eigenvectors of Θ are the
directions in function space that training moves fastest.

Two methods (``ntk_spectrum``):

- **Lanczos**, matrix-free: ``NTKOperator`` applies Θv = J(Jᵀv) with one ``torch.func.vjp`` (whose
  closure, made once, keeps the forward pass's activations) and one ``torch.func.jvp`` per product,
  and ``scipy.sparse.linalg.eigsh`` finds the ``top`` largest eigenvalues (largest algebraic, ARPACK's
  default tolerance: machine precision) and their eigenvectors. J is never formed.
- **Dense**, when N·C·d is small (``DENSE_MAX_ENTRIES``, ``DENSE_MAX_OUTPUTS``): J by
  ``torch.func.jacrev`` (one vjp per output, when N·C ≤ d) or one jvp per parameter (vmapped),
  then every eigenvalue of J Jᵀ by ``torch.linalg.eigh``. ``"auto"`` picks it when it applies and
  fits the memory budget: it is faster there, exact, and gives the whole spectrum.

Precision: every product runs in float64 on cast copies of the module, parameters and inputs. The
cost over float32 (wider arithmetic, the same number of products) was measured and is modest next
to what float32 loses: products good only to float32's resolution (≈ 1e-7) give eigenvalues no
better than that and let Lanczos lose orthogonality among close eigenvalues, too coarse to compare
with a dense eigh or across checkpoints whose spectra differ in the eighth digit.

Trace: Hutchinson's estimator with ``probes`` Rademacher vectors v, vᵀΘv = ‖Jᵀv‖² (one vjp each),
reported as their mean with standard error std/√probes; dense: exactly ‖J‖_F², standard error 0.

Effective rank: exp(H(p)), H the Shannon entropy (natural log) of p_i = λ_i / Σ_{j ≤ k} λ_j over the
k = ``top`` largest eigenvalues (negative rounding residue clipped to 0). It lies in [1, k]: 1 when
one direction carries all of the top eigenvalues' mass, k when they are equal. It covers only the
top k in *both* methods (Lanczos computes no more; the dense method's full spectrum is in
``all_eigenvalues``), so values from the two methods, and from runs of different sizes, compare.
``top_share`` = Σ_{i ≤ k} λ_i / trace says how much of the whole kernel the top k hold (with
Hutchinson's trace it can exceed 1 by the estimate's noise).

Memory guard (``estimate_memory``): before any product, the bytes a request needs are estimated and
a request above ``max_memory_bytes`` raises ``ResourceError`` naming the size and ``--inputs``.
Activations are measured, not guessed: two forward passes on a few rows count the bytes of every
tensor the operations produce (views excluded), and a straight line through the two counts is
extrapolated to N rows (the part of a forward pass that does not grow with N, such as a
transformer's per-token tables, is its intercept). A vjp closure keeps at most one forward pass's
tensors and a jvp carries a tangent beside each primal, so the operator's activations are taken
as three forward passes. Lanczos adds its basis, ``ncv`` = max(2·top + 1, 20) vectors of N·C
float64, four more work vectors and the ``top`` eigenvectors, and four copies of the d parameters
(the float64 copy, Jᵀv, the tangent, a gradient buffer). Dense adds J (N·C·d float64), Θ, its
eigenvectors and eigh's workspace (three (N·C)² matrices), and ``JACOBIAN_CHUNK`` batched products.

Fourier content (``frequency_content``): for modular tasks, the share of each eigenvector in the
span of cos(w_k(x + y − z)) and sin(w_k(x + y − z)), w_k = 2πk/n, the directions in which an extracted
program's logits live (``interp.extract``: logit(c) = Σ α_k cos(w_k(x + y − z) + φ_k)).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from progsynth.core.lens import Para
from progsynth.errors import ConfigError, LensTypeError, ResourceError
from progsynth.interp.relabel import GroupGrid
from progsynth.tasks.common import check_int, check_seed, sample_rows

__all__ = ["METHODS", "GIB", "DENSE_MAX_ENTRIES", "DENSE_MAX_OUTPUTS", "JACOBIAN_CHUNK", "NTKConfig",
           "NTKOperator", "MemoryEstimate", "NTKSpectrum", "FrequencyContent", "estimate_memory", "choose_method",
           "ntk_spectrum", "frequency_content", "effective_rank"]

METHODS = ("auto", "dense", "lanczos")
"""Ways to compute the spectrum (module docstring)."""
GIB = 2**30
"""Bytes in a GiB."""
DENSE_MAX_ENTRIES = 2**24
"""Largest N·C·d (entries of J, 128 MiB in float64) for which ``"auto"`` builds J densely."""
DENSE_MAX_OUTPUTS = 4096
"""Largest N·C for which ``"auto"`` takes the dense eigh (its cost grows as (N·C)³)."""
JACOBIAN_CHUNK = 64
"""Products batched at once (``torch.func`` ``chunk_size``) while building J densely."""
DTYPE = torch.float64
"""Every product runs in this dtype (module docstring, "Precision")."""
_ACTIVATION_PROBE_ROWS = (4, 8)
"""Rows of the two forward passes whose produced bytes are extrapolated to N rows."""


@dataclass(frozen=True)
class NTKConfig:
    """Settings of an NTK measurement (``run_ntk``; the CLI maps onto these one to one)."""

    inputs: int = 1000
    """Data rows the kernel is computed on: drawn without replacement from all of the run's rows,
    training and held-out alike, with ``seed`` (``tasks.common.sample_rows``), then sorted; all rows
    when there are fewer."""
    top: int = 20
    """Eigenvalues and eigenvectors computed (the largest)."""
    probes: int = 16
    """Rademacher probes of Hutchinson's trace estimate (one vjp each; Lanczos only)."""
    seed: int = 0
    """Seeds the choice of rows, the Lanczos start vector and the trace probes."""
    method: str = "auto"
    """'dense', 'lanczos' or 'auto' (dense when J is small and fits the budget; module docstring)."""
    max_memory_bytes: int = 4 * GIB
    """A request estimated to need more memory than this is refused before any work (4 GiB)."""

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        check_int("inputs", self.inputs, 1)
        check_int("top", self.top, 1)
        check_int("probes", self.probes, 2)
        check_seed("seed", self.seed)
        _check_method(self.method)
        check_int("max_memory_bytes", self.max_memory_bytes, 1)

    def rows(self, total: int) -> torch.Tensor:
        """The sorted int64 indices of the rows used among ``total`` data rows (field ``inputs``;
        ``tasks.common.sample_rows``)."""
        return sample_rows(total, self.inputs, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}")
    return method


def _cast(tree: Any) -> Any:
    return pytree.tree_map(lambda t: t.detach().to(DTYPE) if isinstance(t, torch.Tensor) and t.is_floating_point()
                           else t, tree)


def _output_function(model: nn.Module | Para, params: Any,
                     x: torch.Tensor) -> tuple[Callable[[Any], torch.Tensor], Any]:
    """A pure function params → outputs (N, ...) of float64 copies, and the float64 parameters."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] == 0:
        raise LensTypeError(f"the NTK needs inputs as a torch.Tensor with at least one row, got "
                            f"{getattr(x, 'shape', type(x).__name__)}")
    leaves = pytree.tree_leaves(params)
    if not leaves:
        raise LensTypeError(f"the NTK needs parameters (a non-empty pytree of floating-point tensors), got {params!r}")
    for leaf in leaves:
        if not (isinstance(leaf, torch.Tensor) and leaf.is_floating_point()):
            dtype = f" of dtype {leaf.dtype}" if hasattr(leaf, "dtype") else ""
            raise LensTypeError(f"the NTK needs the parameters as floating-point tensors, got a "
                                f"{type(leaf).__name__}{dtype}")
    x = _cast(x)
    params = _cast(params)
    if isinstance(model, nn.Module):
        if not isinstance(params, dict):
            raise LensTypeError(f"an nn.Module's parameters must be a dict name -> tensor, got {type(params).__name__}")
        names = {name for name, _ in model.named_parameters()}
        if set(params) != names:
            missing, extra = sorted(names - set(params)), sorted(set(params) - names)
            raise LensTypeError(f"the parameters do not match the module's: missing {missing}, unexpected {extra}")
        module = copy.deepcopy(model).to(DTYPE)
        buffers = dict(module.named_buffers())
        return (lambda p: functional_call(module, (p, buffers), (x,))), params
    if isinstance(model, Para):
        return (lambda p: model.get(p, x)), params
    raise LensTypeError(f"the NTK needs an nn.Module or a Para, got {type(model).__name__}")


class NTKOperator:
    """Θ = J Jᵀ at fixed parameters and inputs, applied without forming J (module docstring).

    Vectors live in R^{N·C}, the outputs flattened row by row. ``matvec`` counts its calls in
    ``matvecs``; ``transpose_products`` counts every Jᵀv (including those inside ``matvec``).
    """

    def __init__(self, model: nn.Module | Para, params: Any, x: torch.Tensor):
        fn, self.params = _output_function(model, params, x)
        self._fn = lambda p: fn(p).reshape(-1)
        outputs, self._pullback = vjp(self._fn, self.params)
        self.rows = int(x.shape[0])
        self.size = int(outputs.numel())
        if self.size % self.rows:
            raise LensTypeError(f"the model's outputs ({self.size} numbers) do not split into {self.rows} rows")
        self.classes = self.size // self.rows
        self.outputs = outputs.detach().reshape(self.rows, self.classes)
        self.parameters = sum(t.numel() for t in pytree.tree_leaves(self.params))
        self.matvecs = 0
        self.transpose_products = 0

    def _vector(self, v: torch.Tensor | np.ndarray) -> torch.Tensor:
        v = torch.as_tensor(v).reshape(-1).to(DTYPE)
        if v.numel() != self.size:
            raise LensTypeError(f"the NTK operator acts on vectors of {self.size} numbers (N·C), got {v.numel()}")
        return v

    def transpose(self, v: torch.Tensor | np.ndarray) -> Any:
        """Jᵀv: a pytree like the parameters (one vjp)."""
        self.transpose_products += 1
        return self._pullback(self._vector(v))[0]

    def forward(self, tangent: Any) -> torch.Tensor:
        """J t for a pytree ``tangent`` like the parameters: (N·C,) (one jvp)."""
        return jvp(self._fn, (self.params,), (tangent,))[1]

    def matvec(self, v: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Θv = J(Jᵀv) for v of N·C numbers, as a float64 tensor (N·C,)."""
        self.matvecs += 1
        return self.forward(self.transpose(v))

    def jacobian(self, chunk_size: int = JACOBIAN_CHUNK) -> torch.Tensor:
        """J as a dense (N·C, d) float64 tensor, parameters in pytree order: ``jacrev`` (one vjp per
        output) when N·C ≤ d, else one jvp per parameter (``jacfwd``'s way, which takes no chunk
        size, so it is written out with ``vmap``), ``chunk_size`` products at a time."""
        if self.size <= self.parameters:
            tree = jacrev(self._fn, chunk_size=chunk_size)(self.params)
            return torch.cat([t.reshape(self.size, -1) for t in pytree.tree_leaves(tree)], dim=1)
        leaves, spec = pytree.tree_flatten(self.params)
        push = vmap(lambda *tangent: jvp(self._fn, (self.params,), (pytree.tree_unflatten(list(tangent), spec),))[1])
        columns = []
        for first in range(0, self.parameters, chunk_size):
            count = min(chunk_size, self.parameters - first)
            basis = torch.zeros(count, self.parameters, dtype=DTYPE)
            basis[torch.arange(count), first + torch.arange(count)] = 1.0
            parts = torch.split(basis, [t.numel() for t in leaves], dim=1)
            columns.append(push(*(part.reshape(-1, *t.shape) for part, t in zip(parts, leaves))))
        return torch.cat(columns).T

    def linear_operator(self) -> Any:
        """Θ as a ``scipy.sparse.linalg.LinearOperator`` on float64 numpy vectors (for ``eigsh``)."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator((self.size, self.size), dtype=np.float64,
                              matvec=lambda v: self.matvec(torch.from_numpy(np.ascontiguousarray(v))).numpy())


# ---- memory ----------------------------------------------------------------------------------------


class _ProducedBytes(TorchDispatchMode):
    """Counts the bytes of every tensor the operations produce, except views of their inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.bytes += t.untyped_storage().nbytes()
        return out


def _forward_bytes(model: nn.Module | Para, params: Any, x: torch.Tensor) -> int:
    """Bytes produced by one float64 forward pass on all N rows of ``x``, extrapolated from two
    passes on a few rows (module docstring)."""
    n = int(x.shape[0])
    counts = []
    sizes = sorted({min(n, m) for m in _ACTIVATION_PROBE_ROWS})
    for m in sizes:
        fn, p = _output_function(model, params, x[:m])
        with torch.no_grad(), _ProducedBytes() as counter:
            fn(p)
        counts.append(counter.bytes)
    if len(sizes) == 1:
        return counts[0]
    slope = max(0.0, (counts[1] - counts[0]) / (sizes[1] - sizes[0]))
    return int(max(counts[1], counts[0] + slope * (n - sizes[0])))


@dataclass(frozen=True)
class MemoryEstimate:
    """The bytes a request needs, by method (module docstring, "Memory guard")."""

    rows: int
    classes: int
    parameters: int
    forward_bytes: int
    """One float64 forward pass on all N rows."""
    lanczos_bytes: int
    dense_bytes: int

    def bytes(self, method: str) -> int:
        """Bytes needed by ``method`` ('dense' or 'lanczos')."""
        return self.dense_bytes if method == "dense" else self.lanczos_bytes

    def to_dict(self) -> dict[str, int]:
        """The fields as plain ints."""
        return {"rows": self.rows, "classes": self.classes, "parameters": self.parameters,
                "forward_bytes": self.forward_bytes, "lanczos_bytes": self.lanczos_bytes,
                "dense_bytes": self.dense_bytes}


def _output_shape(model: nn.Module | Para, params: Any, x: torch.Tensor) -> tuple[int, int]:
    fn, p = _output_function(model, params, x[:1])
    with torch.no_grad():
        out = fn(p)
    return int(x.shape[0]), int(out.numel())


def estimate_memory(model: nn.Module | Para, params: Any, x: torch.Tensor, top: int = 20) -> MemoryEstimate:
    """Estimate the bytes the Lanczos and dense methods need for these inputs (module docstring)."""
    check_int("top", top, 1)
    rows, classes = _output_shape(model, params, x)
    size = rows * classes
    d = sum(t.numel() for t in pytree.tree_leaves(params))
    forward = _forward_bytes(model, params, x)
    item = torch.finfo(DTYPE).bits // 8
    ncv = min(size, max(2 * top + 1, 20))
    lanczos = 3 * forward + 4 * d * item + (ncv + 4 + min(top, size)) * size * item
    dense = (2 + JACOBIAN_CHUNK) * forward + 2 * d * item + size * d * item + 3 * size * size * item
    return MemoryEstimate(rows, classes, d, forward, lanczos, dense)


def _refuse(method: str, estimate: MemoryEstimate, budget: int) -> ResourceError:
    need = estimate.bytes(method)
    return ResourceError(
        f"the NTK's {method} spectrum on {estimate.rows} inputs × {estimate.classes} outputs "
        f"({estimate.parameters:,} parameters) needs about {need / GIB:.3g} GiB, more than "
        f"max_memory_bytes = {budget / GIB:.3g} GiB; fewer inputs (--inputs) shrink it")


def choose_method(estimate: MemoryEstimate, method: str = "auto", top: int = 20,
                  max_memory_bytes: int = 4 * GIB) -> str:
    """The method ('dense' or 'lanczos') a request runs with (``"auto"``: module docstring), or
    ``ResourceError`` when its estimate exceeds ``max_memory_bytes``; ConfigError for Lanczos with
    ``top`` ≥ N·C."""
    _check_method(method)
    check_int("top", top, 1)
    check_int("max_memory_bytes", max_memory_bytes, 1)
    budget = max_memory_bytes
    size = estimate.rows * estimate.classes
    if method == "lanczos" and top >= size:
        raise ConfigError(f"top must be below N·C = {size} for the lanczos method, got {top}; "
                          f"use method 'dense' for the whole spectrum")
    if method == "auto":
        small = size * estimate.parameters <= DENSE_MAX_ENTRIES and size <= DENSE_MAX_OUTPUTS
        dense_fits = estimate.dense_bytes <= budget
        method = "dense" if top >= size or (small and dense_fits) else "lanczos"
    if estimate.bytes(method) > budget:
        raise _refuse(method, estimate, budget)
    return method


# ---- the spectrum ------------------------------------------------------------------------------------


def effective_rank(eigenvalues: np.ndarray) -> float:
    """exp of the Shannon entropy of the eigenvalues normalised to sum 1 (negatives clipped to 0);
    NaN when none is positive (module docstring)."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    total = lam.sum()
    if not total > 0:
        return math.nan
    p = lam[lam > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


@dataclass(frozen=True, eq=False)
class NTKSpectrum:
    """The top of Θ's spectrum on N inputs (module docstring for every definition)."""

    eigenvalues: np.ndarray
    """(k,) float64, the k = min(top, N·C) largest eigenvalues, descending."""
    eigenvectors: torch.Tensor = field(repr=False)
    """(k, N, C) float64, unit-norm eigenvectors (each up to sign), row i for ``eigenvalues[i]``."""
    all_eigenvalues: np.ndarray | None = field(repr=False)
    """Every eigenvalue, descending (dense method only; None for Lanczos)."""
    trace: float
    """tr Θ: exact (‖J‖_F²) for dense, Hutchinson's mean for Lanczos."""
    trace_stderr: float
    """Standard error of ``trace`` (0 when exact)."""
    top_share: float
    """Σ eigenvalues / trace."""
    effective_rank: float
    """exp of the entropy of the normalised top-k eigenvalues."""
    method: str
    """'dense' or 'lanczos' (what 'auto' chose)."""
    matvecs: int
    """Operator applications: Θv products for Lanczos (one vjp and one jvp each); for dense, the
    vjps (one per output) or jvps (one per parameter) that built J."""
    probes: int
    """Hutchinson probes (one vjp each); 0 for dense."""
    rows: int
    """N, the inputs."""
    classes: int
    """C, the outputs per input."""
    parameters: int
    """d, the parameters."""
    memory_bytes: int
    """The estimated bytes of the chosen method (``estimate_memory``)."""
    seconds: float
    """Wall time of the whole computation."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; the eigenvectors are left out (N·C numbers each)."""
        return {
            "eigenvalues": self.eigenvalues.tolist(),
            "all_eigenvalues": None if self.all_eigenvalues is None else self.all_eigenvalues.tolist(),
            "trace": self.trace, "trace_stderr": self.trace_stderr, "top_share": self.top_share,
            "effective_rank": self.effective_rank, "method": self.method, "matvecs": self.matvecs,
            "probes": self.probes, "rows": self.rows, "classes": self.classes, "parameters": self.parameters,
            "memory_bytes": self.memory_bytes, "seconds": self.seconds,
        }


def _hutchinson(operator: NTKOperator, probes: int, seed: int) -> tuple[float, float]:
    """Hutchinson's trace estimate with Rademacher probes: (mean of ‖Jᵀv‖², its standard error)."""
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(probes):
        v = torch.randint(0, 2, (operator.size,), generator=generator).to(DTYPE).mul_(2).sub_(1)
        values.append(sum(float((g * g).sum()) for g in pytree.tree_leaves(operator.transpose(v))))
    samples = np.asarray(values)
    return float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(probes))


@dataclass(frozen=True, eq=False)
class _Solved:
    eigenvalues: np.ndarray
    eigenvectors: torch.Tensor
    all_eigenvalues: np.ndarray | None
    trace: float
    trace_stderr: float
    matvecs: int
    probes: int


def _dense(operator: NTKOperator, k: int) -> _Solved:
    """Every eigenvalue from J built densely; the exact trace ‖J‖_F²."""
    jacobian = operator.jacobian()
    values, vectors = torch.linalg.eigh(jacobian @ jacobian.T)
    order = torch.arange(operator.size - 1, -1, -1)
    all_values = values[order].numpy()
    return _Solved(all_values[:k].copy(), vectors[:, order[:k]].T, all_values, float((jacobian * jacobian).sum()),
                   0.0, min(operator.size, operator.parameters), 0)


def _lanczos(operator: NTKOperator, k: int, probes: int, seed: int) -> _Solved:
    """The k largest eigenvalues by ARPACK's Lanczos on the operator; Hutchinson's trace."""
    from scipy.sparse.linalg import eigsh
    from threadpoolctl import threadpool_limits

    v0 = np.random.default_rng(seed).standard_normal(operator.size)
    # ARPACK's own BLAS calls are small; OpenBLAS threads left spinning after each of them compete
    # with torch's threads during the products, so BLAS gets one thread meanwhile.
    with threadpool_limits(limits=1, user_api="blas"):
        values, vectors = eigsh(operator.linear_operator(), k=k, which="LA", v0=v0)
    order = np.argsort(values)[::-1]
    matvecs = operator.matvecs
    trace, stderr = _hutchinson(operator, probes, seed)
    return _Solved(values[order], torch.from_numpy(np.ascontiguousarray(vectors[:, order].T)), None, trace,
                   stderr, matvecs, probes)


def ntk_spectrum(model: nn.Module | Para, params: Any, x: torch.Tensor, top: int = 20, method: str = "auto",
                 probes: int = 16, seed: int = 0, max_memory_bytes: int = 4 * GIB) -> NTKSpectrum:
    """The top ``top`` eigenvalues and eigenvectors of Θ = J Jᵀ on inputs ``x`` (N rows), its trace,
    top share and effective rank (module docstring).

    ``model`` is an ``nn.Module`` with ``params`` a dict name → tensor (run through
    ``torch.func.functional_call``), or a ``Para`` with ``params`` its pytree; outputs (N, ...) are
    flattened to C per row. ``method`` 'auto', 'dense' or 'lanczos'; ``probes`` Hutchinson probes
    (Lanczos); ``seed`` seeds the Lanczos start vector and the probes. Raises ``ResourceError``
    before any work when the estimated memory exceeds ``max_memory_bytes``.
    """
    check_int("top", top, 1)
    _check_method(method)
    check_int("probes", probes, 2)
    check_seed("seed", seed)
    check_int("max_memory_bytes", max_memory_bytes, 1)
    start = time.perf_counter()
    estimate = estimate_memory(model, params, x, top)
    chosen = choose_method(estimate, method, top, max_memory_bytes)
    operator = NTKOperator(model, params, x)
    k = min(top, operator.size)
    solved = _dense(operator, k) if chosen == "dense" else _lanczos(operator, k, probes, seed)
    total = float(np.sum(solved.eigenvalues))
    return NTKSpectrum(
        eigenvalues=np.asarray(solved.eigenvalues, dtype=np.float64),
        eigenvectors=solved.eigenvectors.reshape(k, operator.rows, operator.classes).contiguous(),
        all_eigenvalues=solved.all_eigenvalues, trace=solved.trace, trace_stderr=solved.trace_stderr,
        top_share=total / solved.trace if solved.trace > 0 else math.nan,
        effective_rank=effective_rank(solved.eigenvalues), method=chosen, matvecs=solved.matvecs,
        probes=solved.probes, rows=operator.rows, classes=operator.classes, parameters=operator.parameters,
        memory_bytes=estimate.bytes(chosen), seconds=time.perf_counter() - start,
    )


# ---- Fourier content of eigenfunctions -----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FrequencyContent:
    """How much of each eigenvector lies along each frequency's program directions (``frequency_content``)."""

    n: int
    """The group order."""
    frequencies: tuple[int, ...]
    """k = 1 .. ⌊n/2⌋, the columns of ``shares``."""
    key: tuple[int, ...]
    """The key frequencies whose joint span ``key_share`` measures."""
    shares: np.ndarray
    """(m, ⌊n/2⌋): ‖P_k u‖² / ‖u‖² per eigenvector u and frequency k (u on the group block)."""
    key_share: np.ndarray
    """(m,): ‖P_K u‖² / ‖u‖² for the span of all key frequencies' functions at once (0 for no key)."""
    coverage: np.ndarray
    """(m,): the share of ‖u‖² on the group block (rows inside the group, the group's classes)."""
    eigenspace_shares: np.ndarray
    """(⌊n/2⌋,): the other way round, how much of frequency k's program functions (on the group
    block) lies in the span of all m vectors: ‖Q_U B_k‖²_F / rank(B_k), B_k an orthonormal basis of
    the functions, Q_U the projection onto the vectors' span. Eigenvectors of a degenerate
    eigenvalue are any basis of its eigenspace (the NTK of a network with a separate output layer
    repeats each input eigenfunction once per class), so a program direction can lie in the top
    eigenspace while no single eigenvector points along it; this reads the eigenspace itself. A
    random m-dimensional subspace captures about m / (R'·n)."""
    eigenspace_key_share: float
    """The same for the joint span of the key frequencies' functions (NaN for no key)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN where an eigenvector has no mass on the group block)."""
        return {"n": self.n, "frequencies": list(self.frequencies), "key": list(self.key),
                "shares": self.shares.tolist(), "key_share": self.key_share.tolist(),
                "coverage": self.coverage.tolist(), "eigenspace_shares": self.eigenspace_shares.tolist(),
                "eigenspace_key_share": self.eigenspace_key_share}


def _span(columns: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the column span (SVD, numerically zero directions dropped)."""
    u, s, _ = torch.linalg.svd(columns, full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return u[:, :0]
    keep = s > s[0] * max(columns.shape) * torch.finfo(columns.dtype).eps
    return u[:, keep]


def frequency_content(vectors: torch.Tensor, grid: GroupGrid, rows: torch.Tensor, key: list[int]) -> FrequencyContent:
    """Per vector u (R data rows × C classes) the share of u in the span of cos(w_k(x + y − z)) and
    sin(w_k(x + y − z)), w_k = 2πk/n, for each k = 1..⌊n/2⌋, and in the joint span of the key
    frequencies' 2K functions.

    ``rows`` (R,) are the data rows of the vectors' rows (indices into ``grid.x``, ``grid.y``);
    x = grid.x[row], y = grid.y[row], and class ``grid.classes[z]`` carries z. Only the group block
    counts: rows inside the group and the group's classes, for u and for the functions alike, so a
    share is ‖P u_G‖² / ‖u_G‖² (``coverage`` gives ‖u_G‖² / ‖u‖²). The projection P onto the span
    of the block's columns is the least-squares fit of u_G by them, through an orthonormal basis
    (SVD), since on a subset of rows the functions need not be orthogonal (for k = n/2 the sine
    vanishes and drops out).
    """
    if not isinstance(grid, GroupGrid):
        raise ConfigError(f"frequency_content needs a GroupGrid (interp.relabel), got {type(grid).__name__}")
    if not isinstance(vectors, torch.Tensor) or vectors.dim() != 3 or not vectors.is_floating_point():
        raise LensTypeError(f"frequency_content expects float vectors of shape (m, R, C), got "
                            f"{getattr(vectors, 'shape', type(vectors).__name__)}")
    m, r, c = vectors.shape
    if not isinstance(rows, torch.Tensor) or rows.dtype != torch.int64 or rows.shape != (r,):
        raise LensTypeError(f"frequency_content expects rows as an int64 tensor of shape ({r},), got "
                            f"{getattr(rows, 'dtype', type(rows).__name__)} {tuple(getattr(rows, 'shape', ()))}")
    total = int(grid.x.numel())
    if r and (int(rows.min()) < 0 or int(rows.max()) >= total):
        raise ConfigError(f"rows must index the {total} data rows of the grid, got range "
                          f"[{int(rows.min())}, {int(rows.max())}]")
    n = grid.n
    if int(grid.classes.max()) >= c:
        raise LensTypeError(f"the grid's classes reach {int(grid.classes.max())} but the vectors have {c} classes")
    half = n // 2
    bad = [k for k in key if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= half]
    if bad:
        raise ConfigError(f"key frequencies must be integers from 1 to {half}, got {bad}")
    u = vectors.detach().to(DTYPE)
    whole = (u * u).sum(dim=(1, 2))
    inside = ((grid.x[rows] >= 0) & (grid.y[rows] >= 0)).nonzero().flatten()
    block = u[:, inside][:, :, grid.classes].reshape(m, -1)  # (m, R'·n)
    norm = (block * block).sum(dim=1)
    s = (grid.x[rows[inside]] + grid.y[rows[inside]]).unsqueeze(1) - torch.arange(n).unsqueeze(0)
    angle = (2 * math.pi / n) * s.reshape(-1).to(DTYPE)  # (R'·n,)

    def basis(frequencies: list[int]) -> torch.Tensor:
        columns = torch.cat([torch.stack([torch.cos(k * angle), torch.sin(k * angle)], dim=1) for k in frequencies], 1)
        return _span(columns)

    def share(frequencies: list[int]) -> torch.Tensor:
        if not frequencies or block.shape[1] == 0:
            return torch.full((m,), math.nan if block.shape[1] == 0 else 0.0, dtype=DTYPE)
        coefficients = block @ basis(frequencies)
        return (coefficients * coefficients).sum(dim=1) / norm

    eigenspace = _span(block.T) if block.shape[1] else block.T  # (R'·n, ≤ m), orthonormal

    def captured(frequencies: list[int]) -> float:
        if not frequencies or block.shape[1] == 0:
            return math.nan
        functions = basis(frequencies)
        return float((eigenspace.T @ functions).pow(2).sum()) / functions.shape[1]

    shares = torch.stack([share([k]) for k in range(1, half + 1)], dim=1) if half else torch.zeros(m, 0, dtype=DTYPE)
    return FrequencyContent(n=n, frequencies=tuple(range(1, half + 1)), key=tuple(key), shares=shares.numpy(),
                            key_share=share(list(key)).numpy(), coverage=(norm / whole).numpy(),
                            eigenspace_shares=np.array([captured([k]) for k in range(1, half + 1)]),
                            eigenspace_key_share=captured(list(key)))
