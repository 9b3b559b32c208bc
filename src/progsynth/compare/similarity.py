"""Similarity of two representations of the same inputs: linear CKA, mutual k-NN, linear stitching.

A representation is a tensor of shape (n, d): one row per input, one column per feature. Two
representations compare only when their rows are the same n inputs in the same order; their
widths d₁ and d₂ may differ (two runs of different models, or one run at two sites). Every measure
computes in float64 and returns a Python float; ``pairwise`` fills a matrix of one measure over a
list of representations (one per run).

- ``linear_cka`` (Kornblith et al. 2019): with X and Y column-centred,

      CKA(X, Y) = ‖XᵀY‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F) = ⟨K, L⟩_F / (‖K‖_F ‖L‖_F),   K = XXᵀ, L = YYᵀ,

  in [0, 1], invariant to orthogonal maps and isotropic scaling of either side (not to scaling
  single features). The two forms are equal; the one cheaper for the shapes is used (the Gram
  form when n is small beside the widths). CKA of unrelated representations is not 0 at finite n:
  over uniformly random row permutations π of Y its mean is exactly

      E_π[CKA(X, Y_π)] = tr K̃ · tr L̃ / ((n − 1) ‖K̃‖_F ‖L̃‖_F)      (K̃, L̃ the centred Grams)

  (diagonal terms contribute tr K̃ tr L̃ / n, off-diagonal ones tr K̃ tr L̃ / (n(n − 1)) because a
  centred Gram sums to 0), about √(d₁d₂)/n for isotropic features with n ≫ d; read a CKA against
  that floor, not against 0.
- ``mutual_knn`` (Huh et al. 2024, "The Platonic Representation Hypothesis", their reference
  code): rows L2-normalised; for each input its k nearest other inputs by inner product in X and in
  Y; the mean over inputs of the fraction of the k shared. Only the neighbourhood structure counts,
  so it is invariant to rotations and to any positive per-row scaling. Independent representations
  score about k/(n − 1), the chance overlap of two random k-subsets of the n − 1 other inputs.
- ``linear_stitching``: how well an affine map reads Y off X, fitted on some rows and scored (R²)
  on others. It is asymmetric: a wide X can read a narrow Y off without the converse holding.

Degenerate input (a representation constant over the rows, which carries no information about
which input is which) gives NaN where the measure is 0/0, documented per function, so that a mean
over many pairs (``numpy.nanmean``) skips it rather than counting it as similar or dissimilar.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from progsynth.errors import ConfigError, LensTypeError, NonFiniteError

__all__ = ["linear_cka", "mutual_knn", "linear_stitching", "pairwise", "similarity_matrices", "DEFAULT_K",
           "DEFAULT_RIDGE"]

DEFAULT_K = 10
"""Neighbours per input in ``mutual_knn`` (the reference code's default)."""

DEFAULT_RIDGE = 1e-6
"""Ridge of ``linear_stitching``, relative to the mean eigenvalue tr(XᵀX)/d₁ of the centred fit rows:
small enough to leave a well-posed fit unchanged in practice, large enough that collinear or too few
fit rows still give a unique, finite map."""


def _representation(name: str, x: object) -> torch.Tensor:
    """``x`` as a float64 (n, d) tensor; LensTypeError unless it is a 2-D real tensor with d ≥ 1,
    NonFiniteError if it holds NaN or infinity."""
    if not isinstance(x, torch.Tensor):
        raise LensTypeError(f"{name} must be a torch.Tensor of shape (inputs, features), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] < 1 or x.is_complex():
        raise LensTypeError(f"{name} must be a real 2-D tensor of shape (inputs, features) with at least one "
                            f"feature, got a {x.dtype} tensor of shape {tuple(x.shape)}")
    x = x.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"{name} holds NaN or infinity; expected finite features")
    return x


def _pair(x: object, y: object, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Both representations checked, in float64 on x's device; ConfigError unless they have the same
    number of rows (the same inputs), at least ``min_rows``."""
    x, y = _representation("x", x), _representation("y", y)
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; expected the same inputs in "
                          f"the same order on both sides")
    if x.shape[0] < min_rows:
        raise ConfigError(f"x and y have {x.shape[0]} rows; expected at least {min_rows} inputs")
    return x, y.to(x.device)


def _constant(x: torch.Tensor) -> bool:
    """Whether every row of ``x`` is the same (exactly: centring would leave only rounding)."""
    return bool((x == x[:1]).all())


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same n ≥ 2 inputs (module docstring), in [0, 1].

    The feature form costs about n(d₁² + d₂² + d₁d₂) operations, the Gram form n²(d₁ + d₂); the
    cheaper is used and both give the same value. NaN when either representation is constant over
    the rows: after centring it is zero and CKA is 0/0 (such a representation does not distinguish
    the inputs at all, so it is neither similar nor dissimilar to another).
    """
    x, y = _pair(x, y)
    if _constant(x) or _constant(y):
        return math.nan
    x = x - x.mean(0)
    y = y - y.mean(0)
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    if n * (d1 + d2) < d1 * d1 + d2 * d2 + d1 * d2:
        return _cka_gram(x, y)
    return _cka_features(x, y)


def _cka_features(x: torch.Tensor, y: torch.Tensor) -> float:
    """‖XᵀY‖² / (‖XᵀX‖ ‖YᵀY‖) of centred X, Y."""
    cross = torch.linalg.matrix_norm(x.T @ y) ** 2
    return float(cross / (torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)))


def _cka_gram(x: torch.Tensor, y: torch.Tensor) -> float:
    """⟨K, L⟩ / (‖K‖ ‖L‖) with K = XXᵀ, L = YYᵀ of centred X, Y (so K and L are the centred Grams)."""
    k, l = x @ x.T, y @ y.T
    return float((k * l).sum() / (torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)))


def _neighbours(gram: torch.Tensor, k: int) -> torch.Tensor:
    """(n, n) bool: row i marks its k nearest other rows by cosine similarity, read off the Gram
    matrix XXᵀ (an all-zero row has similarity 0 to every row); exact ties at the k-th similarity go
    to the lower row indices, the set a stable descending sort would keep. Found with ``topk`` and
    that tie rule instead of a full sort of every row."""
    norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(1e-12)
    sims = gram / norms.unsqueeze(1) / norms.unsqueeze(0)
    sims.fill_diagonal_(-math.inf)
    kth = torch.topk(sims, k, dim=1).values[:, -1:]
    chosen = sims >= kth
    crowded = (chosen.sum(1) > k).nonzero().flatten()  # rows with more ties at the k-th than places
    if crowded.numel():
        rows = sims[crowded]
        above, tied = rows > kth[crowded], rows == kth[crowded]
        wanted = k - above.sum(1, keepdim=True)
        chosen[crowded] = above | (tied & (tied.cumsum(1) <= wanted))
    return chosen


def mutual_knn(x: torch.Tensor, y: torch.Tensor, k: int = DEFAULT_K) -> float:
    """Mutual k-nearest-neighbour alignment of two representations of the same n inputs, in [0, 1]
    (module docstring): mean over inputs i of |kNN_X(i) ∩ kNN_Y(i)| / k, with 1 ≤ k < n.

    Neighbours are by inner product of the L2-normalised rows (cosine similarity), the input itself
    excluded. Exact ties in similarity are broken towards the lower row index, the same way in X and
    in Y, so equal representations score exactly 1 even when rows repeat; the reference code's
    unstable argsort leaves that order unspecified. An all-zero row stays zero after normalising
    (similarity 0 to every row). Memory and time grow as n², for the n × n similarities.
    """
    x, y = _pair(x, y)
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ConfigError(f"mutual_knn k must be an integer from 1 to n − 1 = {n - 1} for n = {n} inputs, got {k!r}")
    shared = (_neighbours(x @ x.T, k) & _neighbours(y @ y.T, k)).sum(1)
    return float(shared.double().mean() / k)


def _rows(name: str, rows: object, n: int) -> torch.Tensor:
    """``rows`` if it is a non-empty 1-D int64 tensor of indices in [0, n), else ConfigError naming it."""
    if not isinstance(rows, torch.Tensor):
        raise ConfigError(f"{name} must be a 1-D int64 tensor of row indices, got {type(rows).__name__}")
    if rows.dtype != torch.int64 or rows.dim() != 1 or rows.numel() == 0:
        raise ConfigError(f"{name} must be a non-empty 1-D int64 tensor of row indices, got a {rows.dtype} "
                          f"tensor of shape {tuple(rows.shape)}")
    low, high = int(rows.min()), int(rows.max())
    if low < 0 or high >= n:
        bad = low if low < 0 else high
        raise ConfigError(f"{name} holds row {bad}, outside 0..{n - 1} for n = {n} inputs")
    return rows


def linear_stitching(x: torch.Tensor, y: torch.Tensor, fit_rows: torch.Tensor, eval_rows: torch.Tensor,
                     ridge: float = DEFAULT_RIDGE) -> float:
    """R² on ``eval_rows`` of the affine map X → Y fitted by ridge least squares on ``fit_rows``.

    Fit: with x̄, ȳ the column means over the fit rows and X₀ = X_fit − x̄, Y₀ = Y_fit − ȳ,

        W = (X₀ᵀX₀ + λI)⁻¹ X₀ᵀY₀ = X₀ᵀ(X₀X₀ᵀ + λI)⁻¹ Y₀,   Ŷ = (X − x̄) W + ȳ,
        λ = ridge · tr(X₀ᵀX₀) / d₁,

    the bias left unpenalised (centring), λ relative to the mean eigenvalue so that it does not
    depend on the scale of X; the second form (cheaper when fewer fit rows than features) is the
    same W. With λ = 0 (``ridge`` = 0, or X constant on the fit rows) W = X₀⁺Y₀, the minimum-norm
    least-squares map, which is the λ → 0 limit.

    Score: R² = 1 − Σ‖Y − Ŷ‖² / Σ‖Y − ȳ_eval‖² over the eval rows, summed over Y's columns
    (scikit-learn's ``variance_weighted`` R²), with ȳ_eval the eval rows' own column means: the
    standard definition, so a constant prediction at the right mean scores 0, a map that reads Y
    exactly scores 1, and a useless map scores below 0. NaN when Y is constant on the eval rows
    (0/0). The row sets may overlap (R² on the fit rows is in-sample) and may repeat rows.
    """
    x, y = _pair(x, y, min_rows=1)
    n = x.shape[0]
    fit_rows = _rows("fit_rows", fit_rows, n).to(x.device)
    eval_rows = _rows("eval_rows", eval_rows, n).to(x.device)
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
        raise ConfigError(f"linear_stitching ridge must be a finite number ≥ 0, got {ridge!r}")
    return _r2(_hat(x, fit_rows, eval_rows, ridge), y, fit_rows, eval_rows)


def _hat(x: torch.Tensor, fit_rows: torch.Tensor, eval_rows: torch.Tensor, ridge: float) -> torch.Tensor:
    """(eval, fit) H with Ŷ_eval − ȳ = H Y₀ for every target Y (``linear_stitching``): the source's
    whole share of the fit, (X_eval − x̄) A with W = A Y₀, A in the cheaper of the two forms."""
    x_mean = x[fit_rows].mean(0)
    x0 = x[fit_rows] - x_mean
    m, d1 = x0.shape
    lam = ridge * float((x0 ** 2).sum()) / d1
    if lam == 0.0:
        a = torch.linalg.pinv(x0)
    elif m >= d1:
        gram = x0.T @ x0
        gram.diagonal().add_(lam)
        a = torch.linalg.solve(gram, x0.T)
    else:
        gram = x0 @ x0.T
        gram.diagonal().add_(lam)
        a = x0.T @ torch.linalg.inv(gram)
    return (x[eval_rows] - x_mean) @ a


def _r2(hat: torch.Tensor, y: torch.Tensor, fit_rows: torch.Tensor, eval_rows: torch.Tensor) -> float:
    """R² on the eval rows of the prediction ``hat`` makes of ``y`` (``linear_stitching``)."""
    y_eval = y[eval_rows]
    if _constant(y_eval):
        return math.nan
    y_mean = y[fit_rows].mean(0)
    residual = y_eval - (hat @ (y[fit_rows] - y_mean) + y_mean)
    total = y_eval - y_eval.mean(0)
    return float(1.0 - (residual ** 2).sum() / (total ** 2).sum())


def pairwise(reps: Sequence[torch.Tensor], measure: Callable[[torch.Tensor, torch.Tensor], float],
             symmetric: bool = True) -> np.ndarray:
    """The (m, m) float64 matrix M[i, j] = measure(reps[i], reps[j]) over m representations of the
    same inputs (one per run), the diagonal included.

    ``symmetric=True`` (CKA, mutual k-NN) evaluates each unordered pair once and mirrors it;
    ``symmetric=False`` (stitching: row i is the source X, column j the target Y) evaluates both
    orders. The representations are checked up front, so an error names the offending index.
    """
    if isinstance(reps, torch.Tensor) or not isinstance(reps, Sequence) or len(reps) == 0:
        raise ConfigError(f"pairwise expects a non-empty list of (inputs, features) tensors, got "
                          f"{type(reps).__name__}" + (f" of length {len(reps)}" if isinstance(reps, Sequence) else ""))
    if not callable(measure):
        raise ConfigError(f"pairwise measure must be a callable (x, y) -> float, got {type(measure).__name__}")
    rows = [_representation(f"reps[{i}]", rep).shape[0] for i, rep in enumerate(reps)]
    for i, count in enumerate(rows):
        if count != rows[0]:
            raise ConfigError(f"reps[{i}] has {count} rows but reps[0] has {rows[0]}; expected the same inputs "
                              f"in every representation")
    m = len(reps)
    out = np.full((m, m), math.nan)
    for i in range(m):
        for j in range(i if symmetric else 0, m):
            out[i, j] = measure(reps[i], reps[j])
            if symmetric:
                out[j, i] = out[i, j]
    return out


def _checked(reps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The representations as float64 tensors, checked to share their rows (errors name the index)."""
    if isinstance(reps, torch.Tensor) or not isinstance(reps, Sequence) or len(reps) == 0:
        raise ConfigError(f"expected a non-empty list of (inputs, features) tensors, got {type(reps).__name__}"
                          + (f" of length {len(reps)}" if isinstance(reps, Sequence) else ""))
    checked = [_representation(f"reps[{i}]", rep) for i, rep in enumerate(reps)]
    for i, x in enumerate(checked):
        if x.shape[0] != checked[0].shape[0]:
            raise ConfigError(f"reps[{i}] has {x.shape[0]} rows but reps[0] has {checked[0].shape[0]}; expected the "
                              f"same inputs in every representation")
    return checked


def similarity_matrices(reps: Sequence[torch.Tensor], k: int, fit_rows: torch.Tensor | None = None,
                        eval_rows: torch.Tensor | None = None, ridge: float = DEFAULT_RIDGE) -> dict[str, np.ndarray]:
    """{'cka', 'knn', 'stitching'}: the (m, m) matrices of ``pairwise`` with ``linear_cka``,
    ``mutual_knn`` (k) and ``linear_stitching`` (fit and eval rows; NaN throughout when they are
    None), with each representation's own share of the work done once instead of once per pair:
    its centring and ‖XᵀX‖, its neighbour lists, its fitted map's hat matrix. The same values
    (tested); for m runs, about m times fewer of the expensive products, which is what makes
    comparing many runs at every checkpoint affordable."""
    xs = _checked(reps)
    m, n = len(xs), xs[0].shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ConfigError(f"mutual_knn k must be an integer from 1 to n − 1 = {n - 1} for n = {n} inputs, got {k!r}")
    out = {name: np.full((m, m), math.nan) for name in ("cka", "knn", "stitching")}
    centred = torch.empty(m, n, n, dtype=torch.float64)
    members, indices, varying = [], [], []
    for i, x in enumerate(xs):
        gram = x @ x.T
        inside = _neighbours(gram, k)
        members.append(inside)
        indices.append(inside.nonzero()[:, 1].reshape(n, k))  # row-major: each row's k neighbours
        if _unit_centred(gram, out=centred[i]):
            varying.append(i)
    for i in range(m):
        for j in range(i, m):
            shared = int(members[i].gather(1, indices[j]).sum())
            out["knn"][i, j] = out["knn"][j, i] = shared / (n * k)
    if varying:
        stacked = centred.reshape(m, -1) if len(varying) == m else centred[varying].reshape(len(varying), -1)
        out["cka"][np.ix_(varying, varying)] = (stacked @ stacked.T).numpy()
    if fit_rows is not None and eval_rows is not None:
        fit_rows, eval_rows = _rows("fit_rows", fit_rows, n), _rows("eval_rows", eval_rows, n)
        hats = torch.stack([_hat(x, fit_rows, eval_rows, ridge) for x in xs])  # (m, eval, fit)
        hat_grams = hats.transpose(1, 2) @ hats
        targets = [_Target(x, fit_rows, eval_rows) for x in xs]
        cross = torch.stack([t.cross for t in targets]).reshape(m, -1)
        target_grams = torch.stack([t.gram for t in targets]).reshape(m, -1)
        residual = (torch.tensor([t.dd for t in targets], dtype=torch.float64).unsqueeze(0) - 2 * hats.reshape(m, -1) @ cross.T
                    + hat_grams.reshape(m, -1) @ target_grams.T)  # [source, target]
        for j, target in enumerate(targets):
            if not target.constant:
                out["stitching"][:, j] = (1.0 - residual[:, j] / target.total).numpy()
    return out


def _unit_centred(gram: torch.Tensor, out: torch.Tensor) -> bool:
    """Write the centred Gram matrix K̃ = HKH scaled to unit norm into ``out`` (``linear_cka`` =
    ⟨K̃ᵢ, K̃ⱼ⟩ of these); False for a representation constant over the rows (K̃ = 0)."""
    means = gram.mean(0)
    torch.sub(gram, means.unsqueeze(0), out=out)
    out.sub_(means.unsqueeze(1)).add_(means.mean())
    norm = torch.linalg.matrix_norm(out)
    if norm == 0:
        return False
    out.div_(norm)
    return True


class _Target:
    """What ``similarity_matrices`` needs of a stitching target Y, computed once: with D = Y_eval − ȳ
    and Y₀ = Y_fit − ȳ (ȳ over the fit rows), the residual of a source's prediction H Y₀ is
    ‖D‖² − 2⟨H, D Y₀ᵀ⟩ + ⟨HᵀH, Y₀Y₀ᵀ⟩, so all pairs are two products of stacked (eval or fit) × fit
    matrices instead of one product with Y's columns per pair."""

    def __init__(self, y: torch.Tensor, fit_rows: torch.Tensor, eval_rows: torch.Tensor):
        y_eval, y_mean = y[eval_rows], y[fit_rows].mean(0)
        y0, d = y[fit_rows] - y_mean, y_eval - y_mean
        self.constant = _constant(y_eval)
        self.dd = float((d * d).sum())
        self.cross = d @ y0.T
        self.gram = y0 @ y0.T
        self.total = float(((y_eval - y_eval.mean(0)) ** 2).sum())
