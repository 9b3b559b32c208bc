"""Boolean tasks: data sets of bit vectors for circuits learned over Z2.

Iris binarised as in Wilson & Zanasi's reverse derivative ascent experiments (REFERENCE §2):

- the experiment's data set is the first ``classes`` classes (two-class: setosa and versicolor,
  100 rows; three-class: all 150 rows);
- each feature is min-max normalised over that whole data set (train and test rows together) and
  thresholded at > 0.5, giving 4 input bits. Normalising the two-class set over all 150 rows
  instead moves the thresholds (virginica stretches the ranges) and measures 76–78 % test accuracy
  rather than the paper's 98.0 %, which this rule reproduces;
- labels are ``"onehot"`` (one bit per class) or ``"binary"`` (the class index in
  ceil(log2 classes) bits, least significant first; at least one bit);
- split: stable sort by class, the first 25 examples of each class train, the other 25 test;
  training order is that sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from progsynth.errors import ConfigError
from progsynth.tasks.tabular import load_iris

__all__ = [
    "BooleanSplit",
    "LABEL_CODES",
    "IRIS_PAPER_TEST_ACCURACY",
    "binarize",
    "encode_labels",
    "split_per_class",
    "iris_bits",
]

LABEL_CODES = ("onehot", "binary")

#: test accuracy of the learned lookup table in the RDA paper (UCI file), by number of classes
IRIS_PAPER_TEST_ACCURACY = {2: 0.980, 3: 0.733}


@dataclass(frozen=True)
class BooleanSplit:
    """Train and test examples as (examples, bits) numpy bool arrays, plus class indices."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes_train: np.ndarray
    classes_test: np.ndarray


def binarize(features: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Min-max normalise each column over all rows, then ``> threshold``; a constant column is 0."""
    features = np.asarray(features, dtype=np.float64)
    low, span = features.min(axis=0), np.ptp(features, axis=0)
    scaled = np.divide(features - low, span, out=np.zeros_like(features), where=span > 0)
    return scaled > threshold


def encode_labels(labels: np.ndarray, classes: int, code: str) -> np.ndarray:
    """Class indices in [0, classes) as (examples, bits) bools in the ``"onehot"`` or ``"binary"`` code."""
    if code not in LABEL_CODES:
        raise ConfigError(f"label code must be one of {LABEL_CODES}, got {code!r}")
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ConfigError(f"class indices must lie in [0, {classes}), got [{labels.min()}, {labels.max()}]")
    if code == "onehot":
        return np.eye(classes, dtype=bool)[labels]
    width = max(1, int(classes - 1).bit_length())
    return ((labels[:, None] >> np.arange(width)) & 1).astype(bool)


def split_per_class(labels: np.ndarray, train_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) after a stable sort by class: the first ``train_per_class`` of each
    class train, the rest test; both in class-sorted order."""
    order = np.argsort(labels, kind="stable")
    ordered = np.asarray(labels)[order]
    rank = np.arange(len(order)) - np.searchsorted(ordered, ordered)  # position within its class
    return order[rank < train_per_class], order[rank >= train_per_class]


def iris_bits(classes: int = 3, labels: str = "onehot") -> BooleanSplit:
    """scikit-learn's Iris binarised as in the RDA paper (see the module docstring).

    scikit-learn's copy corrects two rows of the UCI file (samples 35 and 38, both setosa test
    examples). Sample 35's fix (petal width 0.1 → 0.2) stays below its threshold. Sample 38's
    sepal width 3.6 (UCI: 3.1) scales to 0.67 (UCI: 0.46) and sets its bit: pattern 0100, seen in
    training only on setosa, instead of 0000, which the three-class table last saw on a
    versicolor. So three classes score 56/75 = 74.7 % here against the paper's 55/75 = 73.3 %;
    in the two-class table both patterns are setosa and both give 49/50 = 98.0 %.
    """
    if classes not in (2, 3):
        raise ConfigError(f"Iris has 2 or 3 classes to learn, got classes={classes!r}")
    features, targets = (t.numpy() for t in load_iris())
    keep = targets < classes
    x, y = binarize(features[keep]), targets[keep]
    train, test = split_per_class(y, 25)
    code = encode_labels(y, classes, labels)
    return BooleanSplit(x[train], code[train], x[test], code[test], y[train], y[test])
