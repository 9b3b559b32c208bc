"""Bottom-up enumeration of a grammar's programs by size, pruned by observational equivalence.

Levels. Size counts nodes (``expression.size``). Level 1 is the terminals; level n is every unary
symbol applied to the kept programs of level n − 1, then every binary operation applied to pairs
(kept of size i, kept of size j) with i + j = n − 1. A commutative operation takes one order
only: pairs with i < j, and unordered pairs (left index ≤ right index) when i = j; its other
order computes the same values, so no behaviour is lost.

Order. Within a level, candidates come in this fixed order: unary symbols in grammar order, each
over its operands in id order; then binary operations in grammar order, for each the left sizes
i = 1, 2, ..., and for each (i, j) the pairs in lexicographic (left id, right id) order. Ids
number the kept programs by size, then in this order (terminals first, in grammar order).

Evaluation. Every candidate is evaluated on all training inputs at once, a block of candidates
per array operation (``search.kernels``): a tile of left rows × right rows is one broadcast
operation, tiles bounded by ``TILE_CANDIDATES`` candidates and ``TILE_ELEMENTS`` values. Tiles
never split a left row's run of right operands except into consecutive blocks, so the order above
holds whatever the tile sizes.

Pruning. A candidate is kept only if its value row on the training inputs was not produced
before, at a smaller size or earlier in the level's order: one program per behaviour, the first
found (``hashing.KeySet`` on 128-bit row keys; see ``search.hashing`` for the collision bound).
The programs of the last level (``max_size``) are checked and counted but not stored.

Consistent programs. Every candidate whose training row equals the labels is recorded before
pruning (they all share one row, so pruning would keep one), as a compact reference (symbol,
child ids), up to ``max_consistent``. Since candidates are built only from kept subprograms, the
recorded set is "every program, up to one order of each commutative operation, whose proper
subprograms are each the first program of its behaviour on the training inputs", and the
posterior (``search.posterior``) is over that set.

Best partial fit. The kept program with the most training inputs right (ties: fewer description
bits, then earlier); pruned candidates repeat a kept row, so kept rows suffice.

Guards. Before the levels whose candidates exceed the pilot budget (``PILOT_CANDIDATES``, or
``max_candidates`` when smaller, so that a small budget refuses rather than stops), and also when
the pilot levels run out of memory, the remaining cost is extrapolated from the exact counts so
far (``search.estimate``); a bound that would evaluate more than ``max_candidates`` candidates or
need more than ``max_memory_bytes`` is refused with a ``ConfigError`` naming the estimate. Then, before every level, its exact candidate
count (from the kept counts) is compared with the candidates left in the budget, and while a
level runs the bytes held are compared with ``max_memory_bytes``; either stops the search, which
returns what was found up to the previous size with ``stopped_at`` set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from progsynth.errors import ConfigError
from progsynth.search.estimate import CONSISTENT_BYTES, REF_BYTES, Estimate, estimate, level_candidates
from progsynth.search.grammar import Grammar
from progsynth.search.hashing import KeySet, row_keys
from progsynth.search.kernels import Kernel
from progsynth.tasks.expression import Expr, Op, Pow

__all__ = ["SizeCount", "ProgramRefs", "ProgramTable", "Enumeration", "enumerate_programs",
           "Progress", "PILOT_CANDIDATES", "TILE_CANDIDATES", "TILE_ELEMENTS", "BITS_DECIMALS"]

PILOT_CANDIDATES = 1_000_000
"""Levels are enumerated without an estimate while the candidates so far stay within this."""
TILE_CANDIDATES = 1 << 16
"""Most candidates evaluated (and hashed, and inserted) per tile."""
TILE_ELEMENTS = 1 << 21
"""Most values (candidates × row width) per tile."""
BITS_DECIMALS = 9
"""Description lengths are compared rounded to this many decimals, so that the same multiset of
symbols summed in another order ties exactly."""
_MAX_ID = np.iinfo(np.int32).max

Progress = Callable[[int, int, int], None]
"""progress(size, candidates so far, distinct behaviours kept so far), after each tile."""


@dataclass(frozen=True)
class SizeCount:
    """Counts of one size: candidates evaluated, distinct behaviours kept, consistent programs."""

    size: int
    candidates: int
    kept: int
    consistent: int

    def to_dict(self) -> dict[str, int]:
        return {"size": self.size, "candidates": self.candidates, "kept": self.kept, "consistent": self.consistent}


@dataclass(frozen=True)
class ProgramRefs:
    """Programs as references: symbol index, child ids (−1: none), size and description bits."""

    sym: np.ndarray
    left: np.ndarray
    right: np.ndarray
    size: np.ndarray
    bits: np.ndarray

    def __len__(self) -> int:
        return len(self.sym)

    def take(self, index: Any) -> ProgramRefs:
        return ProgramRefs(self.sym[index], self.left[index], self.right[index], self.size[index], self.bits[index])

    @staticmethod
    def empty() -> ProgramRefs:
        return ProgramRefs(np.zeros(0, np.int16), np.zeros(0, np.int32), np.zeros(0, np.int32),
                           np.zeros(0, np.int16), np.zeros(0, np.float64))

    @staticmethod
    def concat(parts: list[ProgramRefs]) -> ProgramRefs:
        if not parts:
            return ProgramRefs.empty()
        return ProgramRefs(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in ("sym", "left", "right", "size", "bits")))


class ProgramTable:
    """The kept programs of the stored levels, by id: how to rebuild and re-run any reference."""

    def __init__(self, grammar: Grammar, refs: ProgramRefs):
        self.grammar, self.refs = grammar, refs
        self._n_terminals, self._n_unary = len(grammar.terminals), len(grammar.unary)
        self._names = grammar.symbols

    def expr(self, sym: int, left: int, right: int) -> Expr:
        """The tree of the program with root symbol ``sym`` and children ids ``left``, ``right``."""
        if sym < self._n_terminals:
            return self.grammar.terminals[sym]
        name = self._names[sym]
        if sym < self._n_terminals + self._n_unary:
            child = self.expr_of(int(left))
            return Pow(child, int(name[3:])) if name.startswith("pow") else Op(name, (child,))
        return Op(name, (self.expr_of(int(left)), self.expr_of(int(right))))

    def expr_of(self, program_id: int) -> Expr:
        """The tree of a kept program."""
        r = self.refs
        return self.expr(int(r.sym[program_id]), int(r.left[program_id]), int(r.right[program_id]))

    def rows(self, kernel: Kernel, programs: ProgramRefs) -> np.ndarray:
        """Value rows of ``programs`` (references into this table) on ``kernel``'s inputs: the
        subprograms they need are evaluated once each, size by size, one array operation per
        (size, symbol)."""
        r = self.refs
        children = np.concatenate([programs.left, programs.right])
        needed = np.unique(children[children >= 0]).astype(np.int64)
        frontier = needed
        while frontier.size:
            more = np.concatenate([r.left[frontier], r.right[frontier]])
            more = np.setdiff1d(more[more >= 0], needed)
            needed, frontier = np.union1d(needed, more), more
        rows = self._apply(kernel, r.take(needed), needed, np.zeros((0, kernel.width), kernel.dtype), by_size=True)
        return self._apply(kernel, programs, needed, rows, by_size=False)

    def _apply(self, kernel: Kernel, programs: ProgramRefs, known_ids: np.ndarray, known_rows: np.ndarray,
               by_size: bool) -> np.ndarray:
        """Rows of ``programs``, whose children are among ``known_ids`` (rows ``known_rows``) or,
        when ``by_size``, among ``programs`` themselves (which are then sorted by id)."""
        out = np.zeros((len(programs), kernel.width), dtype=kernel.dtype)
        terminals = kernel.terminal_rows()
        groups = np.unique(programs.size) if by_size else [None]
        ids_all = known_ids
        for size in groups:
            rows_of = np.flatnonzero(programs.size == size) if by_size else np.arange(len(programs))
            lookup_rows = out if by_size else known_rows
            for sym in np.unique(programs.sym[rows_of]):
                at = rows_of[programs.sym[rows_of] == sym]
                if sym < self._n_terminals:
                    out[at] = terminals[sym]
                    continue
                name = self._names[sym]
                left = lookup_rows[np.searchsorted(ids_all, programs.left[at])]
                if sym < self._n_terminals + self._n_unary:
                    out[at] = kernel.unary(name, left)
                else:
                    right = lookup_rows[np.searchsorted(ids_all, programs.right[at])]
                    result = np.empty((len(at), kernel.width), dtype=kernel.dtype)
                    kernel.binary(name, kernel.prepare_left(name, left), kernel.prepare_right(name, right), result)
                    out[at] = result
        return out


@dataclass
class Enumeration:
    """What ``enumerate_programs`` found."""

    table: ProgramTable
    counts: list[SizeCount]
    consistent: ProgramRefs
    consistent_dropped: int
    best: ProgramRefs | None
    """The best partial fit (one reference), or None when nothing was enumerated."""
    best_correct: int
    n_train: int
    stopped_at: int | None
    stop_reason: str | None
    """Why the search stopped early: a sentence fragment, or None."""
    estimate: Estimate | None
    seconds: float
    candidates: int = field(init=False)
    kept: int = field(init=False)

    def __post_init__(self) -> None:
        self.candidates = sum(c.candidates for c in self.counts)
        self.kept = sum(c.kept for c in self.counts)


class _Stop(Exception):
    def __init__(self, reason: str):
        self.reason = reason


class _Level:
    """The kept programs of one size (rows None once not needed or for the last level)."""

    def __init__(self, rows: np.ndarray | None, refs: ProgramRefs, offset: int):
        self.rows, self.refs, self.offset = rows, refs, offset

    def __len__(self) -> int:
        return len(self.refs)


class _Enumerator:
    def __init__(self, grammar: Grammar, kernel: Kernel, target: np.ndarray, max_size: int, max_candidates: int,
                 max_memory_bytes: int, max_consistent: int, progress: Progress | None):
        self.grammar, self.kernel, self.target, self.max_size = grammar, kernel, target, max_size
        self.max_candidates, self.max_memory, self.max_consistent = max_candidates, max_memory_bytes, max_consistent
        self.progress = progress
        self.symbol_bits = np.array(grammar.symbol_bits, dtype=np.float64)
        self.row_bytes = kernel.width * kernel.dtype.itemsize
        self.keys = KeySet()
        t1, t2 = row_keys(kernel.words(target[None, :].copy()))
        self.t1, self.t2 = t1[0], t2[0]
        self.levels: list[_Level] = []
        self.counts: list[SizeCount] = []
        self.consistent: list[ProgramRefs] = []
        self.n_consistent, self.dropped = 0, 0
        self.best: ProgramRefs | None = None
        self.best_correct, self.best_bits = -1, math.inf
        self.candidates_done, self.kept_done = 0, 0
        self.stored_bytes = 0

    # ---- one level ---------------------------------------------------------------------------
    def run_level(self, n: int) -> None:
        store = n < self.max_size
        self.level_n, self.store = n, store
        self.pending: list[tuple[np.ndarray, ProgramRefs]] = []
        self.pending_consistent: list[ProgramRefs] = []
        self.level_candidates = self.level_kept = self.level_consistent = self.level_dropped = 0
        self.level_best: tuple[int, float, ProgramRefs] | None = None
        self.pending_bytes = 0
        offset = self.kept_done
        if n == 1:
            rows = self.kernel.terminal_rows()
            count = len(rows)
            self._tile(rows, None, np.arange(count, dtype=np.int16), None, None, 0, 0, 1, no_children=True)
        else:
            self._unary_level(n)
            self._binary_level(n)
        rows = np.concatenate([r for r, _ in self.pending]) if self.pending else None
        refs = ProgramRefs.concat([p for _, p in self.pending])
        if not store:
            rows = None
        self.levels.append(_Level(rows, refs if store else ProgramRefs.empty(), offset))
        self.stored_bytes += self.pending_bytes
        self.counts.append(SizeCount(n, self.level_candidates, self.level_kept, self.level_consistent))
        self.consistent.extend(self.pending_consistent)
        self.n_consistent += sum(len(c) for c in self.pending_consistent)
        self.dropped += self.level_dropped
        if self.level_best is not None:
            correct, bits, ref = self.level_best
            if correct > self.best_correct or (correct == self.best_correct and bits < self.best_bits):
                self.best, self.best_correct, self.best_bits = ref, correct, bits
        self.candidates_done += self.level_candidates
        self.kept_done += self.level_kept

    def _unary_level(self, n: int) -> None:
        source = self.levels[n - 2]
        if source.rows is None or not len(source):
            return
        start = len(self.grammar.terminals)
        step = self._tile_rows(1)
        for u, name in enumerate(self.grammar.unary):
            for l0 in range(0, len(source), step):
                block = source.rows[l0:l0 + step]
                self._tile(self.kernel.unary(name, block), None, np.int16(start + u), source, None, l0, 0, 1)

    def _tile_rows(self, per_row: int) -> int:
        cap = min(TILE_CANDIDATES, max(1, TILE_ELEMENTS // self.kernel.width))
        return max(1, cap // max(per_row, 1))

    def _binary_level(self, n: int) -> None:
        first = len(self.grammar.terminals) + len(self.grammar.unary)
        cap = self._tile_rows(1)
        for b, name in enumerate(self.grammar.binary):
            sym = np.int16(first + b)
            commutative = self.grammar.commutative(name)
            for i in range(1, n - 1):
                j = n - 1 - i
                if commutative and i > j:
                    continue
                left, right = self.levels[i - 1], self.levels[j - 1]
                if not len(left) or not len(right):
                    continue
                triangle = commutative and i == j
                prepared_right = self.kernel.prepare_right(name, right.rows)
                n_left, n_right = len(left), len(right)
                l0 = 0
                while l0 < n_left:
                    r_start = l0 if triangle else 0
                    span = n_right - r_start
                    if span <= 0:
                        break
                    if span <= cap:
                        l1 = min(n_left, l0 + max(1, cap // span))
                        self._pair_tile(name, sym, left, right, prepared_right, l0, l1, r_start, n_right, triangle)
                        l0 = l1
                    else:
                        for r0 in range(r_start, n_right, cap):
                            self._pair_tile(name, sym, left, right, prepared_right, l0, l0 + 1, r0,
                                            min(n_right, r0 + cap), False)
                        l0 += 1

    def _pair_tile(self, name: str, sym: np.int16, left: _Level, right: _Level, prepared_right: np.ndarray,
                   l0: int, l1: int, r0: int, r1: int, triangle: bool) -> None:
        bl, nr = l1 - l0, r1 - r0
        lhs = self.kernel.prepare_left(name, left.rows[l0:l1])
        out = np.empty((bl, nr, self.kernel.width), dtype=self.kernel.dtype)
        self.kernel.binary(name, lhs[:, None, :], prepared_right[None, r0:r1, :], out)
        valid = None
        if triangle and bl > 1:  # row l0 + a pairs with right ids ≥ l0 + a, i.e. columns c ≥ a
            valid = (np.arange(nr)[None, :] >= np.arange(bl)[:, None]).reshape(-1)
        self._tile(out.reshape(bl * nr, -1), valid, sym, left, right, l0, r0, nr)

    # ---- one tile ----------------------------------------------------------------------------
    def _tile(self, rows: np.ndarray, valid: np.ndarray | None, sym: Any, left: _Level | None,
              right: _Level | None, l0: int, r0: int, nr: int, no_children: bool = False) -> None:
        k1, k2 = row_keys(self.kernel.words(rows))
        pos = None
        if valid is not None:
            pos = np.flatnonzero(valid)
            k1, k2 = k1[pos], k2[pos]
        self.level_candidates += len(k1)

        def refs_at(at: np.ndarray) -> ProgramRefs:
            tile_pos = at if pos is None else pos[at]
            if no_children:
                lid = rid = np.full(len(at), -1, dtype=np.int32)
                syms = sym[tile_pos]
                bits = self.symbol_bits[syms]
            elif right is None:
                local = l0 + tile_pos
                lid = (left.offset + local).astype(np.int32)
                rid = np.full(len(at), -1, dtype=np.int32)
                syms = np.full(len(at), sym, dtype=np.int16)
                bits = self.symbol_bits[sym] + left.refs.bits[local]
            else:
                local_l, local_r = l0 + tile_pos // nr, r0 + tile_pos % nr
                lid = (left.offset + local_l).astype(np.int32)
                rid = (right.offset + local_r).astype(np.int32)
                syms = np.full(len(at), sym, dtype=np.int16)
                bits = self.symbol_bits[sym] + left.refs.bits[local_l] + right.refs.bits[local_r]
            sizes = np.full(len(at), self.level_n, dtype=np.int16)
            return ProgramRefs(syms.astype(np.int16), lid, rid, sizes, bits)

        hits = np.flatnonzero((k1 == self.t1) & (k2 == self.t2))
        if hits.size:
            hit_rows = rows[hits if pos is None else pos[hits]]
            hits = hits[(hit_rows == self.target).all(axis=1)]
            self.level_consistent += len(hits)
            room = self.max_consistent - self.n_consistent - sum(len(c) for c in self.pending_consistent)
            if room < len(hits):
                self.level_dropped += len(hits) - max(room, 0)
                hits = hits[:max(room, 0)]
            if hits.size:
                self.pending_consistent.append(refs_at(hits))

        new = np.flatnonzero(self.keys.insert_first(k1, k2))
        if new.size:
            kept_rows = rows[new if pos is None else pos[new]]
            refs = refs_at(new)
            correct = self.kernel.correct(kept_rows, self.target)
            top = int(correct.max())
            if self.level_best is None or top >= self.level_best[0]:
                ties = np.flatnonzero(correct == top)
                rounded = np.round(refs.bits[ties], BITS_DECIMALS)
                pick = int(ties[np.argmin(rounded)])
                bits = float(rounded.min())
                if self.level_best is None or top > self.level_best[0] or bits < self.level_best[1]:
                    self.level_best = (top, bits, refs.take(slice(pick, pick + 1)))
            self.level_kept += len(new)
            if self.store:
                self.pending.append((kept_rows, refs))
                self.pending_bytes += len(new) * (self.row_bytes + REF_BYTES)
        held = (self.stored_bytes + self.pending_bytes + self.keys.nbytes
                + (self.n_consistent + self.level_consistent) * CONSISTENT_BYTES)
        if held > self.max_memory:
            raise _Stop(f"size {self.level_n} would hold more than max_memory_bytes = {self.max_memory:.3g} bytes")
        if self.progress is not None:
            self.progress(self.level_n, self.candidates_done + self.level_candidates, self.kept_done + self.level_kept)


def _behaviours(grammar: Grammar, n: int) -> float:
    """How many distinct value rows n inputs allow (p^n or 2^n; inf when beyond a float)."""
    base = grammar.p if grammar.domain == "zp" else 2
    log = n * math.log2(base)
    return math.inf if log > 1000 else float(base) ** n


def _refusal(est: Estimate, max_size: int, max_candidates: int, max_memory: int) -> ConfigError | None:
    how = (f"estimated from exact counts up to size {est.exact_up_to}"
           + (f", kept behaviours growing ×{est.growth:.3g} per size" if est.growth is not None
              else ", assuming no pruning"))
    if est.candidates > max_candidates:
        return ConfigError(f"max_size {max_size} would evaluate about {est.candidates:.2g} candidate programs "
                           f"({how}); the limit is {max_candidates:.3g} (max_candidates): lower max_size or "
                           f"raise the limit")
    if est.memory_bytes > max_memory:
        return ConfigError(f"max_size {max_size} would need about {est.memory_bytes / 2**30:.3g} GiB "
                           f"({how}); the limit is {max_memory / 2**30:.3g} GiB (max_memory_bytes): lower "
                           f"max_size or raise the limit")
    return None


def enumerate_programs(grammar: Grammar, kernel: Kernel, target: np.ndarray, max_size: int,
                       max_candidates: int, max_memory_bytes: int, max_consistent: int,
                       progress: Progress | None = None) -> Enumeration:
    """Enumerate sizes 1..max_size (module docstring) against the training ``target`` row of
    ``kernel``'s inputs. Arguments are validated by the caller (``search.engine``)."""
    start = time.perf_counter()
    e = _Enumerator(grammar, kernel, target, max_size, max_candidates, max_memory_bytes, max_consistent, progress)
    est: Estimate | None = None
    stopped_at, reason = None, None
    chunk_bytes = TILE_ELEMENTS * 8 * 4
    # The pilot never runs past the candidate budget, so that a budget smaller than the pilot still
    # refuses a bound (with the estimate) rather than stopping part way.
    pilot = min(PILOT_CANDIDATES, max_candidates)

    def checked_estimate() -> Estimate:
        """The estimate from the exact counts so far; raises the refusal if it is over a budget."""
        found = estimate(grammar, [c.kept for c in e.counts], [c.candidates for c in e.counts], max_size,
                         _behaviours(grammar, kernel.n), e.row_bytes, max_consistent, chunk_bytes)
        refusal = _refusal(found, max_size, max_candidates, max_memory_bytes)
        if refusal is not None:
            raise refusal
        return found

    for n in range(1, max_size + 1):
        kept = [c.kept for c in e.counts]
        upcoming = level_candidates(grammar, kept, n)
        if est is None and (e.candidates_done + upcoming > pilot or n == max_size):
            est = checked_estimate()
            e.keys.reserve(int(sum(est.kept_by_size)))
        if e.candidates_done + upcoming > max_candidates or e.kept_done + upcoming > _MAX_ID:
            stopped_at = n
            reason = (f"size {n} would evaluate {upcoming:.3g} more candidate programs, past the budget of "
                      f"max_candidates = {max_candidates:.3g} ({e.candidates_done:.3g} used)")
            break
        try:
            e.run_level(n)
        except _Stop as stop:
            if est is None:  # out of memory within the pilot: refuse if the estimate says so too
                est = checked_estimate()
            stopped_at, reason = n, stop.reason
            break
    refs = ProgramRefs.concat([lv.refs for lv in e.levels])
    return Enumeration(ProgramTable(grammar, refs), e.counts, ProgramRefs.concat(e.consistent), e.dropped,
                       e.best, max(e.best_correct, 0), kernel.n, stopped_at, reason, est,
                       time.perf_counter() - start)
