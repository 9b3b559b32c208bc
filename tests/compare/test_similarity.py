"""Similarity of representations: linear CKA against its definition, its invariances and a
permutation null; mutual k-NN against a plain loop (ties included) and chance; stitching recovering
an affine map exactly; pairwise matrices; and bad input named in the error."""

import math
import re

import numpy as np
import pytest
import torch

from progsynth.compare.similarity import (_cka_features, _cka_gram, _hat, linear_cka, linear_stitching, mutual_knn,
                                          pairwise, similarity_matrices)
from progsynth.errors import ConfigError, LensTypeError, NonFiniteError, ProgsynthError


def _randn(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(_randn(d, d, seed))
    return q * torch.sign(torch.diagonal(r))


def _cka_by_definition(x: torch.Tensor, y: torch.Tensor) -> float:
    """HSIC form with the centring matrix H: tr(KHLH) / √(tr(KHKH) tr(LHLH)), in numpy."""
    x, y = x.numpy(), y.numpy()
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.trace(k @ l) / math.sqrt(np.trace(k @ k) * np.trace(l @ l)))


def _permutation_null(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact mean of CKA(X, Y_π) over all row permutations π: tr K̃ tr L̃ / ((n − 1) ‖K̃‖ ‖L̃‖)."""
    x, y = x - x.mean(0), y - y.mean(0)
    n = x.shape[0]
    norm_k, norm_l = torch.linalg.matrix_norm(x.T @ x), torch.linalg.matrix_norm(y.T @ y)
    return float((x ** 2).sum() * (y ** 2).sum() / ((n - 1) * norm_k * norm_l))


# --- linear CKA ----------------------------------------------------------------------------------

def test_cka_is_one_under_rotation_isotropic_scaling_and_shift() -> None:
    x = _randn(200, 12, 0)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.7 * x @ _orthogonal(12, 1)) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 0.01 * x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x + _randn(1, 12, 2) * 50) == pytest.approx(1.0, abs=1e-12)


def test_cka_changes_under_anisotropic_scaling() -> None:
    x = _randn(200, 12, 0)
    scaled = x * torch.logspace(0, 2, 12, dtype=torch.float64)
    assert linear_cka(x, scaled) < 0.9


@pytest.mark.parametrize("n, d1, d2", [(60, 5, 7), (15, 40, 30), (20, 3, 50)])
def test_cka_feature_form_equals_gram_form_and_definition(n: int, d1: int, d2: int) -> None:
    x, y = _randn(n, d1, 3), _randn(n, d2, 4) + _randn(n, 1, 5)
    xc, yc = x - x.mean(0), y - y.mean(0)
    features, gram = _cka_features(xc, yc), _cka_gram(xc, yc)
    assert features == pytest.approx(gram, abs=1e-10)
    assert linear_cka(x, y) == pytest.approx(_cka_by_definition(x, y), abs=1e-10)


def test_cka_is_symmetric_and_in_unit_interval() -> None:
    x = _randn(80, 6, 6)
    for seed, y in enumerate([_randn(80, 9, 7), x @ _randn(6, 3, 8) + 0.5 * _randn(80, 3, 9), x[:, :2]]):
        value = linear_cka(x, y)
        assert 0.0 <= value <= 1.0, seed
        assert value == pytest.approx(linear_cka(y, x), abs=1e-14)


def test_cka_of_a_constant_representation_is_nan() -> None:
    x = _randn(30, 4, 0)
    constant = torch.full((30, 3), 0.1, dtype=torch.float64)
    assert math.isnan(linear_cka(x, constant))
    assert math.isnan(linear_cka(constant, x))


def test_cka_of_independent_features_is_small_and_far_below_dependent() -> None:
    n, d = 2000, 20
    x, y = _randn(n, d, 10), _randn(n, d, 11)
    independent = linear_cka(x, y)
    dependent = linear_cka(x, x @ _randn(d, d, 12) + _randn(n, d, 13))
    assert independent < 0.1
    assert dependent > 0.5
    # the permutation null's mean is about √(d₁d₂)/n for isotropic features, n ≫ d
    assert _permutation_null(x, y) == pytest.approx(math.sqrt(d * d) / n, rel=0.2)


def test_permutation_null_formula_matches_shuffling() -> None:
    """The exact null mean used below agrees with brute-force row shuffles of Y."""
    x, y = _randn(120, 6, 20), _randn(120, 4, 21) ** 2
    generator = torch.Generator().manual_seed(22)
    values = np.array([linear_cka(x, y[torch.randperm(120, generator=generator)]) for _ in range(400)])
    assert values.mean() == pytest.approx(_permutation_null(x, y), abs=4 * values.std() / math.sqrt(400))


def test_cka_of_independent_features_matches_permutation_null_over_seeds() -> None:
    """Rows i.i.d. and X independent of Y: E CKA(X, Y) = E over X, Y of the permutation-null mean."""
    n, d1, d2 = 100, 8, 5
    gaps = np.array([linear_cka(x, y) - _permutation_null(x, y)
                     for x, y in ((_randn(n, d1, 100 + s), _randn(n, d2, 200 + s)) for s in range(200))])
    assert abs(gaps.mean()) < 4 * gaps.std() / math.sqrt(len(gaps))


# --- mutual k-NN ---------------------------------------------------------------------------------

def _knn_loop(x: torch.Tensor, k: int) -> list[set[int]]:
    """Each row's k nearest other rows by cosine similarity, ties to the lower index, in plain Python."""
    rows = [[float(v) for v in row] for row in x]
    unit = []
    for row in rows:
        norm = math.sqrt(sum(v * v for v in row))
        unit.append([v / norm for v in row])
    out = []
    for i, a in enumerate(unit):
        ranked = sorted((-sum(p * q for p, q in zip(a, b)), j) for j, b in enumerate(unit) if j != i)
        out.append({j for _, j in ranked[:k]})
    return out


def _mutual_knn_loop(x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    return sum(len(a & b) for a, b in zip(_knn_loop(x, k), _knn_loop(y, k))) / (k * x.shape[0])


def test_mutual_knn_matches_a_plain_loop() -> None:
    x, y = _randn(40, 5, 30), _randn(40, 3, 31) + 0.3 * _randn(40, 5, 30)[:, :3]
    for k in (1, 4, 39):
        assert mutual_knn(x, y, k) == pytest.approx(_mutual_knn_loop(x, y, k), abs=1e-15)


def test_mutual_knn_breaks_exact_ties_by_lower_index() -> None:
    """Signed one-hot rows with power-of-two scales: cosine similarities are exactly −1, 0 or 1."""
    generator = torch.Generator().manual_seed(32)
    n, d = 36, 4
    x = torch.zeros(n, d, dtype=torch.float64)
    x[torch.arange(n), torch.randint(0, d, (n,), generator=generator)] = \
        2.0 ** torch.randint(-3, 4, (n,), generator=generator).double() * \
        (2 * torch.randint(0, 2, (n,), generator=generator).double() - 1)
    y = _randn(n, 3, 33)
    assert mutual_knn(x, y, 6) == pytest.approx(_mutual_knn_loop(x, y, 6), abs=1e-15)
    assert mutual_knn(x, 8 * x, 6) == 1.0


def test_mutual_knn_is_one_under_rotation_and_scaling() -> None:
    x = _randn(300, 16, 34)
    assert mutual_knn(x, x) == 1.0
    assert mutual_knn(x, 2.5 * x @ _orthogonal(16, 35)) == 1.0
    scales = 0.1 + torch.rand(300, 1, generator=torch.Generator().manual_seed(36), dtype=torch.float64)
    assert mutual_knn(x, x * scales) == 1.0  # any positive per-row scaling


def test_mutual_knn_of_independent_features_is_near_chance() -> None:
    n, k = 500, 10
    score = mutual_knn(_randn(n, 8, 37), _randn(n, 8, 38), k)
    assert score == pytest.approx(k / (n - 1), abs=0.01)
    assert mutual_knn(_randn(n, 8, 37), _randn(n, 8, 37) + 0.1 * _randn(n, 8, 39), k) > 0.5


# --- linear stitching ----------------------------------------------------------------------------

def test_stitching_recovers_an_affine_map_on_held_out_rows() -> None:
    x = _randn(300, 10, 40)
    y = x @ _randn(10, 6, 41) + _randn(1, 6, 42) * 5
    fit, held_out = torch.arange(200), torch.arange(200, 300)
    assert linear_stitching(x, y, fit, held_out) == pytest.approx(1.0, abs=1e-8)


def test_stitching_recovers_a_low_rank_map_from_fewer_rows_than_features() -> None:
    x = _randn(100, 4, 43) @ _randn(4, 50, 44)
    y = x @ _randn(50, 3, 45) + 1.0
    assert linear_stitching(x, y, torch.arange(30), torch.arange(30, 100)) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("m, d1", [(30, 8), (8, 30)])
def test_stitching_map_forms_agree(m: int, d1: int) -> None:
    x, y = _randn(m + 5, d1, 46), _randn(m + 5, 3, 47)
    fit, held_out = torch.arange(m), torch.arange(m, m + 5)
    x0, y0 = x[fit] - x[fit].mean(0), y[fit] - y[fit].mean(0)
    lam = 1e-3 * float((x0 ** 2).sum()) / d1
    primal = torch.linalg.solve(x0.T @ x0 + lam * torch.eye(d1, dtype=torch.float64), x0.T @ y0)
    expected = (x[held_out] - x[fit].mean(0)) @ primal
    assert torch.allclose(_hat(x, fit, held_out, 1e-3) @ y0, expected, atol=1e-10, rtol=0)


def test_stitching_of_independent_features_is_near_zero_or_negative() -> None:
    x, y = _randn(400, 10, 48), _randn(400, 6, 49)
    r2 = linear_stitching(x, y, torch.arange(300), torch.arange(300, 400))
    assert -0.3 < r2 < 0.05


def test_stitching_from_a_constant_representation_predicts_the_fit_mean() -> None:
    x, y = torch.ones(50, 3, dtype=torch.float64), _randn(50, 2, 50)
    fit, held_out = torch.arange(30), torch.arange(30, 50)
    expected = 1 - float(((y[held_out] - y[fit].mean(0)) ** 2).sum() / ((y[held_out] - y[held_out].mean(0)) ** 2).sum())
    for ridge in (0.0, 1e-6):
        assert linear_stitching(x, y, fit, held_out, ridge=ridge) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(linear_stitching(y, x, fit, held_out))


# --- pairwise ------------------------------------------------------------------------------------

def test_pairwise_symmetric_and_asymmetric() -> None:
    base = _randn(60, 6, 51)
    reps = [base, base @ _randn(6, 4, 52), _randn(60, 5, 53)]
    calls = []

    def counted(x: torch.Tensor, y: torch.Tensor) -> float:
        calls.append(1)
        return linear_cka(x, y)

    cka = pairwise(reps, counted)
    assert cka.shape == (3, 3) and cka.dtype == np.float64 and len(calls) == 6
    assert np.allclose(cka, cka.T) and np.allclose(np.diag(cka), 1.0)
    assert cka[0, 2] == linear_cka(reps[0], reps[2])

    fit, held_out = torch.arange(40), torch.arange(40, 60)
    stitch = pairwise(reps, lambda x, y: linear_stitching(x, y, fit, held_out), symmetric=False)
    for i in range(3):
        for j in range(3):
            assert stitch[i, j] == linear_stitching(reps[i], reps[j], fit, held_out)
    assert stitch[0, 1] == pytest.approx(1.0, abs=1e-8) and stitch[1, 0] < 0.99  # 6 → 4 is lossy


# --- bad input -----------------------------------------------------------------------------------

def test_representations_are_checked() -> None:
    x = _randn(10, 3, 0)
    with pytest.raises(ConfigError, match="x has 10 rows but y has 9"):
        linear_cka(x, _randn(9, 3, 1))
    with pytest.raises(LensTypeError, match="got list"):
        mutual_knn(x.tolist(), x)
    with pytest.raises(LensTypeError, match=r"shape \(10,\)"):
        linear_cka(x, x[:, 0])
    with pytest.raises(NonFiniteError, match="y holds NaN"):
        linear_cka(x, torch.where(x > 1, math.nan, x))
    with pytest.raises(ConfigError, match="1 rows"):
        linear_cka(x[:1], x[:1])


@pytest.mark.parametrize("k", [0, 10, 11, 2.5, True])
def test_mutual_knn_checks_k(k: object) -> None:
    x = _randn(10, 3, 0)
    with pytest.raises(ConfigError, match=rf"k must be .* n = 10 inputs, got {re.escape(repr(k))}$"):
        mutual_knn(x, x, k)


@pytest.mark.parametrize("rows, message", [
    (torch.tensor([0, 10]), "row 10, outside 0..9"),
    (torch.tensor([-1, 3]), "row -1, outside 0..9"),
    (torch.tensor([0, 1], dtype=torch.int32), "torch.int32"),
    (torch.tensor([], dtype=torch.int64), r"shape \(0,\)"),
    ([0, 1], "got list"),
])
def test_stitching_checks_rows(rows: object, message: str) -> None:
    x = _randn(10, 3, 0)
    with pytest.raises(ProgsynthError, match=message):
        linear_stitching(x, x, torch.arange(5), rows)
    with pytest.raises(ConfigError, match="fit_rows"):
        linear_stitching(x, x, rows, torch.arange(5))


def test_stitching_checks_ridge() -> None:
    x = _randn(10, 3, 0)
    with pytest.raises(ConfigError, match="ridge .* got -1"):
        linear_stitching(x, x, torch.arange(5), torch.arange(5, 10), ridge=-1.0)


def test_pairwise_checks_its_input() -> None:
    x = _randn(10, 3, 0)
    with pytest.raises(ConfigError, match="non-empty list"):
        pairwise([], linear_cka)
    with pytest.raises(ConfigError, match=r"reps\[2\] has 9 rows but reps\[0\] has 10"):
        pairwise([x, x, x[:9]], linear_cka)
    with pytest.raises(LensTypeError, match=r"reps\[1\]"):
        pairwise([x, "x"], linear_cka)
    with pytest.raises(ConfigError, match="callable"):
        pairwise([x], "cka")


def test_the_matrices_at_once_equal_the_pairwise_measures() -> None:
    base = _randn(60, 5, 70)
    reps = [base @ _randn(5, 12, 71) + 0.1 * _randn(60, 12, 72), _randn(60, 7, 73), base, torch.ones(60, 3)]
    fit, held_out = torch.arange(40), torch.arange(40, 60)
    together = similarity_matrices(reps, 6, fit, held_out)
    np.testing.assert_allclose(together["cka"], pairwise(reps, linear_cka), atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(together["knn"], pairwise(reps, lambda x, y: mutual_knn(x, y, 6)), atol=1e-15)
    expected = pairwise(reps, lambda x, y: linear_stitching(x, y, fit, held_out), symmetric=False)
    np.testing.assert_allclose(together["stitching"], expected, atol=1e-12, equal_nan=True)
    assert np.isnan(together["cka"][3]).all() and np.isnan(together["stitching"][:, 3]).all()
    assert np.isnan(similarity_matrices(reps[:2], 3)["stitching"]).all()
    with pytest.raises(ConfigError, match="reps\\[1\\] has 59 rows"):
        similarity_matrices([base, base[1:]], 3)
    with pytest.raises(ConfigError, match="got 60"):
        similarity_matrices([base, base], 60)
