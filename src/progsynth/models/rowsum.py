"""Weighted sums of table rows, ``out[i] = Σ_k weights[i, k] · table[rows[i, k]]``, with a compiled
forward and a hand-written reverse derivative.

The transformer's fast path spends its per-example work before the MLP in exactly this operation:
every example's MLP input and direct logits are a sum of a few table rows (one per position and
head) weighted by its attention pattern (``models.transformer``). ``embedding_bag`` computes the
forward as fast, but its backward, a scatter of weighted gradient rows into the table, runs several
times slower than the forward. This kernel (``_rowsum.c``) gathers instead of scattering and takes
the columns in blocks that stay in cache, in forward and backward alike; it cuts the columns into
fixed parts that ``torch.get_num_threads()`` threads share out, each writing its own columns, so
results do not depend on the thread count.

The kernel sees raw memory, so it serves only where nothing wraps the tensors: plain autograd, or
one ``torch.func.grad``/``vjp`` level (which hands ``autograd.Function`` unwrapped tensors), the
way ``core.Learner`` trains. Under ``vmap``, ``jvp``, nested transforms, on another device or
without the compiled extension, ``usable`` is False and the caller computes the same function its
own way (the transformer with dense products). ``ROWSUM_BACKEND`` says whether the extension loaded.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import torch

try:
    from progsynth.models import _rowsum
except ImportError:  # built without a C compiler (setup.py: the extension is optional)
    _rowsum = None

__all__ = ["ROWSUM_BACKEND", "BLOCK", "usable", "row_sum"]

ROWSUM_BACKEND = "compiled" if _rowsum is not None else "none"
"""``"compiled"`` when the C kernel loaded, ``"none"`` when ``row_sum`` is unavailable."""

BLOCK = 64
"""Columns per block in the kernel (64 float32, two blocks of float64): parts are whole blocks."""

_pool: ThreadPoolExecutor | None = None


def _transforms() -> list[str]:
    """The torch.func transforms active now, innermost last (e.g. ``["Vmap", "Grad"]``)."""
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return [interpreter.key().name for interpreter in retrieve_all_functorch_interpreters()]


def usable(*tensors: torch.Tensor) -> bool:
    """Whether ``row_sum`` can run on these tensors now (module docstring): the extension loaded,
    CPU tensors of one float dtype (float32 or float64), and at most one grad/vjp transform active."""
    if _rowsum is None:
        return False
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64) or any(t.dtype != dtype or t.device.type != "cpu" for t in tensors):
        return False
    return _transforms() in ([], ["Grad"])


PARTS = 4
"""The columns are cut into this many parts (whole blocks), fixed whatever the thread count, and the
threads share the parts out: the dot products for the weights' gradient are summed part by part in a
fixed order, so every result is the same, bit for bit, with any number of threads."""


def _column_parts(width: int) -> list[tuple[int, int]]:
    """Split [0, width) into up to ``PARTS`` ranges of whole blocks (the last may end in a partial one)."""
    blocks = -(-width // BLOCK)
    parts = max(1, min(PARTS, blocks))
    bounds = [min(width, BLOCK * (blocks * i // parts)) for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _run(call: Callable[[int, int, int], Any], parts: list[tuple[int, int]]) -> None:
    """Run ``call(index, start, stop)`` for each part, on up to ``torch.get_num_threads()`` threads."""
    global _pool
    threads = min(torch.get_num_threads(), len(parts))
    if threads == 1:
        for index, (start, stop) in enumerate(parts):
            call(index, start, stop)
        return
    if _pool is None:  # threads start on demand, up to one per core
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="rowsum")
    indexed = list(enumerate(parts))

    def work(t: int) -> None:  # thread t takes parts t, t + threads, ...
        for index, (start, stop) in indexed[t::threads]:
            call(index, start, stop)

    for future in [_pool.submit(work, t) for t in range(threads)]:
        future.result()


def _buffer(t: torch.Tensor) -> Any:
    """A C-contiguous tensor's memory as a buffer the kernel can read or write."""
    return t.detach().numpy()


class _RowSum(torch.autograd.Function):
    """out = Σ_k weights[:, k] · table[rows[:, k]]; backward: the kernel's reverse derivative."""

    @staticmethod
    def forward(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        table, rows, weights = table.contiguous(), rows.contiguous(), weights.contiguous()
        (n, k), (n_rows, width) = rows.shape, table.shape
        out = torch.empty(n, width, dtype=table.dtype)
        buffers = _buffer(table), _buffer(rows), _buffer(weights), _buffer(out)
        _run(lambda _, start, stop: _rowsum.forward(*buffers, n, k, n_rows, width, start, stop, table.element_size()),
             _column_parts(width))
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        table, rows, weights = inputs
        ctx.save_for_backward(table, rows, weights)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, torch.Tensor]:
        table, rows, weights = ctx.saved_tensors
        grad_table, grad_weights = _RowSumBackward.apply(table, rows, weights, grad_out)
        return grad_table, None, grad_weights


class _RowSumBackward(torch.autograd.Function):
    """The reverse derivative as a Function of its own: under ``torch.func.grad`` the backward above
    runs on wrapped tensors, and applying a Function is what hands the kernel unwrapped ones."""

    @staticmethod
    def forward(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor,
                grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        table, rows, weights, grad_out = (t.contiguous() for t in (table, rows, weights, grad_out))
        (n, k), (n_rows, width) = rows.shape, table.shape
        grad_table = torch.empty_like(table)
        parts = _column_parts(width)
        grad_weights = torch.empty(len(parts), n, k, dtype=table.dtype)  # one partial sum per part
        common = _buffer(table), _buffer(rows), _buffer(weights), _buffer(grad_out), _buffer(grad_table)

        def part(index: int, start: int, stop: int) -> None:
            _rowsum.backward(*common, _buffer(grad_weights[index]), n, k, n_rows, width, start, stop,
                             table.element_size())

        _run(part, parts)
        return grad_table, grad_weights.sum(dim=0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        pass

    @staticmethod
    def vmap(info: Any, in_dims: tuple, table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor,
             grad_out: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[int, int]]:
        """A pullback recorded outside vmap and called under it (``torch.func.jacrev`` vmaps the
        pullback over cotangents): one kernel call per batch element."""
        batched = [
            t.movedim(dim, 0) if dim is not None else t.expand(info.batch_size, *t.shape)
            for t, dim in zip((table, rows, weights, grad_out), in_dims)
        ]
        grads = [_RowSumBackward.forward(*args) for args in zip(*batched)]
        return (torch.stack([g[0] for g in grads]), torch.stack([g[1] for g in grads])), (0, 0)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> None:
        raise NotImplementedError("row_sum is differentiable once; usable() is False under nested transforms")


def row_sum(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``out[i] = Σ_k weights[i, k] · table[rows[i, k]]``: table (R, W), rows (N, K) int64 in
    [0, R), weights (N, K) → (N, W), differentiable in table and weights. Call only where
    ``usable(table, weights)``; a row index out of range raises ValueError."""
    return _RowSum.apply(table, rows.to(torch.int64), weights)
