"""Frozen recipes: schedule, BN recalibration, the FP pretrain cache, QAT finetune, divergence."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import benchmark.arena.recipes.pretrain as train_module
from benchmark.arena.cache import default_cache_dir
from benchmark.arena.data import LabeledTensorDataset, make_loader
from benchmark.arena.policy import LayerBits
from benchmark.arena.presets import Recipe, load_preset
from benchmark.arena.protocol import DivergedError
from benchmark.arena.quant import QConv2d, QLinear, apply_policy, current_policy, quant_layers
from benchmark.arena.recipes.finetune import finetune_qat
from benchmark.arena.recipes.loop import lr_at, total_steps, train
from benchmark.arena.recipes.pretrain import pretrain_fp
from benchmark.arena.recipes.scoring import evaluate, recalibrate
from benchmark.arena.spaces import SearchSpace

# --------------------------------------------------------------------------- schedule


def test_lr_warmup_then_cosine() -> None:
    base, total, warm = 0.4, 100, 10
    lrs = [lr_at(s, total, warm, base) for s in range(total)]
    # linear warm-up reaching the base rate at the end of warm-up
    assert lrs[:warm] == pytest.approx([base * (s + 1) / warm for s in range(warm)])
    assert lrs[warm] == pytest.approx(base)
    # cosine: monotone down, half-way at the middle of the decay, zero at the end
    decay = lrs[warm:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx(base / 2)
    assert lr_at(total, total, warm, base) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(total + 50, total, warm, base) == pytest.approx(0.0, abs=1e-12)  # no rebound
    assert all(0 < lr <= base for lr in lrs)
    # the exact cosine value at a quarter of the decay
    quarter = warm + (total - warm) // 4
    progress = (quarter - warm) / (total - warm)
    assert lrs[quarter] == pytest.approx(0.5 * base * (1 + math.cos(math.pi * progress)))


def test_lr_without_warmup() -> None:
    assert lr_at(0, 50, 0, 0.1) == pytest.approx(0.1)
    assert lr_at(25, 50, 0, 0.1) == pytest.approx(0.05)
    assert lr_at(49, 50, 0, 0.1) < 0.001


def test_total_steps() -> None:
    recipe = Recipe(epochs=2.5, batch_size=8, lr=0.1)
    assert total_steps(recipe, 10) == 25
    assert total_steps(dataclasses.replace(recipe, max_steps=7), 10) == 7
    assert total_steps(dataclasses.replace(recipe, epochs=0.01), 10) == 1


# --------------------------------------------------------------------------- recalibration


class Calibrated(nn.Module):
    """Records start/end_calibration calls (the hook BatchQuant-style ranges use)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def start_calibration(self) -> None:
        self.calls.append("start")

    def end_calibration(self) -> None:
        self.calls.append("end")

    def forward(self, x: Tensor) -> Tensor:
        return x


def small_bn_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        Calibrated(),
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, 4),
    )


def test_recalibrate_is_the_plain_mean_over_batches() -> None:
    torch.manual_seed(0)
    images = torch.randn(80, 3, 8, 8) * 2 + 0.5
    dataset = LabeledTensorDataset(images, torch.randint(0, 4, (80,)))
    net = small_bn_net().eval()
    bn = net[1]
    bn.running_mean.fill_(123.0)  # stale statistics that must be forgotten
    bn.running_var.fill_(1e-3)
    bn.num_batches_tracked.fill_(999)
    weights = {
        k: v.clone()
        for k, v in net.state_dict().items()
        if "running" not in k and "tracked" not in k
    }

    used = recalibrate(net, dataset, batches=4, batch_size=32, seed=3)

    # the same batches, drawn independently: 32, 32, 16, then 32 from a second pass
    loader = make_loader(dataset, 32, shuffle=True, seed=3)
    batches: list[Tensor] = []
    while len(batches) < 4:
        for x, _ in loader:
            batches.append(x)
            if len(batches) == 4:
                break
    assert [b.shape[0] for b in batches] == [32, 32, 16, 32]
    assert used == 112
    with torch.no_grad():
        feats = [net[0](b) for b in batches]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).flatten(1).var(1, unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)
    assert int(bn.num_batches_tracked) == 4
    assert bn.momentum == 0.1  # restored
    assert not net.training  # mode restored
    assert net[2].calls == ["start", "end"]
    for key, value in weights.items():
        assert torch.equal(net.state_dict()[key], value), key


def test_recalibrate_keeps_training_mode() -> None:
    net = small_bn_net().train()
    dataset = LabeledTensorDataset(torch.randn(10, 3, 8, 8), torch.zeros(10, dtype=torch.long))
    assert recalibrate(net, dataset, batches=2, batch_size=4) == 8
    assert net.training


# --------------------------------------------------------------------------- evaluation / train


class Constant(nn.Module):
    """Always predicts ``label``; has one parameter so it can be 'trained'."""

    def __init__(self, label: int, value: float = 0.0) -> None:
        super().__init__()
        self.label = label
        self.value = value
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.zeros(x.shape[0], 10) + self.p
        logits[:, self.label] += 1.0
        return logits * self.value if self.value else logits


def test_evaluate_percent(digits_splits) -> None:
    labels = digits_splits.val.tensors[1]
    expected = 100.0 * float((labels == 3).float().mean())
    assert evaluate(Constant(3), digits_splits.val, batch_size=50) == pytest.approx(expected)


def test_nan_loss_raises_diverged(digits_splits) -> None:
    recipe = Recipe(epochs=1, batch_size=32, lr=0.1)
    with pytest.raises(DivergedError, match="nan at step 0") as err:
        train(Constant(0, value=float("nan")), digits_splits.val, recipe, desc="probe")
    assert "probe" in str(err.value)
    assert issubclass(DivergedError, RuntimeError)


def test_huge_lr_raises_diverged(digits_splits) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    seen: list[int] = []
    recipe = Recipe(epochs=20, batch_size=32, lr=1e9)
    with pytest.raises(DivergedError):
        train(net, digits_splits.val, recipe, on_step=lambda step, loss, n: seen.append(step))
    assert 0 < len(seen) < 20 * len(digits_splits.val) // 32  # stopped early, not at the end


def test_train_counts_steps_and_samples(digits_splits) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    calls: list[tuple[int, int]] = []
    recipe = Recipe(epochs=2, batch_size=50, lr=0.01, max_steps=3)
    stats = train(net, digits_splits.val, recipe, on_step=lambda s, loss, n: calls.append((s, n)))
    assert stats.steps == 3 and stats.samples == 150 and math.isfinite(stats.final_loss)
    assert calls == [(0, 50), (1, 50), (2, 50)]


# --------------------------------------------------------------------------- FP pretrain cache


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("fp-*.pt"))


def test_pretrain_trains_and_caches(pretrained) -> None:
    info = pretrained.info
    assert info["cached"] is False
    assert info["steps"] == 100 and info["samples"] == 6400  # 5 epochs × 20 batches of 64
    assert info["val_top1"] > 90 and info["test_top1"] > 90
    (path,) = cache_files(pretrained.cache_dir)
    meta = json.loads(path.with_suffix(".pt.json").read_text())
    assert meta["config"]["space"]["name"] == "resnet20" and meta["config"]["seed"] == 0
    assert meta["config"]["recipe"]["epochs"] == 5 and meta["config"]["dataset"] == "digits"
    assert len(meta["sha256"]) == 64


def test_cache_defaults_to_env_folder(cache_dir: Path, tiny_preset, digits_splits) -> None:
    assert default_cache_dir() == cache_dir  # nothing goes to ~/.cache during tests
    before = set(cache_files(cache_dir))
    pretrain_fp(TinySpace(num_classes=11), digits_splits, tiny_preset)
    assert len(set(cache_files(cache_dir)) - before) == 1


def test_pretrain_cache_is_reused(pretrained, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("pretrain_fp trained again instead of using its cache")

    monkeypatch.setattr(train_module, "train", no_training)
    args = (pretrained.space, pretrained.splits, pretrained.preset)
    state, info = pretrain_fp(*args, seed=0, cache_dir=pretrained.cache_dir)
    assert info["cached"] is True
    assert state.keys() == pretrained.state.keys()
    for key, value in pretrained.state.items():
        assert torch.equal(state[key], value), key
    # the original training cost is reported, not zero
    assert info["seconds"] == pretrained.info["seconds"] and info["samples"] == 6400

    # another seed is another checkpoint: it would have to train
    with pytest.raises(AssertionError, match="trained again"):
        pretrain_fp(*args, seed=1, cache_dir=pretrained.cache_dir)
    assert len(cache_files(pretrained.cache_dir)) == 1


class TinySpace(SearchSpace):
    """A throw-away fixed space with a very small model: the cache logic is space-agnostic."""

    name = "tiny-test"
    bit_choices = (2, 4, 8)
    searches = "bits"

    def build(self, arch=None, policy=None, quant=None) -> nn.Module:
        model = nn.Sequential(
            QConv2d(3, 4, 3, stride=4, padding=1, quant=quant, act_signed=True),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            QLinear(4 * 8 * 8, self.num_classes, quant=quant, act_signed=False),
        )
        if policy is not None:
            apply_policy(model, self.full_policy(policy))
        return model

    def fixed_layer_names(self, arch=None) -> list[str]:
        return []


@pytest.fixture
def tiny_preset():
    """The smoke preset with a 3-step pretrain: enough to exercise the cache."""
    smoke = load_preset("smoke")
    return dataclasses.replace(smoke, pretrain=dataclasses.replace(smoke.pretrain, max_steps=3))


def corrupt_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def corrupt_sidecar(path: Path) -> None:
    path.with_suffix(".pt.json").write_text("{ not json")


def drop_sidecar(path: Path) -> None:
    path.with_suffix(".pt.json").unlink()


@pytest.mark.parametrize("corrupt", [corrupt_flip, corrupt_truncate, corrupt_sidecar, drop_sidecar])
def test_corrupted_cache_is_rebuilt(
    corrupt, tiny_preset, digits_splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = TinySpace()
    runs: list[int] = []
    real_train = train_module.train

    def counting_train(*args, **kwargs):
        runs.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(train_module, "train", counting_train)
    first, info = pretrain_fp(space, digits_splits, tiny_preset, cache_dir=tmp_path)
    assert info["cached"] is False and info["steps"] == 3 and len(runs) == 1
    (path,) = cache_files(tmp_path)

    corrupt(path)
    second, info = pretrain_fp(space, digits_splits, tiny_preset, cache_dir=tmp_path)
    assert info["cached"] is False and len(runs) == 2  # detected and rebuilt
    assert first.keys() == second.keys()
    for key, value in first.items():  # same seed, same recipe: same weights
        assert torch.equal(second[key], value), key

    third, info = pretrain_fp(space, digits_splits, tiny_preset, cache_dir=tmp_path)
    assert info["cached"] is True and len(runs) == 2  # the rebuilt file is good again
    assert cache_files(tmp_path) == [path]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_cache_key_covers_recipe_and_space(tiny_preset, digits_splits, tmp_path: Path) -> None:
    space = TinySpace()
    pretrain_fp(space, digits_splits, tiny_preset, cache_dir=tmp_path)
    longer = dataclasses.replace(
        tiny_preset, pretrain=dataclasses.replace(tiny_preset.pretrain, max_steps=4)
    )
    _, info = pretrain_fp(space, digits_splits, longer, cache_dir=tmp_path)
    assert info["cached"] is False and info["steps"] == 4
    _, info = pretrain_fp(TinySpace(num_classes=12), digits_splits, tiny_preset, cache_dir=tmp_path)
    assert info["cached"] is False
    _, info = pretrain_fp(space, digits_splits, tiny_preset, cache_dir=tmp_path)
    assert info["cached"] is True
    assert len(cache_files(tmp_path)) == 3


# --------------------------------------------------------------------------- QAT finetune


def fresh_quantized(pretrained, policy) -> nn.Module:
    """FP weights, LSQ initialised on one train batch, no training (BN untouched)."""
    model = pretrained.space.build(policy=policy)
    missing, unexpected = model.load_state_dict(pretrained.state, strict=False)
    assert not unexpected and all("_quantizer." in k for k in missing)
    model.eval()
    with torch.no_grad():
        model(pretrained.splits.train.tensors[0][:64])
    return model


def test_fp_weights_survive_8bit_quantization(pretrained) -> None:
    model = fresh_quantized(pretrained, pretrained.space.uniform_policy(8))
    top1 = evaluate(model, pretrained.splits.val)
    assert top1 >= pretrained.info["val_top1"] - 3


def test_qat_finetune_w2a2_improves_over_fresh_quantization(pretrained) -> None:
    space, splits = pretrained.space, pretrained.splits
    policy = space.uniform_policy(2)
    before = evaluate(fresh_quantized(pretrained, policy), splits.val)

    short = dataclasses.replace(
        pretrained.preset,
        finetune=dataclasses.replace(pretrained.preset.finetune, max_steps=20),
    )
    samples: list[int] = []
    model, stats = finetune_qat(
        space, policy, pretrained.state, splits, short, on_step=lambda s, loss, n: samples.append(n)
    )
    after = evaluate(model, splits.val)

    assert stats.steps == 20 and stats.samples == 20 * 64 == sum(samples)
    assert current_policy(model) == space.full_policy(policy)
    assert model.layer1[0].conv1.bits == LayerBits(2, 2) and model.fc.bits == LayerBits(8, 8)
    assert all(bool(q.weight_quantizer.initialized.all()) for q in quant_layers(model).values())
    # it started from the FP checkpoint: weights moved only a little from it
    for name, layer in quant_layers(model).items():
        fp = pretrained.state[f"{name}.weight"]
        change = float((layer.weight.detach() - fp).norm() / fp.norm())
        assert change < 0.3, (name, change)
    assert after >= before + 20, (before, after)
    assert after > 60, (before, after)
