"""OQAT's fidelity and speed on ``mbv3-cifar`` (CPU): digits / smoke by default, any preset.

Usage: python scripts/bench_oqat.py [--seeds 0,1,2] [--threads 2] [--fidelity] [--zeros] [--speed]
       [--rounds 5] [--profile] [--all-steps] [--reinit] [--clip X] [--preset smoke]
       [--data-dir DIR] [--stage-epochs 1,0.67,0.5] [--out FILE]

``--fidelity`` (the paper's central claim, measured): per seed, the 4→3→2 chain of
``methods/oqat.py`` (the preset's ``[methods.oqat]`` stages, or ``--stage-epochs``, from the
cached FP supernet of the preset's dataset) against a 2-bit supernet trained straight from
the FP supernet (a) for as many steps as the chain's 2-bit stage and, with ``--all-steps``,
(b) for as many as the whole chain; with ``--reinit`` also the chain that inherits the
weights but initialises the searched layers' steps again at each bit-width (OQAT's
``inherit_steps="reinit"``). Each arm also gives the share of its 2-bit weights and
inputs on the zero grid point (largest subnet, one training batch). On Fashion-MNIST:
``--preset fmnist --all-steps --stage-epochs 1,0.67,0.5`` (stages long enough to converge,
not the trial's). A stage whose loss becomes NaN is recorded (``*_diverged``) and its model
scored; ``--clip X`` sets ``[methods.oqat] clip_grad_norm`` for every arm. Every supernet is
scored on the same subnets (largest, smallest, reference and 2 random architectures), each
extracted, BN-recalibrated on the preset's recalibration images and evaluated on the test
split (the ``inherit`` track). Also the 4-bit largest subnet against the FP one (goal:
within 3 points). Prints JSON: per seed and the mean over seeds.

``--zeros``: why the 2-bit stage starts where it does. Trains seed 0's 4- and 3-bit
stages as ``--fidelity`` does, then on one training batch through the largest subnet gives
the share of quantized weights and of quantized conv inputs that round to zero: at 3 bits,
at 2 bits with the inherited (doubled) steps, and at 2 bits with LSQ's own initialisation
from the FP supernet (mean over the quantized convs).

``--speed``: one sandwich training step (largest, smallest, 2 random; batch 64; forward,
backward and SGD) of the FP supernet against the OQAT W4A4 supernet, interleaved
A, B, A, B, ... in one process; the median ratio W4A4/FP and its spread (min-max over
rounds). ``--profile`` adds the torch profiler's top operators of one W4A4 step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmark.arena import (
    Budget,
    Context,
    DivergedError,
    SandwichSampler,
    Task,
    get_space,
    quant_layers,
    sandwich_step,
)
from benchmark.arena.data import load_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.recipes.loop import make_optimizer, total_steps
from benchmark.arena.recipes.pretrain import pretrain_supernet
from benchmark.arena.recipes.scoring import recalibrate_and_evaluate
from methods import get_method
from methods.oqat import OQAT, oqat_quant


def context(space, preset, splits, state, keys, seed: int) -> Context:
    return Context.create(
        Task(space.name, splits.name, preset.name, "bitops<=16", seed),
        space,
        preset,
        splits,
        state,
        budget=Budget(1e6, 10**12),
        workdir=Path(tempfile.mkdtemp()),
        log=logging.getLogger("bench_oqat"),
    )


def test_top1(space, model, archs, bits, splits, preset) -> dict[str, float]:
    out = {}
    for name, arch in archs.items():
        policy = None if bits is None else space.uniform_policy(bits, bits, arch)
        net = space.extract(model, arch, policy)
        scores, _ = recalibrate_and_evaluate(
            net, splits.train, {"test": splits.test}, preset.recalibration,
            eval_batch_size=preset.data.eval_batch_size, seed=0,
        )  # fmt: skip
        out[name] = round(scores["test"], 2)
    return out


def train_or_diverge(method, ctx, space, model, bits, recipe, keys, seed) -> Any:
    """One stage's TrainStats, or ``None`` when its loss became NaN (the model as it was
    then is still scored: a diverged stage is a result, not a crash of the benchmark)."""
    try:
        return method._train_stage(ctx, space, model, bits, recipe, keys, seed)
    except DivergedError as err:
        print(f"seed stage W{bits}A{bits}: {err}", file=sys.stderr, flush=True)
        return None


def planned_steps(ctx: Context, recipe) -> int:
    """The steps a stage would have run (for a stage that diverged before its end)."""
    return total_steps(recipe, len(ctx.train_set) // recipe.batch_size)


def fidelity(
    seed: int,
    splits,
    preset,
    state,
    all_steps: bool,
    clip: float | None,
    stage_epochs: tuple[float, ...] | None = None,
    reinit: bool = False,
) -> dict[str, Any]:
    torch.manual_seed(seed)
    base = get_space("mbv3-cifar", num_classes=splits.num_classes)
    space = base.with_fixed(32)
    keys = replace(get_method("oqat").configure(preset), clip_grad_norm=clip)
    if stage_epochs is not None:
        keys = replace(keys, stage_epochs=stage_epochs)
    batch = torch.stack([splits.train[i][0] for i in range(64)])
    method = OQAT(keys)
    rng = random.Random(1000 + seed)
    archs = {
        "largest": space.max_arch(),
        "smallest": space.min_arch(),
        "reference": space.reference_arch,
        "random1": space.sample_arch(rng),
        "random2": space.sample_arch(rng),
    }
    ctx = context(base, preset, splits, state, keys, seed)
    recipes = method._recipes(ctx, keys)
    result: dict[str, Any] = {"seed": seed}
    # the chain 4 → 3 → 2 (the paper's inheritance; with --reinit also the chain whose
    # steps are initialised again at each bit-width)
    chains = [("", method)]
    if reinit:
        chains.append(("reinit_", OQAT(replace(keys, inherit_steps="reinit"))))
    for prefix, chain in chains:
        model = ctx.fp_supernet(oqat_quant())
        steps_chain, seconds = [], []
        for i, bits in enumerate(keys.bits):
            if i:
                chain.inherit(model, space, keys.bits[i - 1], bits)
            began = time.perf_counter()
            stage_seed = seed * 7919 + i
            stats = train_or_diverge(chain, ctx, space, model, bits, recipes[i], keys, stage_seed)
            seconds.append(round(time.perf_counter() - began, 1))
            steps_chain.append(stats.steps if stats else planned_steps(ctx, recipes[i]))
            if bits == 4 and not prefix:
                result["w4_inherit"] = test_top1(space, model, archs, 4, splits, preset)
            if stats is None:
                result[f"{prefix}w{bits}_diverged"] = True
        result[f"{prefix}chain_steps"] = steps_chain
        result[f"{prefix}chain_train_seconds"] = seconds
        result[f"w2_{prefix}inherited"] = test_top1(space, model, archs, 2, splits, preset)
        result[f"w2_{prefix}inherited_zeros"] = zero_shares(space, model, 2, batch)
    # 2 bits straight from the FP supernet (LSQ's own step initialisation at 2 bits)
    arms = [("w2_direct_same_stage", result["chain_steps"][-1])]
    if all_steps:
        arms.append(("w2_direct_all_steps", sum(result["chain_steps"])))
    for label, steps in arms:
        model = ctx.fp_supernet(oqat_quant())
        recipe = replace(recipes[-1], max_steps=steps, epochs=max(recipes[-1].epochs, 1000.0))
        if train_or_diverge(method, ctx, space, model, 2, recipe, keys, seed * 7919 + 99) is None:
            result[label + "_diverged"] = True
        result[label] = test_top1(space, model, archs, 2, splits, preset)
        result[label + "_steps"] = steps
        result[label + "_zeros"] = zero_shares(space, model, 2, batch)
    fp_model = ctx.fp_supernet(None)
    result["fp"] = test_top1(base, fp_model, {"largest": space.max_arch()}, None, splits, preset)
    return result


def zero_shares(space, model, bits: int, x: torch.Tensor) -> dict[str, float]:
    """Mean over quantized convs of the share of weights / inputs on the zero grid point."""
    arch = space.max_arch()
    space.set_active(model, arch, space.uniform_policy(bits, bits, arch))
    model.eval()
    weights, inputs, hooks = [], [], []

    def hook(layer, args, _out) -> None:
        for quantizer, tensor, store in (
            (layer.weight_quantizer, layer.weight, weights),
            (layer.act_quantizer, args[0], inputs),
        ):
            qn, qp = quantizer.grid(bits)
            step = quantizer.step_size(bits)
            store.append(float(((tensor / step).clamp(qn, qp).round() == 0).float().mean()))

    for layer in quant_layers(model).values():
        if layer.w_bits < 32:
            hooks.append(layer.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for handle in hooks:
        handle.remove()
    return {
        "weights_zero": round(statistics.mean(weights), 3),
        "inputs_zero": round(statistics.mean(inputs), 3),
        "convs": len(weights),
    }


def zeros(splits, preset, state) -> dict[str, Any]:
    torch.manual_seed(0)
    base = get_space("mbv3-cifar", num_classes=splits.num_classes)
    space = base.with_fixed(32)
    keys = get_method("oqat").configure(preset)
    method = OQAT(keys)
    ctx = context(base, preset, splits, state, keys, 0)
    recipes = method._recipes(ctx, keys)
    x = torch.stack([splits.train[i][0] for i in range(64)])
    model = ctx.fp_supernet(oqat_quant())
    for i, bits in enumerate(keys.bits[:2]):
        if i:
            method.inherit(model, space, keys.bits[i - 1], bits)
        method._train_stage(ctx, space, model, bits, recipes[i], keys, i)
    out = {"w3": zero_shares(space, model, 3, x)}
    method.inherit(model, space, 3, 2)
    out["w2_inherited"] = zero_shares(space, model, 2, x)
    out["w2_lsq_init"] = zero_shares(space, ctx.fp_supernet(oqat_quant()), 2, x)
    return out


def mean_of(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    names = runs[0][key]
    return {n: round(statistics.mean(r[key][n] for r in runs), 2) for n in names}


def speed(splits, rounds: int, batch: int, profile: bool) -> dict[str, Any]:
    space = get_space("mbv3-cifar", num_classes=splits.num_classes)
    oqat_space = space.with_fixed(32)
    torch.manual_seed(0)
    fp = space.build_supernet()
    w4 = oqat_space.build_supernet(oqat_quant())
    w4.load_state_dict(fp.state_dict(), strict=False)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    recipe = load_preset("smoke").finetune

    def runner(model, sampler_space, policy):
        sampler = SandwichSampler(sampler_space, num_random=2, policy=policy)
        step = sandwich_step(sampler_space, sampler, seed=0)
        opt = make_optimizer(model, recipe)
        model.train()

        def once() -> float:
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss, _ = step(model, x, y)
            loss.backward()
            opt.step()
            return time.perf_counter() - start

        return once

    fp_step = runner(fp, space, lambda arch, rng: None)
    w4_step = runner(w4, oqat_space, lambda arch, rng: oqat_space.uniform_policy(4, 4, arch))
    for _ in range(2):  # warm-up (kernel build, LSQ init, allocator)
        fp_step(), w4_step()
    fp_t, w4_t, ratios = [], [], []
    for _ in range(rounds):
        a = statistics.median(fp_step() for _ in range(3))
        b = statistics.median(w4_step() for _ in range(3))
        fp_t.append(a), w4_t.append(b), ratios.append(b / a)
        print(f"fp {a:.3f} s, w4a4 {b:.3f} s, ratio {b / a:.3f}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {
        "batch": batch,
        "fp_step_s": round(statistics.median(fp_t), 3),
        "w4a4_step_s": round(statistics.median(w4_t), 3),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_spread": [round(min(ratios), 3), round(max(ratios), 3)],
    }
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            w4_step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        out["profile_w4a4"] = table
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            fp_step()
        out["profile_fp"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fidelity", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--zeros", action="store_true")
    parser.add_argument("--clip", type=float, default=None, help="clip_grad_norm of every arm")
    parser.add_argument(
        "--all-steps", action="store_true", help="add a 2-bit arm as long as the whole chain"
    )
    parser.add_argument(
        "--reinit", action="store_true",
        help="add the chain that inherits the weights but initialises the steps again",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--preset", default="smoke", help="its dataset and recipes")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--stage-epochs", default=None, help="OQAT's stages, e.g. 1,0.67,0.5 (--fidelity)"
    )
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    splits = load_splits(
        preset.dataset, args.data_dir, val_fraction=preset.data.val_fraction, seed=0,
        augment=preset.data.augment,
    )  # fmt: skip
    stage_epochs = (
        tuple(float(x) for x in args.stage_epochs.split(",")) if args.stage_epochs else None
    )
    began, load = time.perf_counter(), os.getloadavg()
    result: dict[str, Any] = {
        "preset": preset.name,
        "dataset": splits.name,
        "threads": args.threads,
        "clip_grad_norm": args.clip,
        "stage_epochs": stage_epochs,
        "device": "cpu",
    }
    if args.speed:
        result["speed"] = speed(splits, args.rounds, args.batch, args.profile)
        for key in ("profile_w4a4", "profile_fp"):
            if key in result["speed"]:
                print(result["speed"].pop(key))
    if args.fidelity or args.zeros:
        space = get_space("mbv3-cifar", num_classes=splits.num_classes)
        state, _ = pretrain_supernet(space, splits, preset, seed=0)  # the cached FP start
    if args.zeros:
        result["zeros"] = zeros(splits, preset, state)
    if args.fidelity:
        runs = [
            fidelity(
                int(s),
                splits,
                preset,
                state,
                args.all_steps,
                args.clip,
                stage_epochs,
                args.reinit,
            )
            for s in args.seeds.split(",")
        ]
        result["fidelity_runs"] = runs
        result["fidelity_mean"] = {
            key: mean_of(runs, key)
            for key in (
                "fp",
                "w4_inherit",
                "w2_inherited",
                *(("w2_reinit_inherited",) if args.reinit else ()),
                "w2_direct_same_stage",
                *(("w2_direct_all_steps",) if args.all_steps else ()),
            )
        }
    result["wall_seconds"] = round(time.perf_counter() - began, 1)
    result["load_average"] = [round(x, 2) for x in (*load, *os.getloadavg())]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
