"""Sparse parity: the label of an n-bit string is the XOR of k hidden relevant bits.

The second algorithmic family beside modular arithmetic: Barak et al. (2022) show networks learning
it with a long loss plateau and then a sudden drop, as in grokking. ``ParityTask(n_bits, k, seed,
...)`` chooses the k relevant bits from ``seed``; ``parity_dataset(task)`` builds the examples and
a train/test split:

- ``n_samples=None``: every one of the 2ⁿ bit strings (n ≤ 16), in binary counting order with
  bit 0 the most significant;
- ``n_samples=m``: m strings drawn uniformly (with replacement) from the generator seeded by
  ``seed``, for n too large to enumerate.

Operands are the bits themselves (vocabulary {0, 1}), so the ``"tokens"`` encoding is the (N, n)
bit matrix and ``"onehot"`` is (N, 2n). Labels are the parity, 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from progsynth.errors import ConfigError
from progsynth.tasks.common import (MAX_BITS, MAX_SAMPLES, BitOperands, TaskData, bit_strings, check_int, check_seed,
                                    check_train_fraction, train_test_split)

__all__ = ["ParityTask", "parity_dataset", "MAX_ENUMERATED_BITS"]

MAX_ENUMERATED_BITS = 16
"""Largest n for which every bit string is enumerated (2¹⁶ = 65,536 examples); beyond it give n_samples."""


@dataclass(frozen=True)
class ParityTask(BitOperands):
    """Learn the parity of ``k`` hidden bits out of ``n_bits``."""

    family: ClassVar[str] = "parity"
    domain: ClassVar[str] = "bits"

    n_bits: int = 10
    """Bits per input string, ≥ 1."""
    k: int = 3
    """Number of relevant bits, 1 ≤ k ≤ n_bits."""
    seed: int = 0
    """Chooses the relevant bits (and the sampled strings when ``n_samples`` is set)."""
    train_fraction: float = 0.5
    """Fraction of the examples used for training, in (0, 1]."""
    split_seed: int = 0
    """Seed of the train/test split."""
    n_samples: Optional[int] = None
    """None: all 2ⁿ strings (n ≤ 16); otherwise this many uniformly drawn strings."""

    def __post_init__(self) -> None:
        check_int("n_bits", self.n_bits, 1, MAX_BITS)
        check_int("k", self.k, 1)
        if self.k > self.n_bits:
            raise ConfigError(f"k (relevant bits) must be at most n_bits = {self.n_bits}, got k = {self.k}")
        check_seed("seed", self.seed)
        check_train_fraction(self.train_fraction)
        check_seed("split_seed", self.split_seed)
        if self.n_samples is None:
            if self.n_bits > MAX_ENUMERATED_BITS:
                raise ConfigError(
                    f"n_bits = {self.n_bits} is too many to enumerate all 2^{self.n_bits} strings "
                    f"(at most {MAX_ENUMERATED_BITS}); give n_samples to draw a sample instead"
                )
        else:
            check_int("n_samples", self.n_samples, 1, MAX_SAMPLES)

    @property
    def relevant_bits(self) -> tuple[int, ...]:
        """The k relevant bit positions, ascending: the first k of a permutation seeded by ``seed``."""
        return _choose_relevant(self, torch.Generator().manual_seed(self.seed))

    @property
    def name(self) -> str:
        """E.g. 'parity of bits (1, 4, 7) of 10'."""
        return f"parity of bits {self.relevant_bits} of {self.n_bits}"

    def dataset(self) -> TaskData:
        """``parity_dataset(self)``."""
        return parity_dataset(self)


def _choose_relevant(task: ParityTask, generator: torch.Generator) -> tuple[int, ...]:
    """The first draw from a generator seeded by ``task.seed``: k of the n bit positions, sorted."""
    return tuple(sorted(torch.randperm(task.n_bits, generator=generator)[: task.k].tolist()))


def parity_dataset(task: ParityTask) -> TaskData:
    """The examples of ``task`` (bits (N, n) int64), their parities, and the train/test split."""
    if not isinstance(task, ParityTask):
        raise ConfigError(f"parity_dataset expects a ParityTask, got {type(task).__name__}")
    n = task.n_bits
    generator = torch.Generator().manual_seed(task.seed)
    relevant = _choose_relevant(task, generator)
    bits = bit_strings(n, task.n_samples, generator)
    labels = bits[:, list(relevant)].sum(dim=1) % 2
    train_idx, test_idx = train_test_split(bits.shape[0], task.train_fraction, task.split_seed)
    return TaskData(bits, labels, train_idx, test_idx, 2, 2)
