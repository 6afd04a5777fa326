"""Datasets and the train / validation / test splits every method and the harness share.

Every dataset is served as 3 × 32 × 32 float images with an ``int`` class label, and is one
entry of :data:`benchmark.arena.data.registry.DATASETS` (name → loader, checker, mean/std,
class count):

- ``digits``: scikit-learn's bundled 8 × 8 handwritten digits (1797 images, 10 classes),
  upscaled to 32 × 32 and repeated to RGB. Needs no files and no internet; this is what
  the ``smoke`` preset and the tests use.
- ``fashion-mnist``: Fashion-MNIST's 70,000 grey 28 × 28 images, zero-padded to 32 × 32
  and repeated to RGB, read by torchvision from ``data_dir`` or Debian's
  ``dataset-fashion-mnist`` package (:mod:`benchmark.arena.data.fashion_mnist`); the
  ``fmnist`` preset's data.
- ``cifar10`` / ``cifar100``: the real torchvision datasets, read from ``data_dir``
  (the folder that holds ``cifar-10-batches-py`` / ``cifar-100-python``).

Data hygiene (DESIGN.md §1): methods see ``train`` and ``val``, both carved from the
training data; ``test`` is the official test set (CIFAR, Fashion-MNIST) or a fixed,
seed-independent 20% of the data (digits), and only the harness touches it. The validation
subset is never augmented, even when the training subset is.

Every problem with the data (unknown name, missing or corrupt files, bad arguments) is a
:class:`DataError` with a one-line message that says what is wrong and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmark.arena.data.registry import DATASETS, DatasetEntry
from benchmark.arena.data.splits import (
    IMAGE_SIZE,
    DataError,
    DataSplits,
    LabeledTensorDataset,
    fixed_batch,
    make_loader,
)

__all__ = [
    "DATASETS",
    "IMAGE_SIZE",
    "DataError",
    "DataSplits",
    "DatasetEntry",
    "LabeledTensorDataset",
    "check_data_dir",
    "dataset_entry",
    "fixed_batch",
    "list_datasets",
    "load_preset_splits",
    "load_splits",
    "make_loader",
]


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_splits`."""
    return sorted(DATASETS)


def dataset_entry(name: str) -> DatasetEntry:
    """The registry entry of dataset ``name`` (case and surrounding blanks ignored).

    Raises:
        DataError: unknown name (one line listing the known ones).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(list_datasets())}")
    return DATASETS[key]


def load_splits(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_subset: int | None = None,
    augment: bool = True,
    verify: bool = True,
) -> DataSplits:
    """Load dataset ``name`` and split it into train / val / test.

    Args:
        name: one of :func:`list_datasets`.
        data_dir: folder holding ``cifar-10-batches-py`` / ``cifar-100-python`` (the
            dataset folder itself is accepted too), or Fashion-MNIST's four ``.gz`` files.
            Required for CIFAR, optional for Fashion-MNIST (default: Debian's location),
            ignored for digits.
        download: let torchvision download CIFAR into ``data_dir`` when files are missing
            (or, with ``verify``, fail their checksum); ignored for the other datasets.
        val_fraction: share of the training pool held out as validation, in ``(0, 1)``.
        seed: seed of the train/val split and of ``train_subset`` (non-negative). The same
            seed gives the same split; the test split never depends on it.
        train_subset: if given, keep only this many training samples (a seeded, stratified
            subset of the train split, taken after the validation split).
        augment: random crop (padding 4) + horizontal flip on CIFAR and Fashion-MNIST
            training images. Validation and test images are never augmented; digits never are.
        verify: check the files against the official MD5 checksums. With ``False`` the
            files must still all be present and readable.

    Raises:
        DataError: unknown name, bad arguments, missing / corrupt / unreadable files.
    """
    entry = dataset_entry(name)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if train_subset is not None and (
        isinstance(train_subset, bool)
        or not isinstance(train_subset, int | np.integer)
        or train_subset < 1
    ):
        raise DataError(f"train_subset must be a positive integer or None, got {train_subset!r}")

    return entry.load(
        data_dir,
        download=download,
        val_fraction=val_fraction,
        seed=int(seed),
        train_subset=None if train_subset is None else int(train_subset),
        augment=augment,
        verify=verify,
    )


def load_preset_splits(
    preset: Any,
    seed: int,
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    dataset: str | None = None,
) -> DataSplits:
    """:func:`load_splits` of ``preset``'s dataset (or ``dataset``) with its ``[data]``
    settings (validation fraction, train subset, augmentation) and split ``seed``: the
    splits a trial of that preset uses."""
    data = preset.data
    return load_splits(
        dataset or preset.dataset,
        data_dir,
        download=download,
        val_fraction=data.val_fraction,
        seed=seed,
        train_subset=data.train_subset,
        augment=data.augment,
    )


def check_data_dir(
    name: str, data_dir: str | Path | None, *, download: bool = False, verify: bool = True
) -> None:
    """Cheap check, before a run starts, that :func:`load_splits` will find dataset ``name``.

    Nothing is loaded and nothing is written: the files must be in ``data_dir`` (or, for
    Fashion-MNIST, Debian's location) and, with ``verify``, match the official MD5
    checksums (about a second of hashing); for CIFAR with ``download`` only a ``data_dir``
    is required, since the files may be fetched later. ``digits`` needs nothing.

    Raises:
        DataError: unknown name, no ``data_dir``, missing / corrupt files (one line).
    """
    dataset_entry(name).check(data_dir, download=download, verify=verify)
