"""The compiled weighted row sums (models.rowsum): values and gradients against embedding_bag and
finite differences, under torch.func, the same bits with any thread count, where it steps aside,
and bad row indices. Where the kernel was not built (no C compiler at install) these tests skip
saying so; under CI (the CI variable set, as .ci/run does) they fail instead, since that machine has
gcc."""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, jvp, vjp, vmap

from progsynth.models import rowsum
from progsynth.models.rowsum import ROWSUM_BACKEND, row_sum, usable


@pytest.fixture(autouse=True)
def kernel():
    """Skip (or, under CI, fail) when the kernel was not built."""
    if ROWSUM_BACKEND != "compiled":
        reason = "progsynth.models._rowsum was not built (no C compiler at install)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)


def _case(n: int, k: int, n_rows: int, width: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(n_rows, width, generator=g, dtype=dtype)
    rows = torch.randint(0, n_rows, (n, k), generator=g)
    weights = torch.randn(n, k, generator=g, dtype=dtype)
    cotangent = torch.randn(n, width, generator=g, dtype=dtype)
    return table, rows, weights, cotangent


def _reference(table, rows, weights, cotangent):
    """Value and gradients by embedding_bag and autograd."""
    table, weights = table.clone().requires_grad_(), weights.clone().requires_grad_()
    out = torch.nn.functional.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")
    return (out.detach(), *torch.autograd.grad(out, (table, weights), cotangent))


def _kernel(table, rows, weights, cotangent):
    table, weights = table.clone().requires_grad_(), weights.clone().requires_grad_()
    out = row_sum(table, rows, weights)
    return (out.detach(), *torch.autograd.grad(out, (table, weights), cotangent))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), k=st.integers(1, 14), n_rows=st.integers(1, 40), width=st.integers(1, 300),
       double=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_embedding_bag(n, k, n_rows, width, double, seed):
    """Every width (whole blocks, a partial last block, narrower than a block), float32 and float64."""
    dtype = torch.float64 if double else torch.float32
    tol = 1e-12 if double else 1e-4
    case = _case(n, k, n_rows, width, dtype, seed)
    for mine, theirs in zip(_kernel(*case), _reference(*case)):
        assert mine.dtype == dtype and mine.shape == theirs.shape
        assert torch.allclose(mine, theirs, atol=tol, rtol=tol)


def test_gradcheck_float64():
    table, rows, weights, _ = _case(9, 5, 7, 70, torch.float64)
    assert torch.autograd.gradcheck(lambda t, w: row_sum(t, rows, w),
                                    (table.requires_grad_(), weights.requires_grad_()))


def test_under_grad_and_vjp_as_without():
    """core.Learner differentiates through torch.func.vjp, the tests through grad: one transform."""
    table, rows, weights, cotangent = _case(50, 13, 30, 200, torch.float64)
    expected = _reference(table, rows, weights, cotangent)
    out, pullback = vjp(lambda t, w: row_sum(t, rows, w), table, weights)
    for mine, theirs in zip((out, *pullback(cotangent)), expected):
        assert torch.allclose(mine, theirs, atol=1e-12)
    grads = grad(lambda t, w: (row_sum(t, rows, w) * cotangent).sum(), argnums=(0, 1))(table, weights)
    for mine, theirs in zip(grads, expected[1:]):
        assert torch.allclose(mine, theirs, atol=1e-12)


def test_same_bits_with_any_thread_count():
    """Columns are cut into fixed parts, so 1, 2 or 3 threads give identical values and gradients."""
    case = _case(300, 13, 100, 625, torch.float32)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(_kernel(*case))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_usable_only_where_the_kernel_sees_plain_memory():
    x = torch.randn(4, 3)
    assert usable(x, x) and usable(x.double())
    assert not usable(x.half()) and not usable(x, x.double()) and not usable(x.long())
    seen = {}

    def record(name):
        def f(t):
            seen[name] = usable(t)
            return t.sum()
        return f

    grad(record("grad"))(x)
    vmap(record("vmap"))(x)
    jvp(record("jvp"), (x,), (x,))
    grad(grad(record("grad of grad")))(torch.tensor(1.0))
    assert seen == {"grad": True, "vmap": False, "jvp": False, "grad of grad": False}


@pytest.mark.parametrize("bad", [-1, 7])
def test_row_out_of_range_is_one_clear_error(bad):
    table, rows, weights, _ = _case(5, 3, 7, 10, torch.float32)
    rows[2, 1] = bad
    with pytest.raises(ValueError, match=f"row index {bad} out of range \\[0, 7\\)"):
        row_sum(table, rows, weights)


def test_backward_is_once_differentiable():
    table, rows, weights, _ = _case(5, 3, 7, 10, torch.float64)
    table.requires_grad_()
    (g,) = torch.autograd.grad(row_sum(table, rows, weights).sum(), table, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        g.sum().backward()


def test_parts_cover_the_columns_in_whole_blocks():
    for width in (1, 63, 64, 113, 512, 625, 4096):
        parts = rowsum._column_parts(width)
        assert parts[0][0] == 0 and parts[-1][1] == width and len(parts) <= rowsum.PARTS
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert all(start % rowsum.BLOCK == 0 for start, _ in parts)


def test_pullback_under_vmap_as_jacrev_does():
    """A pullback recorded under one vjp and then vmapped over cotangents (jacrev, the NTK)."""
    table, rows, weights, _ = _case(6, 4, 5, 70, torch.float64)
    mine = torch.func.jacrev(lambda t, w: row_sum(t, rows, w), argnums=(0, 1))(table, weights)
    theirs = torch.func.jacrev(
        lambda t, w: torch.nn.functional.embedding_bag(rows, t, per_sample_weights=w, mode="sum"), argnums=(0, 1)
    )(table, weights)
    for a, b in zip(mine, theirs):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-12)
