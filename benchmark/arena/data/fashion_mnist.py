"""Fashion-MNIST (Zalando, MIT licence) through torchvision's reader, served like CIFAR.

70,000 grey 28 × 28 images of 10 clothing classes: the official 60,000 training images
give the train and validation splits, the official 10,000 test images the test split.
Every image is zero-padded to 32 × 32 and its grey channel repeated three times, so both
search spaces, every cost and every quantizer are exactly the CIFAR ones. Training images
get the CIFAR augmentation (random crop with 4 pixels of zero padding, horizontal flip);
validation and test images never do.

Where the files come from: ``--data-dir`` (a folder holding the four ``*-ubyte.gz`` files,
or torchvision's ``FashionMNIST/raw`` layout below it), else Debian's package
``dataset-fashion-mnist``, which installs them in :data:`DEBIAN_DIR`.

Checksums: the official ``.gz`` files match torchvision's MD5 table. Debian's package holds
the same compressed data under a different gzip header (no file name, the package's build
time: each file is shorter than the official one by exactly its name field), so its
``.gz`` MD5s differ; a file passes when its ``.gz`` matches torchvision's MD5 or its
decompressed bytes match the release's (:data:`CONTENT_MD5`, measured on the package).

Parsing is torchvision's own (:class:`torchvision.datasets.FashionMNIST`): the files are
decompressed into a temporary folder in torchvision's layout, read, and the folder removed.
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import FashionMNIST
from torchvision.datasets.utils import check_integrity

from benchmark.arena.data.splits import (
    IMAGE_SIZE,
    DataError,
    DataSplits,
    _frozen,
    _split_train_val,
    data_path,
    one_line,
)

TITLE = "Fashion-MNIST"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the four files."""

NUM_CLASSES = 10
CLASSES = tuple(FashionMNIST.classes)
SOURCE_SIZE = 28
"""Side of a Fashion-MNIST image in the files (pixels)."""
CROP_PADDING = 4
"""Zero padding of the random crop on training images (pixels), as for CIFAR."""

TRAIN_COUNT, TEST_COUNT = 60_000, 10_000

OFFICIAL_MD5: dict[str, str] = dict(FashionMNIST.resources)
"""torchvision's MD5 of each official ``.gz`` file."""

CONTENT_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
"""MD5 of each file's decompressed bytes (the IDX data itself)."""

FILES = tuple(OFFICIAL_MD5)

HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (files in "
    f"{DEBIAN_DIR}), or put the four official *-ubyte.gz files in a folder and pass "
    "--data-dir FOLDER"
)


def fashion_mnist_folder(data_dir: str | Path | None) -> Path:
    """The folder that holds the four ``.gz`` files: ``data_dir`` itself, or its
    ``FashionMNIST/raw`` (torchvision's layout) when the files are there; the Debian
    location when ``data_dir`` is ``None``."""
    if data_dir is None:
        return DEBIAN_DIR
    root = data_path(data_dir)
    for folder in (root, root / "FashionMNIST" / "raw", root / "raw"):
        try:
            if all((folder / name).is_file() for name in FILES):
                return folder
        except (OSError, ValueError):
            break
    return root


def _file_ok(path: Path, name: str) -> bool:
    """Whether ``path`` is the official file ``name``: torchvision's MD5 of the ``.gz``,
    else the MD5 of its decompressed bytes (Debian's repackaged files)."""
    if check_integrity(str(path), OFFICIAL_MD5[name]):
        return True
    try:
        with gzip.open(path, "rb") as stream:
            digest = hashlib.file_digest(stream, "md5").hexdigest()
    except (OSError, EOFError, zlib.error):  # not gzip, truncated, corrupt
        return False
    return digest == CONTENT_MD5[name]


def check_fashion_mnist_files(data_dir: str | Path | None, *, verify: bool = True) -> Path:
    """The folder of the four files, checked: all present and readable and, with
    ``verify``, each the official file (about 0.3 s of hashing). Nothing is written.

    Raises:
        DataError: one line naming what is wrong and how to get the files.
    """
    folder = fashion_mnist_folder(data_dir)
    where = "the Debian location " if data_dir is None else ""
    try:
        if not folder.is_dir():
            raise DataError(f"{TITLE} not found in {where}{folder} (no such directory): {HINT}")
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            cifar = (folder / "cifar-10-batches-py").is_dir() or (folder / "data_batch_1").exists()
            what = " (this looks like a CIFAR folder)" if cifar else ""
            raise DataError(
                f"{TITLE} is incomplete in {where}{folder}{what}: missing "
                f"{', '.join(missing)}: {HINT}"
            )
        bad = [name for name in FILES if verify and not _file_ok(folder / name, name)]
    except OSError as exc:  # a path the OS refuses, an unreadable file
        raise DataError(f"cannot read {TITLE} files in {folder} ({one_line(exc)}): {HINT}") from exc
    if bad:
        raise DataError(
            f"{TITLE} files in {folder} fail the MD5 checksum (corrupt, truncated or not "
            f"the official release): {', '.join(bad)}: {HINT}"
        )
    return folder


@lru_cache(maxsize=2)
def _read(folder: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train images, train labels, test images, test labels as torchvision reads them
    (uint8 N × 28 × 28, int64 N), cached per process."""
    try:
        with tempfile.TemporaryDirectory(prefix="mpqbench-fmnist-") as tmp:
            raw = Path(tmp) / "FashionMNIST" / "raw"
            raw.mkdir(parents=True)
            for name in FILES:
                with gzip.open(folder / name, "rb") as src:
                    (raw / name.removesuffix(".gz")).write_bytes(src.read())
            train = FashionMNIST(tmp, train=True)
            test = FashionMNIST(tmp, train=False)
            arrays = (train.data, train.targets, test.data, test.targets)
    except (OSError, EOFError, zlib.error, AssertionError, RuntimeError, ValueError) as exc:
        raise DataError(
            f"{TITLE} files in {folder} could not be read ({one_line(exc)}): they look "
            f"corrupt or truncated: {HINT}"
        ) from exc
    _check_arrays(*arrays, folder)
    return arrays


def _check_arrays(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, folder: Path
) -> None:
    """Reject files that parsed but do not hold Fashion-MNIST-shaped data."""
    for split, x, y, count in (
        ("training", train_x, train_y, TRAIN_COUNT),
        ("test", test_x, test_y, TEST_COUNT),
    ):
        problem = None
        if x.dtype != torch.uint8 or tuple(x.shape) != (count, SOURCE_SIZE, SOURCE_SIZE):
            problem = f"images of dtype {x.dtype} and shape {tuple(x.shape)}"
        elif tuple(y.shape) != (count,):
            problem = f"{len(y)} labels for {len(x)} images"
        elif int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES:
            problem = f"labels in [{int(y.min())}, {int(y.max())}]"
        if problem is not None:
            raise DataError(
                f"{TITLE} {split} files in {folder} hold {problem}, expected {count} "
                f"28 × 28 uint8 images with labels 0-9: {HINT}"
            )


class GreyImages(Dataset):
    """Grey images served as normalised 3 × 32 × 32 float tensors with an ``int`` label.

    ``images`` is uint8, N × (32 + 2·pad) × (32 + 2·pad): already zero-padded for the crop.
    With ``augment``, each item is a random 32 × 32 crop (offsets uniform in
    ``[0, 2·pad]``, i.e. torchvision's ``RandomCrop(32, padding=pad)``) flipped left-right
    with probability 0.5, drawn from the global torch RNG as torchvision's transforms do;
    without it, the centre crop (the unpadded image). Only ``indices`` are served.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        indices: np.ndarray,
        *,
        pad: int,
        augment: bool,
        mean: float,
        std: float,
    ) -> None:
        self.images, self.labels, self.pad, self.augment = images, labels, pad, augment
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        # normalise uint8 pixels in one multiply-add: (p / 255 - mean) / std
        self.scale, self.shift = 1.0 / (255.0 * std), -mean / std

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        i = int(self.indices[index])
        side = 2 * self.pad + 1
        if self.augment:
            draw = int(torch.randint(0, side * side * 2, ()))
            top, left, flip = draw // (2 * side), (draw // 2) % side, draw % 2
            image = self.images[i, top : top + IMAGE_SIZE, left : left + IMAGE_SIZE]
            if flip:
                image = image.flip(-1)
        else:
            p = self.pad
            image = self.images[i, p : p + IMAGE_SIZE, p : p + IMAGE_SIZE]
        out = image.to(torch.float32).mul_(self.scale).add_(self.shift)
        return out.expand(3, IMAGE_SIZE, IMAGE_SIZE), int(self.labels[i])


def _padded(images: Tensor, pad: int) -> Tensor:
    """uint8 N × 28 × 28 → N × (32 + 2·pad)², the image centred and zero elsewhere."""
    border = (IMAGE_SIZE - SOURCE_SIZE) // 2 + pad
    return torch.nn.functional.pad(images, (border, border, border, border)).contiguous()


def load_fashion_mnist(
    data_dir: str | Path | None,
    *,
    val_fraction: float,
    seed: int,
    train_subset: int | None,
    augment: bool,
    verify: bool,
    mean: float,
    std: float,
) -> DataSplits:
    """Fashion-MNIST split into train / val (from the 60,000 training images, seeded and
    stratified) and test (the official 10,000), normalised with ``mean`` / ``std`` ([0, 1]
    pixel units, the same for the three repeated channels)."""
    folder = check_fashion_mnist_files(data_dir, verify=verify)
    train_x, train_y, test_x, test_y = _read(folder)
    labels = train_y.numpy()
    train, val = _split_train_val(
        labels,
        np.arange(len(labels)),
        val_fraction=val_fraction,
        seed=seed,
        train_subset=train_subset,
    )
    pool = _padded(train_x, CROP_PADDING)
    norm = {"mean": mean, "std": std}
    test = np.arange(len(test_y))
    return DataSplits(
        train=GreyImages(pool, train_y, train, pad=CROP_PADDING, augment=augment, **norm),
        val=GreyImages(pool, train_y, val, pad=CROP_PADDING, augment=False, **norm),
        test=GreyImages(_padded(test_x, 0), test_y, test, pad=0, augment=False, **norm),
        num_classes=NUM_CLASSES,
        name="fashion-mnist",
        train_indices=_frozen(train),
        val_indices=_frozen(val),
        test_indices=_frozen(test),
    )
