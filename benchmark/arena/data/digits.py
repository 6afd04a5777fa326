"""scikit-learn's bundled 8 × 8 handwritten digits (1797 images, 10 classes), upscaled to
32 × 32 and repeated to RGB: the embedded dataset (no files, no internet)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.arena.data.splits import (
    IMAGE_SIZE,
    DataSplits,
    LabeledTensorDataset,
    _frozen,
    _split_train_val,
    _stratified_pick,
)

DIGITS_TEST_FRACTION = 0.2
"""Share of the digits data held out as the fixed test split."""

_DIGITS_TEST_SEED = 0
"""Seed of the digits test split; a constant so the test set never depends on a run's seed."""


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Digits as 1 × 32 × 32 images in [0, 1], labels, and the fixed test indices (cached)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(
        images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
    )
    labels = np.asarray(bunch.target, dtype=np.int64)
    n_test = int(round(DIGITS_TEST_FRACTION * len(labels)))
    test, _ = _stratified_pick(
        labels, np.arange(len(labels)), n_test, np.random.default_rng(_DIGITS_TEST_SEED)
    )
    return images, labels, test


def load_digits(*, val_fraction: float, seed: int, train_subset: int | None) -> DataSplits:
    images, labels, test = _digits_arrays()
    pool = np.setdiff1d(np.arange(len(labels)), test)
    train, val = _split_train_val(
        labels, pool, val_fraction=val_fraction, seed=seed, train_subset=train_subset
    )
    # Normalisation statistics come from the fixed non-test pool: no test leakage, and
    # the same for every seed (so the test tensors never change).
    pool_images = images[torch.as_tensor(pool)]
    mean, std = pool_images.mean(), pool_images.std()
    label_tensor = torch.as_tensor(labels)

    def subset(indices: np.ndarray) -> LabeledTensorDataset:
        idx = torch.as_tensor(indices)
        rgb = ((images[idx] - mean) / std).expand(-1, 3, -1, -1).contiguous()
        return LabeledTensorDataset(rgb, label_tensor[idx].clone())

    return DataSplits(
        train=subset(train),
        val=subset(val),
        test=subset(test),
        num_classes=10,
        name="digits",
        train_indices=_frozen(train),
        val_indices=_frozen(val),
        test_indices=_frozen(test),
    )
