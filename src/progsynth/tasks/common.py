"""What every algorithmic task shares: the task protocol, validation, the train/test split, the input
encodings, bit strings, and user functions named by import path.

A *task* is a frozen dataclass whose fields are exactly what ``config.json`` stores under
``"task"`` (with its ``family``, the registry key, ``tasks.registry``) and whose ``dataset()``
builds its ``TaskData``. Every task satisfies ``Task``; nothing outside ``tasks/`` builds a
specific task class, so a new family trains and is analysed without edits elsewhere.

A task's data set holds every example (the full grid for modular arithmetic, every input or a
sample for parity) as integer *operands* (N, k) in a vocabulary of size V, with class labels, and
two index tensors selecting the training and test examples. Models ask for their input by name
(their ``input_kind`` class attribute) through ``TaskData.inputs``:

- ``"tokens"``: integer token ids, shape (N, positions), for models with learned embeddings;
- ``"onehot"``: one_hot(operand 1) ⊕ ... ⊕ one_hot(operand k), shape (N, k·V), for models that
  read a fixed vector (Gromov's quadratic MLP).
"""

from __future__ import annotations

import importlib
import math
import random
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from progsynth.errors import ConfigError

__all__ = ["INPUT_KINDS", "DOMAINS", "Task", "BitOperands",
           "TaskData", "SPLITS", "train_test_split", "check_split", "one_hot_concat", "check_int",
           "check_seed", "MAX_SEED", "MAX_P", "MAX_BITS", "MAX_SAMPLES", "MAX_GATES", "check_train_fraction", "bit_strings", "import_function", "is_import_path",
           "check_label_noise", "with_label_noise", "sample_rows"]

INPUT_KINDS = ("tokens", "onehot")
"""The input encodings a model can ask a task for (see the module docstring)."""

DOMAINS = ("residues", "bits")
"""What a task's operands and labels are: residues mod p (operands a, b) or bits (x0, x1, ...).
The program search picks its grammar by it."""


@runtime_checkable
class Task(Protocol):
    """What every task family provides (module docstring)."""

    family: ClassVar[str]
    """The registry name, stored as ``task.family`` in config.json."""
    domain: ClassVar[str]
    """One of ``DOMAINS``."""
    train_fraction: float
    split_seed: int

    @property
    def name(self) -> str:
        """A one-line description for messages and reports, e.g. 'a + b mod 97'."""

    @property
    def n_operands(self) -> int:
        """Operands per example."""

    @property
    def operand_vocab(self) -> int:
        """Values an operand can take."""

    @property
    def n_classes(self) -> int:
        """Label classes."""

    def operand_names(self) -> tuple[str, ...]:
        """The names programs use for the operands, in column order ('a', 'b' or 'x0', 'x1', ...)."""

    def dataset(self) -> "TaskData":
        """Every example, its label and the train/test split."""


class BitOperands:
    """The operand side of a task over bits (mix into a task dataclass with an ``n_bits`` field):
    one operand per bit, values 0 and 1, two label classes, operands named x0, x1, ..."""

    n_bits: int

    @property
    def n_operands(self) -> int:
        """Operands per example: the bits."""
        return self.n_bits

    @property
    def operand_vocab(self) -> int:
        """Values an operand can take: 0 and 1."""
        return 2

    @property
    def n_classes(self) -> int:
        """Label classes: 0 and 1."""
        return 2

    def operand_names(self) -> tuple[str, ...]:
        """('x0', ..., 'x{n−1}')."""
        return tuple(f"x{i}" for i in range(self.n_bits))


MAX_SEED = 2**63 - 1
"""Largest seed (torch generators take 64-bit seeds)."""
MAX_P = 2048
"""Largest modulus of a modular task (its p² pairs, 4.2 million, are held in memory)."""
MAX_BITS = 4096
"""Most input bits of a bit task."""
MAX_SAMPLES = 10_000_000
"""Most sampled strings of a bit task."""
MAX_GATES = 100_000
"""Most gates of a random circuit."""


def check_int(what: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) in [minimum, maximum], else raise ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or \
            (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"≥ {minimum}"
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(f"{what} must be an integer {bound}, got {shown}")
    return value


def check_seed(what: str, value: Any) -> int:
    """A seed: an integer from 0 to ``MAX_SEED``."""
    return check_int(what, value, 0, MAX_SEED)


def check_train_fraction(value: Any) -> float:
    """Return the train fraction as a float if it lies in (0, 1], else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 1):
        raise ConfigError(f"train_fraction must be a number in (0, 1], got {value!r}")
    return float(value)


def check_label_noise(value: Any) -> float:
    """Return the label-noise fraction as a float if it is a finite number in [0, 1] (not a bool),
    else raise ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(f"label_noise must be a finite number in [0, 1], got {shown}")
    return float(value)


def bit_strings(n_bits: int, n_samples: int | None, generator: torch.Generator) -> torch.Tensor:
    """(N, n_bits) int64 bits: every string in binary counting order with bit 0 the most
    significant (``n_samples`` None), or ``n_samples`` strings drawn uniformly with replacement
    from ``generator``."""
    if n_samples is None:
        return (torch.arange(2**n_bits)[:, None] >> torch.arange(n_bits - 1, -1, -1)) & 1
    return torch.randint(0, 2, (n_samples, n_bits), generator=generator)


_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")


def is_import_path(text: str) -> bool:
    """Whether ``text`` has the form ``package.module:function``."""
    return isinstance(text, str) and _IMPORT_PATH.fullmatch(text.strip()) is not None


def import_function(path: str, what: str) -> Callable[..., Any]:
    """The callable named by ``module:function`` (importing the module, so only name code you
    trust); ConfigError naming the path if the module or the attribute is missing or not callable."""
    module_name, _, attribute = path.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever the module raises while importing
        raise ConfigError(f"{what} {path!r}: cannot import module {module_name!r} ({error!r}); expected "
                          "'module:function' with the module on the Python path") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"{what} {path!r}: module {module_name!r} has no function {attribute!r}")
    return function


SPLITS = ("random", "paper")
"""How ``train_test_split`` permutes the examples: ``torch.randperm`` ('random') or Python's
``random.shuffle`` as the paper's code does ('paper')."""


def check_split(value: Any) -> str:
    """Return ``value`` if it is one of ``SPLITS``, else raise ConfigError naming it and the choices."""
    if not isinstance(value, str) or value not in SPLITS:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {shown}")
    return value


def train_test_split(n: int, train_fraction: float, split_seed: int,
                     split: str = "random") -> tuple[torch.Tensor, torch.Tensor]:
    """Split example indices 0..n-1 into (train, test), each sorted ascending.

    The first ``floor(train_fraction · n)`` entries of a random permutation of 0..n-1 are the
    training set, the rest the test set (p = 113, 30 %: 3,830 train / 8,939 test, as in Nanda et
    al.). The permutation (``split``, one of ``SPLITS``): 'random', ``torch.randperm`` with a
    generator seeded by ``split_seed``; 'paper', ``random.Random(split_seed).shuffle`` of the list
    0..n-1, the permutation the paper's code applies to its list of pairs with
    ``random.seed(split_seed); random.shuffle(pairs)`` (so for rows in the paper's order, i outer and
    j inner, the same pairs are held out). The same (n, fraction, seed, split) always gives the
    same split. Raises ConfigError if the fraction leaves no training example.
    """
    n_train = math.floor(check_train_fraction(train_fraction) * n)
    if n_train == 0:
        raise ConfigError(
            f"train_fraction {train_fraction!r} of {n} examples selects no training example; "
            f"expected at least 1/{n}"
        )
    check_seed("split_seed", split_seed)
    if check_split(split) == "paper":
        shuffled = list(range(n))
        random.Random(split_seed).shuffle(shuffled)
        order = torch.tensor(shuffled, dtype=torch.int64)
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
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

    def named_operands(self, rows: torch.Tensor, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The operand columns of ``rows`` as numpy arrays by name (``Task.operand_names``), the
        form the program search and expression evaluation read."""
        chosen = self.operands[rows].numpy()
        return {name: chosen[:, i] for i, name in enumerate(names)}

    def __len__(self) -> int:
        return self.operands.shape[0]


def with_label_noise(data: TaskData, fraction: float, seed: int) -> TaskData:
    """``data`` with a fraction of its *training* labels replaced by a uniformly random wrong label
    (the random-label experiments of Zhang et al. 2017, "Understanding deep learning requires
    rethinking generalization"); the held-out labels stay true, so test accuracy still measures
    the true function.

    Exactly ``round(fraction · n_train)`` training rows change (Python's ``round``: halves go to
    the even integer), chosen uniformly without replacement among the training rows by a
    ``torch.Generator`` seeded with ``seed``; each gets a label drawn uniformly from the *other*
    ``n_classes − 1`` classes, so every chosen label really changes and the number of wrong
    training labels is exactly that count (a uniform draw over all classes would leave about
    1/n_classes of them unchanged). The same (data, fraction, seed) always gives the same labels;
    the seed is independent of the split seed and of the model seed. A new ``TaskData`` (of the
    same class) is returned and ``data`` is left as it is; when no row changes (fraction 0, or a
    count that rounds to 0) ``data`` itself is returned. Raises ConfigError for a fraction outside
    [0, 1], a bad seed, or a task with a single class, whose labels cannot be made wrong.
    """
    fraction = check_label_noise(fraction)
    seed = check_seed("label_noise_seed", seed)
    n_train = int(data.train_idx.numel())
    n_noisy = round(fraction * n_train)
    if n_noisy == 0:
        return data
    if data.n_classes < 2:
        raise ConfigError(f"label_noise {fraction:g} needs a task with at least 2 label classes so that a "
                          f"label can be made wrong; this one has {data.n_classes}")
    generator = torch.Generator().manual_seed(seed)
    rows = data.train_idx[torch.randperm(n_train, generator=generator)[:n_noisy]]
    # label + s mod C with s uniform in 1..C−1 is uniform over the C − 1 other classes.
    shift = torch.randint(1, data.n_classes, (n_noisy,), generator=generator, dtype=data.labels.dtype)
    labels = data.labels.clone()
    labels[rows] = (labels[rows] + shift) % data.n_classes
    return replace(data, labels=labels)


def sample_rows(total: int, count: int, seed: int) -> torch.Tensor:
    """``count`` of ``total`` data rows drawn without replacement, sorted (all of them when there
    are fewer): the fixed input subset an analysis reads at every checkpoint (the NTK's inputs,
    the representations ``compare`` reads). Drawn with numpy's generator seeded by ``seed``, a stream
    unrelated to the train/test split's ``torch.randperm``: the same seed there would give back the
    split's own permutation, whose first rows are the training rows."""
    check_int("the number of data rows", total, 1)
    check_int("the number of rows to draw", count, 1)
    check_seed("seed", seed)
    if count >= total:
        return torch.arange(total)
    chosen = np.random.default_rng(seed).choice(total, size=count, replace=False)
    return torch.from_numpy(np.sort(chosen)).to(torch.int64)
