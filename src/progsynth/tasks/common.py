"""What every algorithmic task shares: validation, the train/test split, and the input encodings.

A task's data set holds every example (the full grid for modular arithmetic, every input or a
sample for parity) as integer *operands* (N, k) in a vocabulary of size V, with class labels, and
two index tensors selecting the training and test examples. Models ask for their input by name
(their ``input_kind`` class attribute) through ``TaskData.inputs``:

- ``"tokens"``: integer token ids, shape (N, positions), for models with learned embeddings;
- ``"onehot"``: one_hot(operand 1) ⊕ ... ⊕ one_hot(operand k), shape (N, k·V), for models that
  read a fixed vector (Gromov's quadratic MLP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from progsynth.errors import ConfigError

__all__ = ["INPUT_KINDS", "TaskData", "train_test_split", "one_hot_concat", "check_int", "check_train_fraction"]

INPUT_KINDS = ("tokens", "onehot")
"""The input encodings a model can ask a task for (see the module docstring)."""


def check_int(what: str, value: Any, minimum: int) -> int:
    """Return ``value`` if it is an int (not a bool) ≥ ``minimum``, else raise ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer ≥ {minimum}, got {value!r}")
    return value


def check_train_fraction(value: Any) -> float:
    """Return the train fraction as a float if it lies in (0, 1], else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 1):
        raise ConfigError(f"train_fraction must be a number in (0, 1], got {value!r}")
    return float(value)


def train_test_split(n: int, train_fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split example indices 0..n-1 into (train, test), each sorted ascending.

    The first ``floor(train_fraction · n)`` entries of a random permutation (``torch.randperm`` with
    a generator seeded by ``split_seed``) are the training set, the rest the test set, as in Nanda
    et al.'s code (p = 113, 30 %: 3,830 train / 8,939 test). The same (n, fraction, seed) always
    gives the same split. Raises ConfigError if the fraction leaves no training example.
    """
    n_train = math.floor(check_train_fraction(train_fraction) * n)
    if n_train == 0:
        raise ConfigError(
            f"train_fraction {train_fraction!r} of {n} examples selects no training example; "
            f"expected at least 1/{n}"
        )
    generator = torch.Generator().manual_seed(check_int("split_seed", split_seed, 0))
    order = torch.randperm(n, generator=generator)
    return order[:n_train].sort().values, order[n_train:].sort().values


def one_hot_concat(operands: torch.Tensor, vocab: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """one_hot(operands[:, 0]) ⊕ ... ⊕ one_hot(operands[:, k-1]): shape (N, k·vocab), in ``dtype``."""
    return torch.nn.functional.one_hot(operands, vocab).reshape(operands.shape[0], -1).to(dtype)


@dataclass(frozen=True, eq=False)
class TaskData:
    """Every example of a task, its labels, and the train/test split (indices into the rows).

    ``operands`` (N, k) int64 in [0, vocab); ``labels`` (N,) int64 in [0, n_classes);
    ``train_idx`` and ``test_idx`` are sorted, disjoint and together cover 0..N-1.
    """

    operands: torch.Tensor
    labels: torch.Tensor
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    vocab: int
    n_classes: int

    def tokens(self) -> torch.Tensor:
        """Token ids for models with embeddings; the operands unless a task adds tokens."""
        return self.operands

    def onehot(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The concatenated one-hot encoding of the operands, shape (N, k·vocab)."""
        return one_hot_concat(self.operands, self.vocab, dtype)

    def inputs(self, kind: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The encoding a model asks for by its ``input_kind``: ``"tokens"`` or ``"onehot"``
        (``dtype`` applies to the one-hot encoding; tokens are always int64)."""
        if kind == "tokens":
            return self.tokens()
        if kind == "onehot":
            return self.onehot(dtype)
        raise ConfigError(f"unknown input kind {kind!r}; expected one of {list(INPUT_KINDS)}")

    def __len__(self) -> int:
        return self.operands.shape[0]
