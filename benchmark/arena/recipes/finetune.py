"""The shared QAT finetune: LSQ from the FP checkpoint with a candidate's policy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.arena.data import DataSplits
from benchmark.arena.policy import LayerBits
from benchmark.arena.presets import Preset
from benchmark.arena.quant.base import QuantConfig
from benchmark.arena.recipes.loop import TrainStats, train
from benchmark.arena.spaces.base import SearchSpace


def finetune_qat(
    space: SearchSpace,
    policy: Mapping[str, LayerBits],
    fp_state: Mapping[str, Tensor],
    splits: DataSplits,
    preset: Preset,
    *,
    arch: Any = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    quant: QuantConfig | None = None,
    on_step: Callable[[int, float, int], None] | None = None,
) -> tuple[nn.Module, TrainStats]:
    """The shared QAT finetune: LSQ from the FP checkpoint with ``policy``, SGD + cosine.

    ``fp_state`` is the space's FP checkpoint (for elastic spaces, the FP supernet);
    the space extracts ``arch`` from it.
    """
    torch.manual_seed(seed)
    model = space.build_from_fp(fp_state, arch, policy=policy, quant=quant)
    stats = train(
        model,
        splits.train,
        preset.finetune,
        device=device,
        seed=seed,
        on_step=on_step,
        desc="finetune",
    )
    return model, stats
