"""The split machinery every dataset shares: the splits container, seeded loaders,
stratified train / validation splitting and fixed batches.

Images are 3 × 32 × 32 float tensors with an ``int`` class label.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

IMAGE_SIZE = 32
"""Side of every image served by the datasets (pixels)."""


class DataError(ValueError):
    """A dataset that cannot be loaded or split as asked (one-line, actionable message)."""


def data_path(data_dir: str | Path) -> Path:
    """``data_dir`` with ``~`` expanded; :class:`DataError` for a ``~user`` that does not
    exist (``--data-dir ~nouser/x``)."""
    try:
        return Path(data_dir).expanduser()
    except RuntimeError as err:
        raise DataError(f"--data-dir {data_dir}: {err} (check the path)") from None


def one_line(exc: BaseException) -> str:
    """``exc`` as ``Type: message`` on one line of at most ~200 characters (for DataError)."""
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:200]}"


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


def split_sizes(
    pool: int, val_fraction: float, train_subset: int | None, *, minimum: int = 1
) -> tuple[int, int]:
    """``(validation, train)`` image counts of a training pool of ``pool`` images split at
    ``val_fraction`` (then cut to ``train_subset``), checked before anything is loaded:
    each split must hold at least ``minimum`` images (the loader: 1; a run's pre-check:
    one per class).

    Raises:
        DataError: a split would hold fewer than ``minimum`` images, or ``train_subset``
            is more than is left.
    """
    n_val = int(round(val_fraction * pool))
    if n_val < 1 or n_val >= pool:
        raise DataError(
            f"val_fraction={val_fraction} of {pool} training samples leaves an empty "
            "train or validation split: choose a val_fraction that keeps both non-empty"
        )
    n_train = pool - n_val
    if train_subset is not None:
        if train_subset > n_train:
            raise DataError(
                f"train_subset={train_subset} is larger than the {n_train} training samples "
                "left after the validation split: lower train_subset or drop it"
            )
        n_train = train_subset
    if min(n_val, n_train) < minimum:
        raise DataError(
            f"val_fraction={val_fraction} of {pool} training samples leaves {n_val} for "
            f"validation and {n_train} for training, fewer than the {minimum} classes: "
            "choose a val_fraction (and train_subset) that leaves each split one image a class"
        )
    return n_val, n_train


def _split_train_val(
    labels: np.ndarray,
    pool: np.ndarray,
    *,
    val_fraction: float,
    seed: int,
    train_subset: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train / val split of ``pool``, then the optional train subset."""
    n_val, _ = split_sizes(len(pool), val_fraction, train_subset)
    val, train = _stratified_pick(labels, pool, n_val, np.random.default_rng((seed, 0)))
    if train_subset is not None:
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
