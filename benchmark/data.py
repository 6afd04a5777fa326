"""Datasets and the train / validation / test splits every method and the harness share.

Three datasets, all served as 3 × 32 × 32 float images with an ``int`` class label:

- ``digits``: scikit-learn's bundled 8 × 8 handwritten digits (1797 images, 10 classes),
  upscaled to 32 × 32 and repeated to RGB. Needs no files and no internet; this is what
  the ``smoke`` preset and the tests use.
- ``cifar10`` / ``cifar100``: the real torchvision datasets, read from ``data_dir``
  (the folder that holds ``cifar-10-batches-py`` / ``cifar-100-python``).

Data hygiene (DESIGN.md §1): methods see ``train`` and ``val``, both carved from the
training data; ``test`` is the official test set (CIFAR) or a fixed, seed-independent 20%
of the data (digits), and only the harness touches it. The validation subset is never
augmented, even when the training subset is.

Every problem with the data (unknown name, missing or corrupt files, bad arguments) is a
:class:`DataError` with a one-line message that says what is wrong and what to do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = [
    "DataError",
    "DataSplits",
    "LabeledTensorDataset",
    "check_data_dir",
    "fixed_batch",
    "list_datasets",
    "load_splits",
    "make_loader",
]

IMAGE_SIZE = 32
"""Side of every image served by this module (pixels)."""

DIGITS_TEST_FRACTION = 0.2
"""Share of the digits data held out as the fixed test split."""

_DIGITS_TEST_SEED = 0
"""Seed of the digits test split; a constant so the test set never depends on a run's seed."""


class DataError(ValueError):
    """A dataset that cannot be loaded or split as asked (one-line, actionable message)."""


class LabeledTensorDataset(TensorDataset):
    """In-memory ``(images, labels)`` dataset whose items are ``(image tensor, int label)``.

    Same storage as :class:`torch.utils.data.TensorDataset`; only the label comes back as a
    Python ``int`` so that every dataset in this module yields the same item types.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        super().__init__(images, labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:  # type: ignore[override]
        images, labels = self.tensors
        return images[index], int(labels[index])


@dataclass(frozen=True, eq=False)
class DataSplits:
    """The three splits of one dataset for one seed.

    ``train`` and ``val`` are what a method may see; ``test`` is for the harness only.
    Each yields ``(image, label)`` with ``image`` a float tensor of shape 3 × 32 × 32
    (normalised) and ``label`` an ``int`` in ``[0, num_classes)``.

    The ``*_indices`` arrays (sorted, read-only, int64) say which source samples each split
    holds. ``train_indices`` and ``val_indices`` index the training pool: for ``digits`` the
    whole 1797-image set, of which ``test_indices`` is also a part (so all three are
    disjoint); for CIFAR the official 50 000-image training set, while ``test_indices`` index
    the official test set (all of it).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    name: str
    train_indices: np.ndarray
    val_indices: np.ndarray
    test_indices: np.ndarray


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_splits`."""
    return ["cifar10", "cifar100", "digits"]


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
            dataset folder itself is accepted too). Required for CIFAR, ignored for digits.
        download: let torchvision download CIFAR into ``data_dir`` when files are missing
            (or, with ``verify``, fail their checksum).
        val_fraction: share of the training pool held out as validation, in ``(0, 1)``.
        seed: seed of the train/val split and of ``train_subset`` (non-negative). The same
            seed gives the same split; the test split never depends on it.
        train_subset: if given, keep only this many training samples (a seeded, stratified
            subset of the train split, taken after the validation split).
        augment: random crop (padding 4) + horizontal flip on CIFAR training images.
            Validation and test images are never augmented; digits never are.
        verify: check the CIFAR files against torchvision's MD5 checksums. With ``False``
            the files must still all be present and readable.

    Raises:
        DataError: unknown name, bad arguments, missing / corrupt / unreadable files.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in list_datasets():
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(list_datasets())}")
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

    subset = None if train_subset is None else int(train_subset)
    if key == "digits":
        return _load_digits(val_fraction=val_fraction, seed=int(seed), train_subset=subset)
    from benchmark.cifar import CIFAR_SPECS, load_cifar  # torchvision: imported when needed

    return load_cifar(
        CIFAR_SPECS[key],
        data_dir,
        download=download,
        val_fraction=val_fraction,
        seed=int(seed),
        train_subset=subset,
        augment=augment,
        verify=verify,
    )


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` whose shuffling order is fixed by ``seed``.

    The order of samples (and the base seed of worker processes) comes from a private
    ``torch.Generator`` seeded with ``seed``, so two loaders built with the same arguments
    iterate in the same order. Random augmentations with ``num_workers=0`` draw from the
    global torch RNG and are therefore only reproducible if the caller seeds it.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_workers < 0:
        raise DataError(f"num_workers must be >= 0, got {num_workers}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
    )


def fixed_batch(dataset: Dataset, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` distinct samples chosen by ``seed``, stacked: ``(images, int64 labels)``.

    Deterministic for a given ``(dataset, n, seed)``, also on an augmented dataset: random
    transforms run under a torch RNG forked and seeded with ``seed``, and the global RNG is
    left untouched. Meant for calibration and zero-cost proxies.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"fixed_batch needs a positive number of samples, got {n!r}")
    if n > size:
        raise DataError(f"fixed_batch asked for {n} samples but the dataset has only {size}")
    indices = np.random.default_rng(int(seed)).choice(size, size=n, replace=False)
    images: list[Tensor] = []
    labels: list[int] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for index in indices.tolist():
            image, label = dataset[index]
            images.append(torch.as_tensor(image))
            labels.append(int(label))
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


# --------------------------------------------------------------------------- splitting


def _stratified_pick(
    labels: np.ndarray, pool: np.ndarray, n_pick: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``pool`` (indices into ``labels``) into ``n_pick`` picked and the rest.

    Seeded and stratified: the pool is shuffled by ``rng``, then samples are taken from every
    class in proportion to its size (each sample's key is its rank within its class divided
    by the class size; the ``n_pick`` smallest keys are picked). Both parts come back sorted.
    Works for any pool size, including classes with a single sample.
    """
    shuffled = rng.permutation(pool)
    _, inverse, counts = np.unique(labels[shuffled], return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    first_of_class = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(len(shuffled), dtype=np.int64)
    rank[order] = np.arange(len(shuffled)) - first_of_class[inverse[order]]
    keys = (rank + 0.5) / counts[inverse]
    chosen = np.argsort(keys, kind="stable")[:n_pick]
    mask = np.zeros(len(shuffled), dtype=bool)
    mask[chosen] = True
    return np.sort(shuffled[mask]), np.sort(shuffled[~mask])


def _split_train_val(
    labels: np.ndarray,
    pool: np.ndarray,
    *,
    val_fraction: float,
    seed: int,
    train_subset: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train / val split of ``pool``, then the optional train subset."""
    n_val = int(round(val_fraction * len(pool)))
    if n_val < 1 or n_val >= len(pool):
        raise DataError(
            f"val_fraction={val_fraction} of {len(pool)} training samples leaves an empty "
            "train or validation split: choose a val_fraction that keeps both non-empty"
        )
    val, train = _stratified_pick(labels, pool, n_val, np.random.default_rng((seed, 0)))
    if train_subset is not None:
        if train_subset > len(train):
            raise DataError(
                f"train_subset={train_subset} is larger than the {len(train)} training samples "
                "left after the validation split: lower train_subset or drop it"
            )
        if train_subset < len(train):
            train, _ = _stratified_pick(
                labels, train, train_subset, np.random.default_rng((seed, 1))
            )
    return train, val


def _frozen(indices: np.ndarray) -> np.ndarray:
    out = np.asarray(indices, dtype=np.int64).copy()
    out.setflags(write=False)
    return out


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from its (reproducible) torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


# --------------------------------------------------------------------------- digits


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


def _load_digits(*, val_fraction: float, seed: int, train_subset: int | None) -> DataSplits:
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


def check_data_dir(
    name: str, data_dir: str | Path | None, *, download: bool = False, verify: bool = True
) -> None:
    """Cheap check, before a run starts, that :func:`load_splits` will find dataset ``name``.

    Nothing is loaded and nothing is written: for CIFAR the files must be in ``data_dir``
    (and, with ``verify``, match torchvision's MD5 checksums, about a second of hashing);
    with ``download`` only a ``data_dir`` is required, since the files may be fetched later.
    ``digits`` needs nothing.

    Raises:
        DataError: unknown name, no ``data_dir``, missing / corrupt files (one line).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in list_datasets():
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(list_datasets())}")
    if key == "digits":
        return
    from benchmark.cifar import CIFAR_SPECS, check_cifar_files, cifar_root

    spec = CIFAR_SPECS[key]
    root = cifar_root(spec, data_dir)
    if not download:
        check_cifar_files(spec, root, verify=verify)
