"""Tests of the FP supernet recipe (sandwich rule, in-place distillation, caching)."""

from __future__ import annotations

import torch

from benchmark.arena.presets import load_preset
from benchmark.arena.recipes.pretrain import fp_starting_point, pretrain_supernet
from benchmark.arena.recipes.scoring import evaluate, recalibrate
from benchmark.arena.recipes.supernet import sandwich_step, soft_cross_entropy
from benchmark.arena.spaces import get_space
from benchmark.arena.spaces.mbv3.arch import max_arch


def test_soft_cross_entropy_matches_hard_ce_on_one_hot() -> None:
    logits = torch.randn(5, 10)
    labels = torch.randint(0, 10, (5,))
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    expected = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot), expected)


def test_sandwich_step_counts_every_subnet_and_distills() -> None:
    space = get_space("mbv3-cifar")
    supernet = space.build_supernet().train()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    seen = []
    supernet.register_forward_pre_hook(lambda m, _: seen.append(m.arch))
    loss, samples = sandwich_step(space, seed=0)(supernet, x, y)
    assert samples == 4 * 6
    assert len(seen) == 4 and seen[0] == max_arch() and seen[1] != seen[0]
    assert supernet.arch == max_arch()
    loss.backward()
    assert supernet.blocks["1"].dw.weight.grad is not None
    # kernel transforms learn when some sampled subnet used a 3×3 kernel
    assert any(b.dw.transform_5to3.grad is not None for k, b in supernet.blocks.items() if k != "0")


def test_smoke_pretraining_reaches_90_percent_and_caches(digits_splits, cache_dir) -> None:
    """The real smoke recipe on digits (about 30-50 s on 2 cores), in the session's cache:
    built here, or by the default smoke run's test before it (the same supernet), so the
    suite trains it once; the numbers checked are the recipe's either way."""
    space = get_space("mbv3-cifar")
    preset = load_preset("smoke")
    state, info = pretrain_supernet(space, digits_splits, preset, seed=0, cache_dir=cache_dir)
    assert info["subnets"]["largest"]["test_top1"] >= 90.0, info
    assert info["val_top1"] == info["subnets"]["largest"]["val_top1"]
    assert info["samples"] == 4 * preset.supernet.batch_size * info["steps"]
    assert not any("_quantizer." in k for k in state)
    assert {"blocks.4.se.reduce.weight", "blocks.9.se.expand.bias"} <= set(state)
    # a second call loads the cached checkpoint: same weights, cost of the original run
    again, info2 = pretrain_supernet(space, digits_splits, preset, seed=0, cache_dir=cache_dir)
    assert info2["cached"] and info2["seconds"] == info["seconds"]
    assert all(torch.equal(state[k], again[k]) for k in state)
    # the state loads into a supernet of any quantizer config; the extracted largest
    # subnet, recalibrated, scores what the recipe reported
    supernet = space.build_supernet(fp_state=state)
    net = space.extract(supernet, max_arch())
    rc = preset.recalibration
    recalibrate(net, digits_splits.train, batches=rc.batches, batch_size=rc.batch_size)
    assert evaluate(net, digits_splits.test) == info["subnets"]["largest"]["test_top1"]
    assert fp_starting_point(space, digits_splits, preset, seed=0, cache_dir=cache_dir)[1]["cached"]
