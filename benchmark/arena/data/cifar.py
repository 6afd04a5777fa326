"""CIFAR-10/100 through torchvision, split like every dataset of :mod:`benchmark.arena.data`.

Kept apart from :mod:`benchmark.arena.data` because importing torchvision costs about 2 s per
process (it imports ``torch._dynamo``): runs on the embedded ``digits`` never pay it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Subset
from torchvision import transforms as T
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity, download_and_extract_archive
from torchvision.datasets.vision import StandardTransform

from benchmark.arena.data.splits import (
    IMAGE_SIZE,
    DataError,
    DataSplits,
    _frozen,
    _split_train_val,
    data_path,
    one_line,
)


class _UnverifiedCIFAR10(CIFAR10):
    """torchvision's CIFAR-10 with the per-file MD5 check off (files must still exist)."""

    train_list = [[filename, None] for filename, _ in CIFAR10.train_list]
    test_list = [[filename, None] for filename, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class _UnverifiedCIFAR100(CIFAR100):
    """torchvision's CIFAR-100 with the per-file MD5 check off (files must still exist)."""

    train_list = [[filename, None] for filename, _ in CIFAR100.train_list]
    test_list = [[filename, None] for filename, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    title: str
    verified: type[CIFAR10]
    unverified: type[CIFAR10]
    num_classes: int

    @property
    def files(self) -> list[tuple[str, str]]:
        """``(filename, md5)`` of every file the dataset needs, in its base folder."""
        cls = self.verified
        entries = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
        return [(str(filename), str(md5)) for filename, md5 in entries]


CIFAR_SPECS: dict[str, _CifarSpec] = {
    "cifar10": _CifarSpec(
        "cifar10",
        "CIFAR-10",
        CIFAR10,
        _UnverifiedCIFAR10,
        10,
    ),
    "cifar100": _CifarSpec(
        "cifar100",
        "CIFAR-100",
        CIFAR100,
        _UnverifiedCIFAR100,
        100,
    ),
}


def cifar_root(spec: _CifarSpec, data_dir: str | Path | None) -> Path:
    """The folder that holds (or will hold) the dataset's base folder."""
    base = spec.verified.base_folder
    if data_dir is None:
        raise DataError(
            f"{spec.title} needs a data directory: pass --data-dir pointing at the folder "
            f"holding {base} (add --download on a machine with internet to fetch it there)"
        )
    root = data_path(data_dir)
    if root.name == base and not (root / base).exists():
        root = root.parent  # the user pointed at the dataset folder itself
    return root


def _missing_files(spec: _CifarSpec, folder: Path) -> list[str]:
    return [filename for filename, _ in spec.files if not (folder / filename).is_file()]


def check_cifar_files(spec: _CifarSpec, root: Path, *, verify: bool) -> None:
    """Every file of ``spec`` present under ``root`` (and matching its MD5 with ``verify``)."""
    base = spec.verified.base_folder
    folder = root / base
    hint = (
        f"pass --data-dir pointing at the folder holding {base}, "
        "or add --download on a machine with internet"
    )
    try:
        root_found, folder_found = root.is_dir(), folder.is_dir()
        missing = _missing_files(spec, folder) if folder_found else []
        corrupt = []
        if folder_found and verify and not missing:
            corrupt = [f for f, md5 in spec.files if not check_integrity(folder / f, md5)]
    except (OSError, ValueError) as exc:  # a path the OS refuses, an unreadable file
        raise DataError(
            f"cannot read {spec.title} files in {root} ({one_line(exc)}): {hint}"
        ) from exc
    if not root_found:
        raise DataError(f"{spec.title} not found in {root} (no such directory): {hint}")
    if not folder_found:
        raise DataError(f"{spec.title} not found in {root} (no {base} folder there): {hint}")
    if missing:
        raise DataError(
            f"{spec.title} is incomplete in {folder}: missing {', '.join(missing)}: {hint}"
        )
    if corrupt:
        raise DataError(
            f"{spec.title} files in {folder} fail the MD5 checksum (corrupt or not the "
            f"official release): {', '.join(corrupt)}: delete them and re-download "
            "(--download), or skip the check with verify=False"
        )


def _download_cifar(spec: _CifarSpec, root: Path, folder: Path, verify: bool) -> None:
    """Download and extract the official archive unless all files are already there."""
    present = not _missing_files(spec, folder)
    if present and (not verify or all(check_integrity(folder / f, md5) for f, md5 in spec.files)):
        return
    cls = spec.verified
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as exc:  # network, disk or archive errors from torchvision
        raise DataError(
            f"downloading {spec.title} into {root} failed ({one_line(exc)}): check the "
            f"internet connection, or fetch {cls.filename} by hand and extract it there"
        ) from exc


def load_cifar(
    spec: _CifarSpec,
    data_dir: str | Path | None,
    *,
    download: bool,
    val_fraction: float,
    seed: int,
    train_subset: int | None,
    augment: bool,
    verify: bool,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> DataSplits:
    """CIFAR split into train / val (seeded, stratified) and test (the official test set),
    normalised with ``mean`` / ``std`` (per channel, [0, 1] pixel units)."""
    root = cifar_root(spec, data_dir)
    folder = root / spec.verified.base_folder
    if download:
        _download_cifar(spec, root, folder, verify)
    check_cifar_files(spec, root, verify=verify)

    eval_tf, train_tf = _transforms(mean, std, augment)
    train_aug, test_ds = _read_cifar(spec, root, folder, train_tf, eval_tf)

    # The validation subset comes from the same training files but without augmentation:
    # a second dataset object sharing the loaded arrays, with the evaluation transform.
    train_plain = copy.copy(train_aug)
    train_plain.transform = eval_tf
    train_plain.transforms = StandardTransform(eval_tf, None)

    labels = np.asarray(train_aug.targets, dtype=np.int64)
    train, val = _split_train_val(
        labels,
        np.arange(len(labels)),
        val_fraction=val_fraction,
        seed=seed,
        train_subset=train_subset,
    )
    test = np.arange(len(test_ds))
    return DataSplits(
        train=Subset(train_aug, train.tolist()),
        val=Subset(train_plain, val.tolist()),
        test=test_ds,
        num_classes=spec.num_classes,
        name=spec.name,
        train_indices=_frozen(train),
        val_indices=_frozen(val),
        test_indices=_frozen(test),
    )


def _transforms(
    mean: tuple[float, ...], std: tuple[float, ...], augment: bool
) -> tuple[T.Compose, T.Compose]:
    """``(evaluation, training)`` transforms: normalised tensors; training adds the
    CIFAR augmentation (random crop with 4-pixel padding, horizontal flip) if ``augment``."""
    normalize = T.Normalize(mean, std)
    eval_tf = T.Compose([T.ToTensor(), normalize])
    if not augment:
        return eval_tf, eval_tf
    crop_flip = [T.RandomCrop(IMAGE_SIZE, padding=4), T.RandomHorizontalFlip()]
    return eval_tf, T.Compose([*crop_flip, T.ToTensor(), normalize])


def _read_cifar(
    spec: _CifarSpec, root: Path, folder: Path, train_tf: T.Compose, eval_tf: T.Compose
) -> tuple[CIFAR10, CIFAR10]:
    """The (already checked) training and test files as datasets, each array checked."""
    # Integrity was checked before (once, if asked): load through the unverified subclass
    # so torchvision does not hash every file again for each dataset object.
    try:
        train_aug = spec.unverified(str(root), train=True, transform=train_tf)
        test_ds = spec.unverified(str(root), train=False, transform=eval_tf)
    except Exception as exc:  # pickle / numpy / torchvision errors on a bad file
        raise DataError(
            f"{spec.title} files in {folder} could not be read ({one_line(exc)}): they look "
            "corrupt or truncated: delete them and re-download (--download)"
        ) from exc
    for dataset, split in ((train_aug, "training"), (test_ds, "test")):
        _check_cifar_arrays(spec, dataset, split, folder)
    return train_aug, test_ds


def _check_cifar_arrays(spec: _CifarSpec, dataset: CIFAR10, split: str, folder: Path) -> None:
    """Reject files that unpickled but do not hold CIFAR-shaped data."""
    data = dataset.data
    targets: Sequence[int] = dataset.targets
    problem = None
    if data.dtype != np.uint8 or data.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        problem = f"images of dtype {data.dtype} and shape {data.shape[1:]}"
    elif len(targets) != len(data):
        problem = f"{len(data)} images but {len(targets)} labels"
    elif len(data) == 0:
        problem = "no images"
    else:
        low, high = int(np.min(targets)), int(np.max(targets))
        if low < 0 or high >= spec.num_classes:
            problem = f"labels in [{low}, {high}], expected [0, {spec.num_classes - 1}]"
    if problem is not None:
        raise DataError(
            f"{spec.title} {split} files in {folder} hold {problem}: they are not valid "
            f"{spec.title} files: delete them and re-download (--download)"
        )
