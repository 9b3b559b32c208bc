"""Small tabular data sets bundled with scikit-learn (no downloads): Iris and 8×8 digits."""

from __future__ import annotations

import torch
from sklearn import datasets


def load_iris(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Iris as (features (150, 4), class indices (150,)) in scikit-learn's row order.

    scikit-learn's copy corrects two rows of the UCI file (samples 35 and 38); results on it can
    differ slightly from papers that used the UCI file.
    """
    data = datasets.load_iris()
    return torch.tensor(data.data, dtype=dtype), torch.tensor(data.target, dtype=torch.int64)


def load_digits(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits as (pixels (1797, 64) in 0..16, labels (1797,)): the offline
    stand-in for MNIST."""
    data = datasets.load_digits()
    return torch.tensor(data.data, dtype=dtype), torch.tensor(data.target, dtype=torch.int64)
