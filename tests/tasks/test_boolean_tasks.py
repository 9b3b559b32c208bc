"""Boolean tasks: Iris binarised as in the RDA paper; binarised 8×8 digits in a one-versus-one code."""

from __future__ import annotations

import numpy as np
import pytest

from progsynth.errors import ConfigError
from progsynth.tasks.boolean import (binarize, class_pairs, decode_pairs, digits_bits, encode_labels, iris_bits,
                                     pair_code, split_per_class)
from progsynth.tasks.tabular import load_digits, load_iris


@pytest.mark.parametrize("classes", [2, 3])
def test_iris_split_sizes_and_order(classes):
    data = iris_bits(classes, "onehot")
    assert data.x_train.shape == data.x_test.shape == (25 * classes, 4)
    assert data.y_train.shape == data.y_test.shape == (25 * classes, classes)
    assert data.x_train.dtype == data.y_train.dtype == bool
    expected = np.repeat(np.arange(classes), 25)
    assert np.array_equal(data.classes_train, expected) and np.array_equal(data.classes_test, expected)
    assert np.array_equal(data.y_train.argmax(axis=1), data.classes_train)


def test_iris_binarisation_normalises_over_the_experiments_rows():
    features, targets = (t.numpy() for t in load_iris())
    two = iris_bits(2, "binary")
    rows = binarize(features[:100])  # sklearn's rows are sorted by class: first 25 train, next 25 test
    assert np.array_equal(two.x_train, np.concatenate([rows[:25], rows[50:75]]))
    assert np.array_equal(two.x_test, np.concatenate([rows[25:50], rows[75:100]]))
    # sample 38 (0-based 37, a setosa test example): sepal width 3.6 → (3.6 − 2.0)/(4.4 − 2.0) > 0.5
    assert two.x_test[37 - 25].tolist() == [False, True, False, False]
    three = iris_bits(3, "binary")
    assert np.array_equal(three.x_train[:25], binarize(features)[:25])
    assert not np.array_equal(binarize(features)[:100], rows)  # the set normalised over matters


def test_binarize_thresholds_min_max_scaled_columns():
    features = np.array([[0.0, 5.0, 1.0], [10.0, 5.0, 2.0], [5.0, 5.0, 1.6], [5.1, 5.0, 1.4]])
    assert binarize(features).tolist() == [
        [False, False, False], [True, False, True], [False, False, True], [True, False, False]]


def test_encode_labels():
    labels = np.array([0, 1, 2])
    assert encode_labels(labels, 3, "onehot").tolist() == np.eye(3, dtype=bool).tolist()
    assert encode_labels(labels, 3, "binary").tolist() == [[False, False], [True, False], [False, True]]
    assert encode_labels(np.array([0, 1]), 2, "binary").tolist() == [[False], [True]]
    with pytest.raises(ConfigError, match="label code must be one of"):
        encode_labels(labels, 3, "gray")
    with pytest.raises(ConfigError, match="class indices must lie in \\[0, 2\\)"):
        encode_labels(labels, 2, "onehot")


def test_split_per_class_is_a_stable_sort():
    labels = np.array([1, 0, 1, 0, 0, 1, 1])
    train, test = split_per_class(labels, 2)
    assert train.tolist() == [1, 3, 0, 2] and test.tolist() == [4, 5, 6]


def test_iris_rejects_bad_options():
    with pytest.raises(ConfigError, match="2 or 3 classes.*classes=4"):
        iris_bits(4)
    with pytest.raises(ConfigError, match="'gray'"):
        iris_bits(2, "gray")


def rows(x: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """The (image bits, label) rows as a sorted list: equal lists are equal multisets."""
    return sorted(map(bytes, np.packbits(np.concatenate([x, labels[:, None] == np.arange(10)], axis=1), axis=1)))


@pytest.mark.parametrize("classes, sizes", [(2, (200, 40, 120)), (10, (1000, 200, 597))])
def test_digits_split_is_fixed_disjoint_and_binarised_at_the_mean(classes, sizes):
    data, again = digits_bits(classes), digits_bits(classes)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == sizes
    assert np.array_equal(data.x_test, again.x_test) and np.array_equal(data.classes_train, again.classes_train)
    assert np.bincount(data.classes_train).tolist() == [100] * classes
    assert np.bincount(data.classes_val).tolist() == [20] * classes
    pixels, targets = (t.numpy() for t in load_digits())
    assert data.threshold == pytest.approx(4.884, abs=1e-3) == pixels.mean()
    bits = pixels[targets < classes] > data.threshold
    split = np.concatenate([data.x_train, data.x_val, data.x_test])
    labels = np.concatenate([data.classes_train, data.classes_val, data.classes_test])
    assert rows(split, labels) == rows(bits, targets[targets < classes])  # a partition of the images
    assert data.y_train.shape == (sizes[0], len(class_pairs(classes)))
    assert np.array_equal(decode_pairs(data.y_test, classes), data.classes_test)


def test_pair_code_and_its_decoding():
    labels = np.array([0, 1, 2])
    bits, care = pair_code(labels, 3)
    assert class_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    assert bits.astype(int).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert care.astype(int).tolist() == [[1, 1, 0], [1, 0, 1], [0, 1, 1]]
    assert decode_pairs(bits, 3).tolist() == [0, 1, 2]
    assert decode_pairs(np.array([[1, 0, 0]]), 3).tolist() == [1]  # pairs vote 1, 0, 1
    assert decode_pairs(np.array([[0, 1, 0]]), 3).tolist() == [0]  # 0, 2, 1: a tie → the lowest index
    assert decode_pairs(np.array([[1, 1, 1]]), 3).tolist() == [2]
    three, care3 = pair_code(np.array([1]), 2, votes=3)
    assert three.tolist() == [[True, True, True]] and care3.all()
    assert decode_pairs(np.array([[1, 0, 1], [0, 0, 1]]), 2, votes=3).tolist() == [1, 0]  # majority per pair
    with pytest.raises(ConfigError, match="class indices must lie in \\[0, 2\\)"):
        pair_code(labels, 2)
    with pytest.raises(ConfigError, match="expects \\(examples, 3\\) bits"):
        decode_pairs(bits[:, :2], 3)


def test_digits_rejects_bad_options():
    with pytest.raises(ConfigError, match="2 \\(0 vs 1\\) or 10 classes.*classes=3"):
        digits_bits(3)
    with pytest.raises(ConfigError, match="votes must be an integer ≥ 1, got 0"):
        digits_bits(2, votes=0)
