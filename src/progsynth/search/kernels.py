"""Vectorised evaluation of a grammar's symbols on value rows: many programs per numpy call.

A *value row* holds one program's outputs on every input of a fixed list (the training inputs,
or the query inputs), so a block of programs is a 2-D array and one symbol applied to a block of
left rows and a block of right rows is one broadcast array operation on
``left[:, None, :]`` and ``right[None, :, :]``:

- **Z_p** (``ZpKernel``): residues as the smallest unsigned dtype that holds p − 1 (uint8 up to
  p = 256, then uint16, then uint32), the row padded with zeros to a whole number of 64-bit words
  (every operation maps 0, 0 to 0, so the padding stays zero and a row is hashed as words).
  Sums and differences are formed in a dtype that holds 2p − 1 and reduced by one
  ``minimum(x, x − p)`` (in unsigned arithmetic x − p wraps round to a large number when x < p);
  products are formed in a dtype that holds (p − 1)² and reduced by ``%``. Division is
  multiplication by the inverse table (``expression.inverses_mod``), whose entry for 0 is 0, so
  **x ÷ 0 = 0** and every program has a value on every input; ``expression.evaluate`` computes the
  same value there (and marks the input undefined). Powers use a table of x^k for p ≤ 2^20 and
  repeated squaring above. (The dtypes and the reductions were chosen by measurement against
  lookup tables of the p² products, float reciprocal tricks, Barrett reduction and torch; see
  ``benchmarks/search.py``.)
- **Bits** (``BitsKernel``): examples bit-packed 64 per uint64 word as in
  ``progsynth.core.boolean.pack`` (bit j of word k is example 64k + j); gates are numpy bitwise
  operations on word rows, and NOT clears the padding bits of the last word again.

Each binary symbol has a *prepared* form of its operands (e.g. the inverse of a divisor, p − y
for a subtrahend, a widened left operand), computed once per block rather than per pair.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from progsynth.core.boolean import WORD_BITS, pack, tail_mask
from progsynth.search.grammar import Grammar
from progsynth.tasks.expression import Var, inverses_mod, power_mod

__all__ = ["Kernel", "ZpKernel", "BitsKernel", "kernel_for", "POWER_TABLE_LIMIT"]

POWER_TABLE_LIMIT = 1 << 20
"""Largest p for which powers (and inverses) are looked up in tables of p entries."""


def _uint_for(largest: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"no unsigned dtype holds {largest}")


class Kernel:
    """What the enumeration needs from a domain (``ZpKernel``, ``BitsKernel``)."""

    dtype: np.dtype
    width: int
    """Elements of ``dtype`` per row (a whole number of 64-bit words)."""
    n: int
    """Number of inputs a row holds values for."""

    def terminal_rows(self) -> np.ndarray:
        """(n_terminals, width) rows of the grammar's terminals, in grammar order."""
        raise NotImplementedError

    def target_row(self, labels: np.ndarray) -> np.ndarray:
        """The row of the labels (validated values of the domain)."""
        raise NotImplementedError

    def unary(self, name: str, rows: np.ndarray) -> np.ndarray:
        """A unary symbol ('pow2', 'neg', 'not', ...) applied to each row of ``rows``."""
        raise NotImplementedError

    def prepare_left(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The left operand rows in the form ``binary`` wants for ``name``."""
        return rows

    def prepare_right(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The right operand rows in the form ``binary`` wants for ``name``."""
        return rows

    def binary(self, name: str, left: np.ndarray, right: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``name`` on prepared, broadcastable ``left`` and ``right``, written into ``out`` (of
        ``dtype`` and the broadcast shape); returns ``out``."""
        raise NotImplementedError

    def words(self, rows: np.ndarray) -> np.ndarray:
        """(rows, n_words) uint64 view of C-contiguous (rows, width) rows."""
        return rows.view(np.uint64)

    def correct(self, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        """int64 count, per row, of the inputs where it equals ``target``."""
        raise NotImplementedError

    def values(self, rows: np.ndarray) -> np.ndarray:
        """(rows, n) outputs: int64 residues, or 0/1 int64 for bits."""
        raise NotImplementedError


class ZpKernel(Kernel):
    """Residues mod p on the inputs ``env`` (name → int array of values in [0, p))."""

    def __init__(self, grammar: Grammar, env: Mapping[str, np.ndarray]):
        p = grammar.p
        self.grammar, self.p, self.env = grammar, p, env
        self.n = len(next(iter(env.values())))
        self.dtype = _uint_for(p - 1)
        self._sum = _uint_for(2 * p - 1)
        self._product = _uint_for((p - 1) ** 2)
        per_word = 8 // self.dtype.itemsize
        self.width = max(per_word, -(-self.n // per_word) * per_word)
        self._p = {d: d.type(p) for d in {self.dtype, self._sum, self._product}}
        self._tables: dict[str, np.ndarray] = {}

    def _row(self, values: np.ndarray) -> np.ndarray:
        row = np.zeros(self.width, dtype=self.dtype)
        row[: self.n] = values
        return row

    def terminal_rows(self) -> np.ndarray:
        out = np.zeros((len(self.grammar.terminals), self.width), dtype=self.dtype)
        for k, term in enumerate(self.grammar.terminals):
            out[k] = self._row(self.env[term.name] if isinstance(term, Var) else term.value % self.p)
        return out

    def target_row(self, labels: np.ndarray) -> np.ndarray:
        return self._row(labels)

    def _table(self, name: str) -> np.ndarray:
        if name not in self._tables:
            if name == "inverse":
                table = inverses_mod(self.p)
            else:
                k, x = int(name[3:]), np.arange(self.p, dtype=np.int64)
                table = power_mod(x, k, self.p)
            self._tables[name] = table.astype(self.dtype)
        return self._tables[name]

    def _reduce_sum(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """x in [0, 2p − 1) of the sum dtype → x mod p into ``out``."""
        if x is out:
            tmp = np.subtract(x, self._p[self._sum])
            return np.minimum(x, tmp, out=out)
        np.minimum(x, x - self._p[self._sum], out=x)
        np.copyto(out, x, casting="unsafe")
        return out

    def unary(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name == "neg":
            x = np.subtract(self._p[self._sum], rows, dtype=self._sum)
            return self._reduce_sum(x, np.empty(rows.shape, dtype=self.dtype))
        if self.p <= POWER_TABLE_LIMIT:
            return np.take(self._table(name), rows)
        return power_mod(rows.astype(np.int64), int(name[3:]), self.p).astype(self.dtype)

    def prepare_left(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name in ("add", "sub"):
            return rows.astype(self._sum, copy=False)
        return rows.astype(self._product, copy=False)

    def prepare_right(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name == "sub":  # x − y = x + (p − y); p − y lies in [1, p]
            return np.subtract(self._p[self._sum], rows, dtype=self._sum)
        if name == "div":
            if self.p <= POWER_TABLE_LIMIT:
                return np.take(self._table("inverse"), rows)
            return power_mod(rows.astype(np.int64), self.p - 2, self.p).astype(self.dtype)
        return rows

    def binary(self, name: str, left: np.ndarray, right: np.ndarray, out: np.ndarray) -> np.ndarray:
        if name in ("add", "sub"):
            if self._sum == self.dtype:
                np.add(left, right, out=out)
                return self._reduce_sum(out, out)
            return self._reduce_sum(np.add(left, right, dtype=self._sum), out)
        x = np.multiply(left, right, dtype=self._product)
        return np.remainder(x, self._p[self._product], out=out, casting="unsafe")

    def correct(self, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        return np.count_nonzero(rows[:, : self.n] == target[: self.n], axis=1).astype(np.int64)

    def values(self, rows: np.ndarray) -> np.ndarray:
        return rows[:, : self.n].astype(np.int64)


class BitsKernel(Kernel):
    """Bits bit-packed 64 examples per word, on the inputs ``env`` (name → bool array)."""

    def __init__(self, grammar: Grammar, env: Mapping[str, np.ndarray]):
        self.grammar, self.env = grammar, env
        self.n = len(next(iter(env.values())))
        self.dtype = np.dtype(np.uint64)
        self.width = max(1, -(-self.n // WORD_BITS))
        self._tail = tail_mask(self.n)
        self._valid = np.full(self.width, np.uint64(0xFFFF_FFFF_FFFF_FFFF), dtype=np.uint64)
        self._valid[-1] = self._tail

    def _row(self, bits: np.ndarray) -> np.ndarray:
        return np.asarray(pack(np.asarray(bits, dtype=bool).reshape(-1, 1)))[0]

    def terminal_rows(self) -> np.ndarray:
        rows = []
        for term in self.grammar.terminals:
            if isinstance(term, Var):
                rows.append(self._row(self.env[term.name]))
            else:
                rows.append(self._valid.copy() if term.value else np.zeros(self.width, dtype=np.uint64))
        return np.array(rows, dtype=np.uint64).reshape(len(rows), self.width)

    def target_row(self, labels: np.ndarray) -> np.ndarray:
        return self._row(labels)

    def unary(self, name: str, rows: np.ndarray) -> np.ndarray:  # 'not'
        out = np.invert(rows)
        out[:, -1] &= self._tail
        return out

    def binary(self, name: str, left: np.ndarray, right: np.ndarray, out: np.ndarray) -> np.ndarray:
        ufunc = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}[name]
        return ufunc(left, right, out=out)

    def words(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def correct(self, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        agree = np.bitwise_not(rows ^ target) & self._valid
        return np.bitwise_count(agree).sum(axis=1, dtype=np.int64)

    def values(self, rows: np.ndarray) -> np.ndarray:
        as_bytes = np.ascontiguousarray(rows).view(np.uint8).reshape(rows.shape[0], 8 * self.width)
        return np.unpackbits(as_bytes, axis=1, count=self.n, bitorder="little").astype(np.int64)


def kernel_for(grammar: Grammar, env: Mapping[str, np.ndarray]) -> Kernel:
    """The kernel of ``grammar``'s domain on the (validated) inputs ``env``."""
    return ZpKernel(grammar, env) if grammar.domain == "zp" else BitsKernel(grammar, env)

