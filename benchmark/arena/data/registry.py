"""The dataset registry: name → loader, file checker, normalisation and class count.

A dataset is added with one :class:`DatasetEntry` in :data:`DATASETS`, not another branch.
Loaders that need torchvision import it only when called (about 2 s per process), so runs
on the embedded ``digits`` never pay it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmark.arena.data.digits import DIGITS_TEST_FRACTION
from benchmark.arena.data.splits import DataSplits

Loader = Callable[..., DataSplits]
"""``load(data_dir, *, download, val_fraction, seed, train_subset, augment, verify)``."""

Checker = Callable[..., None]
"""``check(data_dir, *, download, verify)``: raises :class:`DataError` (one line) when the
loader would fail; reads nothing but the files' presence and checksums, writes nothing."""


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset the suite can serve (every image 3 × 32 × 32, normalised)."""

    name: str
    title: str
    description: str
    num_classes: int
    mean: tuple[float, float, float] | None
    """Per-channel mean in [0, 1] pixel units; ``None``: computed from the data."""
    std: tuple[float, float, float] | None
    load: Loader
    check: Checker
    needs_data_dir: bool
    """Whether a run must name ``--data-dir`` (or ``--download``): no default location."""
    train_pool: int
    """Images the train and validation splits are drawn from (the test split left out):
    what a preset's ``val_fraction`` and ``train_subset`` are checked against before a run."""


# --------------------------------------------------------------------------- loaders


def _load_digits(data_dir: str | Path | None, **kwargs: object) -> DataSplits:
    from benchmark.arena.data.digits import load_digits

    return load_digits(
        val_fraction=kwargs["val_fraction"],
        seed=kwargs["seed"],
        train_subset=kwargs["train_subset"],
    )


def _check_nothing(data_dir: str | Path | None, *, download: bool, verify: bool) -> None:
    """The embedded data needs no files."""


def _cifar_loader(key: str) -> Loader:
    def load(data_dir: str | Path | None, **kwargs: object) -> DataSplits:
        from benchmark.arena.data.cifar import CIFAR_SPECS, load_cifar

        entry = DATASETS[key]
        return load_cifar(CIFAR_SPECS[key], data_dir, mean=entry.mean, std=entry.std, **kwargs)

    return load


def _cifar_checker(key: str) -> Checker:
    def check(data_dir: str | Path | None, *, download: bool, verify: bool) -> None:
        from benchmark.arena.data.cifar import CIFAR_SPECS, check_cifar_files, cifar_root

        spec = CIFAR_SPECS[key]
        root = cifar_root(spec, data_dir)
        if not download:
            check_cifar_files(spec, root, verify=verify)

    return check


def _load_fashion_mnist(data_dir: str | Path | None, **kwargs: object) -> DataSplits:
    from benchmark.arena.data.fashion_mnist import load_fashion_mnist

    kwargs.pop("download")  # see _check_fashion_mnist
    entry = DATASETS["fashion-mnist"]  # the padded training images' mean and std
    return load_fashion_mnist(data_dir, mean=entry.mean[0], std=entry.std[0], **kwargs)


def _check_fashion_mnist(data_dir: str | Path | None, *, download: bool, verify: bool) -> None:
    from benchmark.arena.data.fashion_mnist import check_fashion_mnist_files

    # --download is not needed: the files come from a distribution package or by hand
    check_fashion_mnist_files(data_dir, verify=verify)


DIGITS_IMAGES = 1_797
DIGITS_TRAIN_POOL = DIGITS_IMAGES - int(round(DIGITS_TEST_FRACTION * DIGITS_IMAGES))
"""scikit-learn's digits less their fixed test split."""

DATASETS: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in (
        DatasetEntry(
            "cifar10",
            "CIFAR-10",
            "CIFAR-10 (50k train / 10k test colour images) from --data-dir",
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            _cifar_loader("cifar10"),
            _cifar_checker("cifar10"),
            needs_data_dir=True,
            train_pool=50_000,
        ),
        DatasetEntry(
            "cifar100",
            "CIFAR-100",
            "CIFAR-100 (50k train / 10k test colour images, 100 classes) from --data-dir",
            100,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            _cifar_loader("cifar100"),
            _cifar_checker("cifar100"),
            needs_data_dir=True,
            train_pool=50_000,
        ),
        DatasetEntry(
            "digits",
            "digits",
            "scikit-learn's embedded 8x8 digits (1,797 images): no files, for smoke runs",
            10,
            None,
            None,
            _load_digits,
            _check_nothing,
            needs_data_dir=False,
            train_pool=DIGITS_TRAIN_POOL,
        ),
        DatasetEntry(
            "fashion-mnist",
            "Fashion-MNIST",
            "Fashion-MNIST (60k train / 10k test grey images, padded to 32x32): "
            "apt-get install dataset-fashion-mnist, or --data-dir",
            10,
            (0.2190, 0.2190, 0.2190),
            (0.3318, 0.3318, 0.3318),
            _load_fashion_mnist,
            _check_fashion_mnist,
            needs_data_dir=False,
            train_pool=60_000,
        ),
    )
}
