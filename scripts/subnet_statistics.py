"""An extracted subnet's BN statistics: the supernet's vs its own (``ctx.subnet``'s
``recalibrated``).

    python scripts/subnet_statistics.py [--space mbv3-cifar] [--preset smoke]

Builds (or reads from the FP cache) the preset's FP checkpoint on digits, takes the space's
reference subnet twice, as extracted and with ``recalibrated=True``, and prints JSON: each
one's eval-mode validation top-1 (%) and mean cross-entropy on the 32 training images a
HAWQ-V3 probe of seed 0 uses, and how many of its Hutchinson trace estimates (20 vectors)
are negative. On a fixed space (resnet20) the two are the same model.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import torch

from benchmark.arena import hutchinson_traces
from benchmark.arena.context import Context
from benchmark.arena.data import load_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.protocol import Budget, Task
from benchmark.arena.recipes.pretrain import fp_starting_point
from benchmark.arena.recipes.scoring import evaluate
from benchmark.arena.spaces import get_space


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mbv3-cifar")
    parser.add_argument("--preset", default="smoke")
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = load_preset(args.preset)
    data = preset.data
    splits = load_splits(
        "digits",
        val_fraction=data.val_fraction,
        seed=0,
        train_subset=data.train_subset,
        augment=data.augment,
    )
    space = get_space(args.space, num_classes=splits.num_classes)
    fp_state, _ = fp_starting_point(space, splits, preset, seed=0)
    out = {"space": space.name, "preset": preset.name}
    with tempfile.TemporaryDirectory() as work:
        for recalibrated in (False, True):
            ctx = Context.create(
                Task(space.name, "digits", preset.name, "bitops<=0.3", 0),
                space,
                preset,
                splits,
                fp_state,
                budget=Budget(600.0, 10**9),
                workdir=Path(work),
                log=logging.getLogger("subnet_statistics"),
            )
            arch = space.reference_arch
            model = ctx.subnet(arch, recalibrated=recalibrated)
            layers = space.searchable_layers(arch)
            probe = ctx.hessian_probe(model, layers, batches=1, batch_size=32, seed=0)
            traces = hutchinson_traces(probe, max_iter=20, seed=0)
            out["recalibrated" if recalibrated else "as_extracted"] = {
                "val_top1": evaluate(model.eval(), splits.val, batch_size=256),
                "probe_loss": probe.loss,
                "negative_traces": sum(e.trace < 0 for e in traces.values()),
                "traces": len(traces),
                "images_charged": ctx.budget.samples,
            }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
