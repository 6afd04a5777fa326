"""Fashion-MNIST: the real files (counts, classes, checksums, a batch's shape and range, the
split's disjointness), bad files (one line, exit 2, nothing written) and one short trial.

The tests that read the real files need Debian's ``dataset-fashion-mnist`` package (what
``.ci/run`` installs); where it is missing they are skipped with that reason. The tests of
bad files build their own small files and always run.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.arena.data import DATASETS, DataError, check_data_dir, fixed_batch, load_splits
from benchmark.arena.data import fashion_mnist as fm
from benchmark.arena.presets import load_preset
from benchmark.cli import main

INSTALLED = all((fm.DEBIAN_DIR / name).is_file() for name in fm.FILES)
needs_files = pytest.mark.skipif(
    not INSTALLED,
    reason=f"Fashion-MNIST is not installed in {fm.DEBIAN_DIR} "
    "(apt-get install dataset-fashion-mnist)",
)
ENTRY = DATASETS["fashion-mnist"]
LOW = -ENTRY.mean[0] / ENTRY.std[0]  # a zero pixel (background, padding) once normalised
HIGH = (1 - ENTRY.mean[0]) / ENTRY.std[0]


@pytest.fixture(scope="module")
def splits():
    if not INSTALLED:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return load_splits("fashion-mnist", val_fraction=0.2, seed=3)


# --------------------------------------------------------------------------- real files
@needs_files
def test_the_real_files_pass_their_checksums() -> None:
    assert fm.check_fashion_mnist_files(None) == fm.DEBIAN_DIR
    check_data_dir("fashion-mnist", None)  # what `run` calls before anything starts
    check_data_dir("fashion-mnist", fm.DEBIAN_DIR)


@needs_files
def test_counts_classes_and_disjoint_splits(splits) -> None:
    assert (len(splits.train), len(splits.val), len(splits.test)) == (48_000, 12_000, 10_000)
    assert splits.num_classes == 10 and splits.name == "fashion-mnist"
    train, val = set(splits.train_indices.tolist()), set(splits.val_indices.tolist())
    assert not train & val and train | val == set(range(60_000))
    assert DATASETS["fashion-mnist"].train_pool == 60_000  # what pre-run checks split
    assert splits.test_indices.tolist() == list(range(10_000))  # the official test set, all
    labels = splits.train.labels
    # stratified: 1,200 validation images of each of the 10 classes (6,000 per class in all)
    val_labels = labels[torch.as_tensor(splits.val_indices.copy())]
    val_counts = np.bincount(val_labels.numpy(), minlength=10)
    assert val_counts.tolist() == [1200] * 10
    assert np.bincount(splits.test.labels.numpy()).tolist() == [1000] * 10
    assert fm.CLASSES[9] == "Ankle boot" and int(labels[0]) == 9  # the release's first image


@needs_files
def test_a_batch_is_cifar_shaped_and_normalised(splits) -> None:
    x, y = fixed_batch(splits.val, 64, seed=0)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey, repeated
    assert float(x.min()) == pytest.approx(LOW) and float(x.max()) <= HIGH + 1e-5
    border = torch.cat([x[..., :2, :].flatten(), x[..., -2:, :].flatten()])
    assert torch.allclose(border, torch.full_like(border, LOW))  # the zero padding to 32
    image, label = splits.test[0]
    assert image.shape == (3, 32, 32) and isinstance(label, int)


@needs_files
def test_the_registry_mean_and_std_are_the_padded_training_images(splits) -> None:
    pixels = splits.train.images[:, 4:36, 4:36].to(torch.float64) / 255  # unpadded crop
    assert float(pixels.mean()) == pytest.approx(ENTRY.mean[0], abs=1e-4)
    assert float(pixels.std()) == pytest.approx(ENTRY.std[0], abs=1e-4)


@needs_files
def test_only_train_images_are_augmented(splits) -> None:
    torch.manual_seed(0)
    train_draws = [splits.train[5][0] for _ in range(8)]
    assert any(not torch.equal(train_draws[0], d) for d in train_draws[1:])
    assert all(torch.equal(splits.val[5][0], splits.val[5][0]) for _ in range(3))
    # an augmented image is its unaugmented self shifted (and maybe mirrored)
    plain = load_splits("fashion-mnist", val_fraction=0.2, seed=3, augment=False)
    assert torch.equal(plain.train[5][0], plain.train[5][0])
    a, b = fixed_batch(splits.train, 16, seed=7), fixed_batch(splits.train, 16, seed=7)
    assert torch.equal(a[0], b[0])  # reproducible where it must be (calibration batches)


# --------------------------------------------------------------------------- bad files
def _idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) written as a gzip-compressed IDX file."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def _fake_folder(folder: Path, *, images: int = 10) -> Path:
    """Four well-formed IDX files that are not Fashion-MNIST (wrong counts, wrong MD5)."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        _idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((images, 28, 28)))
        _idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(images) % 10)
    return folder


def test_files_of_the_wrong_content_fail_the_checksum(tmp_path: Path) -> None:
    folder = _fake_folder(tmp_path / "fake")
    with pytest.raises(DataError, match="fail the MD5 checksum") as err:
        check_data_dir("fashion-mnist", folder)
    assert "\n" not in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)


def test_unverified_files_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    folder = _fake_folder(tmp_path / "fake")
    with pytest.raises(DataError, match="hold images of dtype torch.uint8 and shape"):
        load_splits("fashion-mnist", folder, verify=False)


def test_unverified_truncated_file_is_one_line(tmp_path: Path) -> None:
    folder = _fake_folder(tmp_path / "fake", images=50)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="could not be read") as err:
        load_splits("fashion-mnist", folder, verify=False)
    assert "\n" not in str(err.value)


def test_torchvision_layout_is_found(tmp_path: Path) -> None:
    raw = _fake_folder(tmp_path / "data" / "FashionMNIST" / "raw")
    assert fm.fashion_mnist_folder(tmp_path / "data") == raw


def _bad_folders(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    cifar = tmp_path / "cifar"
    (cifar / "cifar-10-batches-py").mkdir(parents=True)
    (cifar / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    partial = _fake_folder(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    cases = {
        "missing": (tmp_path / "nowhere", "no such directory"),
        "cifar": (cifar, "this looks like a CIFAR folder"),
        "incomplete": (partial, "missing t10k-labels-idx1-ubyte.gz"),
        "wrong": (_fake_folder(tmp_path / "wrong"), "fail the MD5 checksum"),
    }
    if INSTALLED:
        truncated = tmp_path / "truncated"
        shutil.copytree(fm.DEBIAN_DIR, truncated)
        path = truncated / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[: 1 << 20])
        cases["truncated"] = (truncated, "fail the MD5 checksum")
    return cases


@pytest.mark.parametrize("case", ["missing", "cifar", "incomplete", "wrong", "truncated"])
def test_bad_data_dir_exits_2_with_one_line_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = _bad_folders(tmp_path / "in")
    if case not in cases:
        pytest.skip("needs the real files to truncate (apt-get install dataset-fashion-mnist)")
    folder, expected = cases[case]
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    argv = ["run", "--methods", "uniform", "--dataset", "fashion-mnist", "--data-dir", str(folder)]
    code = main([*argv, "--out", str(out), "--executor", "serial"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert "apt-get install dataset-fashion-mnist" in err and "--data-dir" in err
    assert not out.exists() and sorted(p for p in tmp_path.rglob("*")) == before


def test_the_fmnist_preset_is_listed(capsys: pytest.CaptureFixture) -> None:
    preset = load_preset("fmnist")
    assert preset.dataset == "fashion-mnist"
    assert main(["list", "presets"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("fmnist"))
    assert "Fashion-MNIST" in line
    assert main(["list", "datasets"]) == 0
    assert "dataset-fashion-mnist" in capsys.readouterr().out


# --------------------------------------------------------------------------- a real trial
TRIAL_PRESET = """
name = "fmnist-test"
description = "tests only: a few steps on the real Fashion-MNIST files"
dataset = "fashion-mnist"

[data]
val_fraction = 0.02
train_subset = 2000
augment = true
eval_batch_size = 1000

[pretrain]
epochs = 1
batch_size = 100
lr = 0.1
max_steps = 20

[finetune]
epochs = 1
batch_size = 100
lr = 0.01
max_steps = 5

[recalibration]
batches = 1
batch_size = 100

[budget]
max_search_seconds = 120.0
max_search_samples = 100000
max_trial_seconds = 900.0
"""


@needs_files
def test_one_short_trial_on_the_real_files(tmp_path: Path, cache_dir: Path) -> None:
    preset = tmp_path / "fmnist-test.toml"
    preset.write_text(TRIAL_PRESET)
    argv = ["run", "--methods", "uniform", "--space", "resnet20", "--preset", str(preset)]
    argv += ["--method-options", '{"uniform": {"bits": [4]}}', "--constraint", "bitops<=0.5"]
    argv += ["--executor", "serial", "--out", str(tmp_path), "--run-id", "fm"]
    argv += ["--cache-dir", str(cache_dir), "--quiet"]
    assert main(argv) == 0
    rows = pd.read_parquet(tmp_path / "runs" / "fm" / "records.parquet")
    done = rows[(rows["track"] == "retrain") & (rows["status"] == "ok")]
    assert len(done) == 1 and set(rows["dataset"]) == {"fashion-mnist"}
    # 20 FP steps and 5 QAT steps on 2,000 images: well above chance (10%), far from trained
    assert 20.0 < float(done["top1_test"].iloc[0]) < 95.0
