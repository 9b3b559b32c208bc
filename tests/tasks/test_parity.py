"""Sparse parity: relevant bits, labels, enumeration and sampling, split, errors."""

import pytest
import torch

from progsynth.errors import ConfigError
from progsynth.tasks.parity import ParityTask, parity_dataset


def test_labels_are_the_parity_of_the_relevant_bits():
    task = ParityTask(n_bits=8, k=3, seed=4)
    data = parity_dataset(task)
    relevant = task.relevant_bits
    for bits, label in zip(data.operands.tolist(), data.labels.tolist()):
        assert label == sum(bits[i] for i in relevant) % 2


def test_relevant_bits_are_k_distinct_positions_chosen_by_the_seed():
    choices = {ParityTask(n_bits=20, k=4, seed=s, n_samples=10).relevant_bits for s in range(6)}
    assert len(choices) > 1  # the seed matters
    for bits in choices:
        assert len(bits) == 4 and len(set(bits)) == 4 and list(bits) == sorted(bits)
        assert all(0 <= b < 20 for b in bits)
    assert ParityTask(n_bits=12, k=4, seed=3).relevant_bits == ParityTask(n_bits=12, k=4, seed=3).relevant_bits


def test_full_enumeration_covers_every_string_once():
    data = parity_dataset(ParityTask(n_bits=6, k=2))
    assert data.operands.shape == (64, 6)
    codes = (data.operands * (2 ** torch.arange(5, -1, -1))).sum(dim=1)
    assert torch.equal(codes, torch.arange(64))  # binary counting order, bit 0 most significant
    assert data.labels.sum() == 32  # a parity of k ≥ 1 bits is balanced over the cube


def test_sampling_is_deterministic():
    task = ParityTask(n_bits=40, k=3, seed=1, n_samples=500)
    first, again = parity_dataset(task), parity_dataset(task)
    assert first.operands.shape == (500, 40)
    assert torch.equal(first.operands, again.operands) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.operands, parity_dataset(ParityTask(n_bits=40, k=3, seed=2, n_samples=500)).operands)


def test_split_sizes_disjoint_and_deterministic():
    data = parity_dataset(ParityTask(n_bits=10, k=3, train_fraction=0.25, split_seed=3))
    assert (len(data.train_idx), len(data.test_idx)) == (256, 768)
    assert torch.equal(torch.cat([data.train_idx, data.test_idx]).sort().values, torch.arange(1024))
    again = parity_dataset(ParityTask(n_bits=10, k=3, train_fraction=0.25, split_seed=3))
    assert torch.equal(data.train_idx, again.train_idx)


def test_encodings():
    data = parity_dataset(ParityTask(n_bits=5, k=2))
    assert torch.equal(data.inputs("tokens"), data.operands)
    onehot = data.inputs("onehot")
    assert onehot.shape == (32, 10)
    assert torch.equal(onehot[:, 1::2], data.operands.float())  # the 'bit is 1' column of each pair


@pytest.mark.parametrize(
    "kwargs, message",
    [({"n_bits": 4, "k": 5}, "k .* at most n_bits = 4"),
     ({"n_bits": 0, "k": 1}, "n_bits must be an integer from 1 to 4096"),
     ({"n_bits": 4, "k": 0}, "k must be an integer ≥ 1"),
     ({"n_bits": 17, "k": 3}, "too many to enumerate"),
     ({"n_bits": 20, "k": 3, "n_samples": 0}, "n_samples must be an integer from 1 to 10000000"),
     ({"n_bits": 4, "k": 2, "train_fraction": 0}, r"train_fraction must be a number in \(0, 1\]")],
)
def test_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ParityTask(**kwargs)
