"""128-bit keys of value rows, and a vectorised hash set that keeps the first of each key.

The enumeration (``search.enumerate``) prunes a candidate program when its outputs on the training
inputs equal those of a program seen before. Comparing whole rows is too slow, so each row
(a program's outputs, packed into 64-bit words) gets a key of two 64-bit hashes ``(k1, k2)``,
computed with different constants by the same multiply–mix chain over the row's words::

    h = seed;  for each word w:  h = (h ^ w) · C;  h ^= h >> 31;      then h = fmix64(h)

(``fmix64`` is MurmurHash3's 64-bit finaliser). Each step is a bijection of h, so two rows that
differ in their last word only never collide. Collision probability: modelling the two hashes as
independent random functions, a given pair of distinct rows gets equal keys with probability
2^-128, so a search that compares C candidates against N kept behaviours merges two different
behaviours by mistake with probability at most C·N / 2^128, e.g. below 3e-20 for C = 1e10 and
N = 1e9. (The model is the usual heuristic for multiply–mix hashes, not a proof.)

The lowest bit of k1 is set to 1, so a key has 127 free bits and the all-zero word can mark an
empty slot (the collision bound above becomes C·N / 2^127).

``KeySet`` is an open-addressing table (linear probing, at most half full) held in numpy arrays
and probed for a whole batch of keys per numpy call (one ``np.take`` of both key words per probe
round). ``KeySet.insert_first`` inserts a batch and says, for each key, whether it is the *first*
occurrence of a key not seen before: the first means the smallest position in the batch, decided
with ``np.minimum.at`` when several keys of the batch claim the same empty slot, so the answer does
not depend on numpy's unspecified order of fancy assignments. Claims go to a fixed array of 2^20
cells (slot mod 2^20), small enough to stay in cache: a claimant that loses its cell to one of
another slot just claims again in the next round, and two equal keys always claim the same cell,
so the smaller position still wins. Claims are tagged with a generation number that decreases
with every probe round, so the cells need no clearing between rounds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["row_keys", "KeySet", "KEYSET_BYTES_PER_SLOT"]

_SEEDS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))
_MULTIPLIERS = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_FMIX = (np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_S31, _S33, _ONE = np.uint64(31), np.uint64(33), np.uint64(1)

KEYSET_BYTES_PER_SLOT = 16
"""Bytes per table slot: the two key words (plus ``KEYSET_CLAIM_BYTES`` per set)."""
_CLAIM_CELLS = 1 << 20
KEYSET_CLAIM_BYTES = 8 * _CLAIM_CELLS
"""Bytes of a set's claim cells (fixed, so that they stay in the last-level cache)."""
_MIN_CAPACITY = 1 << 10
_GENERATION_STEP = np.int64(1 << 32)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h ^= h >> _S33
    h *= _FMIX[0]
    h ^= h >> _S33
    h *= _FMIX[1]
    h ^= h >> _S33
    return h


def row_keys(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two 64-bit hashes (k1, k2) of each row of ``words``, a (rows, n_words) uint64 array;
    k1 is odd (its lowest bit is set), so that 0 can mark an empty slot of a ``KeySet``."""
    words = np.asarray(words)
    if words.dtype != np.uint64 or words.ndim != 2:
        raise TypeError(f"row_keys expects a 2-D uint64 array, got {words.dtype} of shape {words.shape}")
    out = []
    tmp = np.empty(words.shape[0], dtype=np.uint64)
    for seed, mult in zip(_SEEDS, _MULTIPLIERS):
        h = np.full(words.shape[0], seed, dtype=np.uint64)
        for k in range(words.shape[1]):
            np.bitwise_xor(h, words[:, k], out=h)
            h *= mult
            np.right_shift(h, _S31, out=tmp)
            h ^= tmp
        out.append(_fmix64(h))
    out[0] |= _ONE
    return out[0], out[1]


class KeySet:
    """A set of keys from ``row_keys`` (k1 odd) with batched, order-respecting insertion.

    Memory: ``capacity · KEYSET_BYTES_PER_SLOT`` bytes; the capacity is a power of two kept at
    least twice the number of keys (it doubles, rehashing, before a batch could overfill it).
    """

    def __init__(self, expected: int = 0):
        self._allocate(self.capacity_for(expected))
        self.size = 0

    @staticmethod
    def capacity_for(n: int) -> int:
        """The capacity a set of ``n`` keys gets (the smallest power of two ≥ 2n, at least 1024)."""
        capacity = _MIN_CAPACITY
        while capacity < 2 * n:
            capacity *= 2
        return capacity

    def _allocate(self, capacity: int) -> None:
        self.capacity = capacity
        self._mask = np.int64(capacity - 1)
        self._table = np.zeros((capacity, 2), dtype=np.uint64)  # (k1, k2); k1 == 0 marks empty
        if not hasattr(self, "_claim"):
            self._claim = np.full(_CLAIM_CELLS, np.iinfo(np.int64).max, dtype=np.int64)
            self._generation = np.int64(1 << 62)
        self._cells = np.int64(min(capacity, _CLAIM_CELLS) - 1)

    @property
    def nbytes(self) -> int:
        """Bytes held by the table and its claim cells."""
        return self.capacity * KEYSET_BYTES_PER_SLOT + KEYSET_CLAIM_BYTES

    def reserve(self, n: int) -> None:
        """Make room for ``n`` keys in all, so that inserting them rehashes nothing."""
        if self.capacity_for(n) > self.capacity:
            self._grow(n)

    def _grow(self, needed: int) -> None:
        old = self._table[self._table[:, 0] != 0]
        self._allocate(self.capacity_for(needed))
        self.size = 0
        self.insert_first(np.ascontiguousarray(old[:, 0]), np.ascontiguousarray(old[:, 1]))

    def _next_generation(self) -> np.int64:
        """A tag base below every claim made so far (one per probe round, so that a cell's claim
        from an earlier round never blocks a later one)."""
        self._generation -= _GENERATION_STEP
        if self._generation < 0:
            self._claim.fill(np.iinfo(np.int64).max)
            self._generation = np.int64(1 << 62)
        return self._generation

    def insert_first(self, k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
        """Insert a batch of keys (k1 odd, from ``row_keys``); a bool array, True where the key is the
        first occurrence (smallest position) in the batch of a key that was not in the set before."""
        m = len(k1)
        if 2 * (self.size + m) > self.capacity:
            self._grow(2 * (self.size + m))  # at least doubles, leaving room for as many again
        flat = self._table.reshape(-1)
        new = np.zeros(m, dtype=bool)
        slots = (k1 >> _ONE).view(np.int64) & self._mask
        index = np.arange(m, dtype=np.int64)
        q1, q2 = k1, k2
        while True:
            rows = np.take(self._table, slots, axis=0)
            free = rows[:, 0] == 0
            # An occupied slot with another key: probe the next slot. With the same key: a duplicate.
            differ = ((rows[:, 0] != q1) | (rows[:, 1] != q2)) & ~free
            # Free slots: the smallest position claiming a slot takes it; the others look again.
            claimants, claimed = index[free], slots[free]
            tags = claimants + self._next_generation()
            cells = claimed & self._cells
            np.minimum.at(self._claim, cells, tags)
            won = self._claim[cells] == tags
            winners, won_slots = claimants[won], claimed[won]
            flat[2 * won_slots] = k1[winners]
            flat[2 * won_slots + 1] = k2[winners]
            new[winners] = True
            lost = ~won
            index = np.concatenate([index[differ], claimants[lost]])
            if not index.size:
                break
            slots = np.concatenate([(slots[differ] + 1) & self._mask, claimed[lost]])
            q1, q2 = k1[index], k2[index]
        self.size += int(np.count_nonzero(new))
        return new
