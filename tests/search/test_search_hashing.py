"""``KeySet.insert_first`` against a Python set, and ``row_keys`` on rows that differ slightly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from progsynth.search.hashing import KeySet, row_keys


def _reference(seen: set, k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """True where (k1, k2) is the first occurrence in the batch of a key not in ``seen``; updates it."""
    out = np.zeros(len(k1), dtype=bool)
    for i, key in enumerate(zip(k1.tolist(), k2.tolist())):
        if key not in seen:
            seen.add(key)
            out[i] = True
    return out


def _keys(rng: np.random.Generator, n: int, pool: int, slot_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """n keys drawn with replacement from ``pool`` distinct ones. k1 is odd with only ``slot_bits``
    bits above the lowest, so many keys share a home slot (and some share k1 but not k2)."""
    ids = rng.integers(0, pool, n)
    k1 = ((ids % (1 << slot_bits)).astype(np.uint64) << np.uint64(1)) | np.uint64(1)
    k2 = (ids // (1 << slot_bits)).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return k1, k2


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batches=st.lists(st.integers(0, 2500), min_size=1, max_size=4),
       pool=st.integers(1, 5000), slot_bits=st.integers(0, 14), expected=st.integers(0, 3000))
def test_insert_first_matches_a_python_set(seed, batches, pool, slot_bits, expected):
    rng = np.random.default_rng(seed)
    keys, seen = KeySet(expected), set()
    for n in batches:
        k1, k2 = _keys(rng, n, pool, slot_bits)
        np.testing.assert_array_equal(keys.insert_first(k1, k2), _reference(seen, k1, k2))
        assert keys.size == len(seen)
        assert keys.capacity >= 2 * keys.size
    # Everything inserted is found again (nothing new), in a batch of its own.
    if seen:
        all_keys = np.array(sorted(seen), dtype=np.uint64)
        assert not keys.insert_first(all_keys[:, 0].copy(), all_keys[:, 1].copy()).any()


def test_first_occurrence_is_the_smallest_position_among_many_claims():
    keys = KeySet()
    k1 = np.array([7, 5, 7, 7, 5, 9, 5], dtype=np.uint64)
    k2 = np.array([1, 2, 1, 3, 2, 0, 2], dtype=np.uint64)
    np.testing.assert_array_equal(keys.insert_first(k1, k2), [True, True, False, True, False, True, False])
    np.testing.assert_array_equal(keys.insert_first(k1[::-1].copy(), k2[::-1].copy()), [False] * 7)


def test_claims_of_slots_sharing_a_claim_cell_both_win():
    # Slots s and s + 2^20 share a claim cell once the table has more than 2^20 slots.
    keys = KeySet(1 << 20)
    assert keys.capacity > 1 << 20
    s = 12345
    k1 = np.array([(s << 1) | 1, ((s + (1 << 20)) << 1) | 1, (s << 1) | 1, ((s + (1 << 20)) << 1) | 1],
                  dtype=np.uint64)
    k2 = np.array([4, 4, 4, 5], dtype=np.uint64)
    np.testing.assert_array_equal(keys.insert_first(k1, k2), [True, True, False, True])
    assert keys.size == 3


def test_row_keys_are_odd_and_separate_rows_differing_in_one_word():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=(1, 5), dtype=np.uint64)
    rows = np.repeat(base, 5 * 64 + 1, axis=0)
    for w in range(5):
        for bit in range(64):
            rows[1 + 64 * w + bit, w] ^= np.uint64(1) << np.uint64(bit)
    k1, k2 = row_keys(rows)
    assert np.all(k1 & np.uint64(1) == 1)
    assert len(set(zip(k1.tolist(), k2.tolist()))) == len(rows)
    again = row_keys(rows.copy())
    np.testing.assert_array_equal(k1, again[0])
    np.testing.assert_array_equal(k2, again[1])
    with pytest.raises(TypeError):
        row_keys(rows.astype(np.int64))
