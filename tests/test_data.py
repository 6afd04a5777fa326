"""Tests of benchmark.arena.data: splits, hygiene, CIFAR file handling, loaders (no downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.arena.data import (
    DataError,
    DataSplits,
    check_data_dir,
    fixed_batch,
    list_datasets,
    load_splits,
    make_loader,
)
from benchmark.arena.data import cifar as cifar_module

CIFAR10_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
CIFAR10_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)


# --------------------------------------------------------------------------- fake CIFAR files


def _dump(path: Path, obj: dict) -> None:
    # str keys, as torchvision reads them: the official Python-2 pickles are unpickled with
    # encoding="latin1", which turns their keys into str (a b"data" key would not be found).
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 20) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 in the real on-disk layout; returns the raw training arrays."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(123)
    all_data, all_labels = [], []
    for b in range(1, 6):
        images = _images(rng, per_batch)
        labels = [int(i % 10) for i in range(b, b + per_batch)]
        _dump(
            folder / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "labels": labels,
                "data": images,
                "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)],
            },
        )
        all_data.append(images)
        all_labels.extend(labels)
    _dump(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [i % 10 for i in range(n_test)],
            "data": _images(rng, n_test),
            "filenames": [f"test_{i}.png" for i in range(n_test)],
        },
    )
    _dump(
        folder / "batches.meta",
        {
            "num_cases_per_batch": per_batch,
            "label_names": [f"class{i}" for i in range(10)],
            "num_vis": 3072,
        },
    )
    return {"data": np.concatenate(all_data), "labels": np.asarray(all_labels)}


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> None:
    """Tiny CIFAR-100 in the real on-disk layout."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [i % 100 for i in range(n)]
        _dump(
            folder / split,
            {
                "filenames": [f"{split}_{i}.png" for i in range(n)],
                "batch_label": f"{split}ing batch 1 of 1",
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": _images(rng, n),
            },
        )
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    raw = write_cifar10(tmp_path)
    return tmp_path, raw


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_splits("digits", seed=0)


def test_list_datasets() -> None:
    assert list_datasets() == ["cifar10", "cifar100", "digits", "fashion-mnist"]


def test_digits_shapes_and_sizes(digits: DataSplits) -> None:
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert len(digits.test) == round(0.2 * 1797)
    assert len(digits.val) == round(0.1 * (1797 - len(digits.test)))
    for split in (digits.train, digits.val, digits.test):
        image, label = split[0]
        assert image.shape == (3, 32, 32)
        assert image.dtype == torch.float32
        assert isinstance(label, int) and 0 <= label < 10
    images = digits.train.tensors[0]
    assert torch.equal(images[:, 0], images[:, 2])  # grayscale repeated to RGB
    assert abs(float(images.mean())) < 0.1 and abs(float(images.std()) - 1) < 0.1
    # every class in every split (stratified)
    for split in (digits.train, digits.val, digits.test):
        assert set(split.tensors[1].tolist()) == set(range(10))


def test_digits_splits_disjoint_and_cover(digits: DataSplits) -> None:
    train, val, test = (set(s.tolist()) for s in _indices(digits))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(1797))
    assert len(train) == len(digits.train) and len(val) == len(digits.val)
    from benchmark.arena.data import DATASETS

    assert len(train | val) == DATASETS["digits"].train_pool  # what pre-run checks split
    with pytest.raises(ValueError):
        digits.train_indices[0] = 5  # read-only


def test_digits_indices_match_data(digits: DataSplits) -> None:
    from sklearn.datasets import load_digits

    targets = load_digits().target
    splits = (digits.train, digits.val, digits.test)
    for split, indices in zip(splits, _indices(digits), strict=True):
        assert split.tensors[1].tolist() == targets[indices].tolist()


def test_digits_seeds(digits: DataSplits) -> None:
    same = load_splits("digits", seed=0)
    other = load_splits("digits", seed=1)
    for a, b in zip(_indices(digits), _indices(same), strict=True):
        np.testing.assert_array_equal(a, b)
    assert torch.equal(digits.train.tensors[0], same.train.tensors[0])
    assert not np.array_equal(digits.val_indices, other.val_indices)
    assert not np.array_equal(digits.train_indices, other.train_indices)
    # the test split never depends on the seed, nor do its tensors
    np.testing.assert_array_equal(digits.test_indices, other.test_indices)
    assert torch.equal(digits.test.tensors[0], other.test.tensors[0])
    assert torch.equal(digits.test.tensors[1], other.test.tensors[1])


def test_digits_train_subset_and_val_fraction() -> None:
    splits = load_splits("digits", seed=3, train_subset=100, val_fraction=0.25)
    assert len(splits.train) == 100 == len(splits.train_indices)
    full = load_splits("digits", seed=3, val_fraction=0.25)
    np.testing.assert_array_equal(splits.val_indices, full.val_indices)
    assert set(splits.train_indices.tolist()) <= set(full.train_indices.tolist())
    with pytest.raises(DataError, match="train_subset"):
        load_splits("digits", train_subset=10_000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"seed": -1}, "seed"),
        ({"train_subset": 0}, "train_subset"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_splits("digits", **kwargs)


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(DataError) as info:
        load_splits("imagenet")
    message = str(info.value)
    assert "imagenet" in message and "\n" not in message
    for name in list_datasets():
        assert name in message
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- loaders


def test_loader_reproducible(digits: DataSplits) -> None:
    def labels(seed: int) -> list[int]:
        loader = make_loader(digits.train, 64, shuffle=True, seed=seed)
        return torch.cat([y for _, y in loader]).tolist()

    first = labels(0)
    assert first == labels(0)
    assert first != labels(1)
    assert sorted(first) == sorted(digits.train.tensors[1].tolist())
    loader = make_loader(digits.val, 50, shuffle=False, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(digits.val) // 50
    x, y = batches[0]
    assert x.shape == (50, 3, 32, 32) and y.dtype == torch.long


def test_fixed_batch(digits: DataSplits) -> None:
    x1, y1 = fixed_batch(digits.train, 16, seed=5)
    x2, y2 = fixed_batch(digits.train, 16, seed=5)
    x3, _ = fixed_batch(digits.train, 16, seed=6)
    assert x1.shape == (16, 3, 32, 32) and y1.shape == (16,) and y1.dtype == torch.long
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    with pytest.raises(DataError):
        fixed_batch(digits.val, len(digits.val) + 1)


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_loads(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = cifar10_dir
    splits = load_splits("cifar10", root, verify=False, seed=0, val_fraction=0.2)
    assert splits.name == "cifar10" and splits.num_classes == 10
    assert len(splits.train) == 80 and len(splits.val) == 20 and len(splits.test) == 20
    np.testing.assert_array_equal(splits.test_indices, np.arange(20))
    train, val = set(splits.train_indices.tolist()), set(splits.val_indices.tolist())
    assert not train & val and train | val == set(range(100))
    for split in (splits.train, splits.val, splits.test):
        image, label = split[0]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert isinstance(label, int) and 0 <= label < 10
    # labels follow the indices; pixels are the raw CHW rows, normalised (no augmentation)
    for i, source in enumerate(splits.val_indices.tolist()):
        image, label = splits.val[i]
        assert label == raw["labels"][source]
        expected = torch.from_numpy(raw["data"][source].reshape(3, 32, 32)).float() / 255
        torch.testing.assert_close(image, (expected - CIFAR10_MEAN) / CIFAR10_STD)


def test_cifar10_val_not_augmented_train_augmented(
    cifar10_dir: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, _ = cifar10_dir
    splits = load_splits("cifar10", root, verify=False, augment=True)
    torch.manual_seed(0)
    assert torch.equal(splits.val[0][0], splits.val[0][0])
    assert torch.equal(splits.test[3][0], splits.test[3][0])
    draws = [splits.train[0][0] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    # fixed_batch is deterministic even on the augmented split
    x1, y1 = fixed_batch(splits.train, 10, seed=2)
    x2, y2 = fixed_batch(splits.train, 10, seed=2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)

    plain = load_splits("cifar10", root, verify=False, augment=False)
    assert torch.equal(plain.train[0][0], plain.train[0][0])


def test_cifar10_seeds_and_subset(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar10_dir
    a = load_splits("cifar10", root, verify=False, seed=0)
    b = load_splits("cifar10", root, verify=False, seed=0)
    c = load_splits("cifar10", root, verify=False, seed=1)
    np.testing.assert_array_equal(a.train_indices, b.train_indices)
    np.testing.assert_array_equal(a.val_indices, b.val_indices)
    assert not np.array_equal(a.val_indices, c.val_indices)
    np.testing.assert_array_equal(a.test_indices, c.test_indices)

    small = load_splits("cifar10", root, verify=False, seed=0, train_subset=30)
    assert len(small.train) == 30 == len(small.train_indices)
    np.testing.assert_array_equal(small.val_indices, a.val_indices)
    assert set(small.train_indices.tolist()) <= set(a.train_indices.tolist())
    loader = make_loader(small.train, 8, shuffle=True, seed=0)
    assert sum(len(y) for _, y in loader) == 30


def test_cifar10_accepts_dataset_folder(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar10_dir
    splits = load_splits("cifar10", root / "cifar-10-batches-py", verify=False)
    assert len(splits.test) == 20


def test_cifar100_loads(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    splits = load_splits("CIFAR100", str(tmp_path), verify=False, seed=0)
    assert splits.name == "cifar100" and splits.num_classes == 100
    assert len(splits.train) == 180 and len(splits.val) == 20 and len(splits.test) == 100
    image, label = splits.val[0]
    assert image.shape == (3, 32, 32)
    assert label == splits.val_indices[0] % 100  # fine labels were written as i % 100
    assert torch.equal(splits.val[1][0], splits.val[1][0])
    assert sorted(splits.test[i][1] for i in range(100)) == list(range(100))


def test_cifar_verify_rejects_unofficial_files(
    cifar10_dir: tuple[Path, dict[str, np.ndarray]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root, _ = cifar10_dir
    with pytest.raises(DataError, match="checksum") as info:
        load_splits("cifar10", root, verify=True)
    assert "corrupt" in str(info.value) and "\n" not in str(info.value)
    root100 = tmp_path_factory.mktemp("c100")
    write_cifar100(root100)
    with pytest.raises(DataError, match="checksum"):
        load_splits("cifar100", root100)


def test_cifar_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        load_splits("cifar10", tmp_path / "nowhere", verify=False)
    assert "--data-dir" in str(info.value) and "--download" in str(info.value)
    with pytest.raises(DataError, match="cifar-100-python"):
        load_splits("cifar100", tmp_path)  # exists, but holds no dataset folder


def test_check_data_dir_is_the_cheap_form_of_the_loader_checks(
    cifar10_dir: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    root, _ = cifar10_dir
    check_data_dir("digits", None)  # needs nothing
    check_data_dir("cifar10", root, verify=False)  # files present
    check_data_dir("cifar10", root / "cifar-10-batches-py", verify=False)
    with pytest.raises(DataError, match="checksum"):  # not the official files
        check_data_dir("cifar10", root)
    with pytest.raises(DataError, match="--data-dir"):
        check_data_dir("cifar10", None)
    with pytest.raises(DataError, match="no such directory"):
        check_data_dir("cifar10", tmp_path / "nowhere")
    check_data_dir("cifar10", tmp_path / "nowhere", download=True)  # fetched later
    with pytest.raises(DataError, match="unknown dataset"):
        check_data_dir("mnist", root)


def test_cifar_missing_file(cifar10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar10_dir
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_splits("cifar10", root, verify=False)


@pytest.mark.parametrize("content", [b"this is not a pickle", b""])
def test_cifar_unreadable_file(
    cifar10_dir: tuple[Path, dict[str, np.ndarray]], content: bytes
) -> None:
    root, _ = cifar10_dir
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(content)
    with pytest.raises(DataError, match="could not be read") as info:
        load_splits("cifar10", root, verify=False)
    assert "\n" not in str(info.value)


def test_cifar_truncated_and_wrong_content(
    cifar10_dir: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, _ = cifar10_dir
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    payload = batch.read_bytes()
    batch.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="corrupt"):
        load_splits("cifar10", root, verify=False)
    _dump(batch, {"data": np.zeros((20, 3072), np.uint8), "labels": [42] * 20})
    with pytest.raises(DataError, match="labels"):
        load_splits("cifar10", root, verify=False)


def test_cifar_needs_data_dir() -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_splits("cifar10")
    with pytest.raises(DataError, match="--data-dir"):
        load_splits("cifar100", None, download=True)


def test_cifar_download_failure_is_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="downloading CIFAR-10"):
        load_splits("cifar10", tmp_path / "new", download=True)


def test_cifar_download_skipped_when_present(
    cifar10_dir: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = cifar10_dir

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("should not download")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", fail)
    assert len(load_splits("cifar10", root, download=True, verify=False).test) == 20


# --------------------------------------------------------------------------- helpers


def _indices(splits: DataSplits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return splits.train_indices, splits.val_indices, splits.test_indices
