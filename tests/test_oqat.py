"""OQAT (``methods/oqat.py``): shared step sizes, bit inheritance, the sandwich step, extraction,
selection under the constraint, resume per stage, option checks and an end-to-end run.

Models are tiny in time: a random FP supernet (no pretraining) and one or two optimiser
steps of batch 8 per stage; only the end-to-end test pretrains (a 3-step FP supernet).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.arena import (
    Budget,
    Context,
    DivergedError,
    PresetError,
    QuantConfig,
    Task,
    evolve,
    get_space,
    parse_section,
    quant_layers,
)
from benchmark.arena.presets import load_preset
from benchmark.arena.spaces.mbv3.arch import max_arch, min_arch
from benchmark.cli import main
from methods import get_method
from methods.oqat import OQAT, OQATConfig, oqat_quant

TINY = Path(__file__).parent / "tiny.toml"
KEYS = OQATConfig(
    bits=(4, 3), stage_epochs=(1.0, 1.0), stage_max_steps=(1, 1), subnets_per_step=3, population=2,
    generations=0,
)  # fmt: skip


def random_state(name: str) -> dict:
    space = get_space(name)
    model = space.build_supernet() if name == "mbv3-cifar" else space.build()
    return {k: v for k, v in model.state_dict().items() if "_quantizer." not in k}


@pytest.fixture(scope="module")
def splits():
    """Digits with 256 training and ~72 validation images: every score is quick."""
    from benchmark.arena.data import load_splits

    return load_splits("digits", val_fraction=0.05, seed=0, train_subset=256)


@pytest.fixture(scope="module")
def mbv3_state() -> dict:
    torch.manual_seed(0)
    return random_state("mbv3-cifar")


def make_ctx(
    splits,
    state: dict,
    workdir: Path,
    *,
    space: str = "mbv3-cifar",
    constraint: str = "bitops<=1.2",
) -> Context:
    preset = load_preset(str(TINY))
    preset = dataclasses.replace(
        preset, finetune=dataclasses.replace(preset.finetune, batch_size=8)
    )
    return Context.create(
        Task(space, "digits", preset.name, constraint, 0),
        get_space(space, num_classes=splits.num_classes),
        preset,
        splits,
        state,
        budget=Budget(600.0, 10**7),
        workdir=workdir,
        log=logging.getLogger("test_oqat"),
    )


def steps_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith(".step")}


# --- shared step sizes -----------------------------------------------------------------
def test_one_step_pair_per_conv_used_by_every_subnet() -> None:
    space = get_space("mbv3-cifar").with_fixed(32)
    torch.manual_seed(0)
    supernet = space.build_supernet(oqat_quant()).eval()
    x = torch.randn(4, 3, 32, 32)
    small, large = min_arch(), max_arch()
    for arch in (large, small):  # initialise every quantizer the two subnets use
        space.set_active(supernet, arch, space.uniform_policy(4, 4, arch))
        supernet(x)
    layers = quant_layers(supernet)
    for name, layer in layers.items():  # ONE (s_w, s_a) per physical conv, all unsigned inputs
        assert layer.weight_quantizer.step.numel() == 1 and layer.act_quantizer.step.numel() == 1
        assert layer.act_quantizer.signed is False, name

    def outputs() -> dict[str, torch.Tensor]:
        out = {}
        for key, arch in (("small", small), ("large", large)):
            space.set_active(supernet, arch, space.uniform_policy(4, 4, arch))
            out[key] = supernet(x)
        return out

    before = outputs()
    with torch.no_grad():  # a conv both subnets contain: its step changes both
        layers["blocks.1.pw_expand"].act_quantizer.step.mul_(1.7)
    shared = outputs()
    assert not torch.equal(shared["small"], before["small"])
    assert not torch.equal(shared["large"], before["large"])
    with torch.no_grad():  # block 3 (stage 0, third slot) runs only at depth 3: not in `small`
        layers["blocks.3.pw_expand"].weight_quantizer.step.mul_(1.7)
    only_large = outputs()
    assert torch.equal(only_large["small"], shared["small"])
    assert not torch.equal(only_large["large"], shared["large"])
    # an extracted subnet copies the shared steps
    net = space.extract(supernet, small, "w4a4")
    step = quant_layers(net)["blocks.1.pw_expand"].act_quantizer.step
    assert torch.equal(step, layers["blocks.1.pw_expand"].act_quantizer.step)


def test_unsigned_grid_is_a_quant_config_option() -> None:
    space = get_space("mbv3-cifar")
    default, unsigned = space.build_supernet(), space.build_supernet(oqat_quant())
    assert quant_layers(default)["blocks.1.pw_expand"].act_quantizer.signed is True
    assert all(layer.act_quantizer.signed is False for layer in quant_layers(unsigned).values())
    assert QuantConfig.from_dict(oqat_quant().to_dict()) == oqat_quant()
    assert oqat_quant().to_dict()["act_grid"] == "unsigned"
    with pytest.raises(ValueError, match="act_grid must be one of layer, unsigned"):
        QuantConfig(act_grid="negative")


# --- inheritance -------------------------------------------------------------------------
def test_inheritance_doubles_the_searched_layers_steps_and_keeps_the_rest(
    splits, mbv3_state, tmp_path, monkeypatch
) -> None:
    """Only the quantizers whose bits drop are rescaled: the fixed layers (stem, SE convs,
    classifier) keep their convention's bits, so their steps stay as they were."""
    ctx = make_ctx(splits, mbv3_state, tmp_path)
    seen: list[dict[str, torch.Tensor]] = []
    real = OQAT._train_stage

    def recording(self, ctx, space, model, bits, *args):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        stats = real(self, ctx, space, model, bits, *args)
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return stats

    monkeypatch.setattr(OQAT, "_train_stage", recording)
    # the space's convention: the fixed layers run at 8 bits, their steps are trained
    result = OQAT(dataclasses.replace(KEYS, fixed="space")).search(ctx)
    after4, before3 = seen[1], seen[2]  # end of the 4-bit stage, start of the 3-bit one
    steps = [k for k in after4 if k.endswith(".step")]
    initialised = [k for k in steps if bool(after4[k.replace(".step", ".initialized")].all())]
    assert any("weight_quantizer" in k for k in initialised)
    assert any("act_quantizer" in k for k in initialised)

    def fixed(key: str) -> bool:
        return key.startswith(("stem.conv.", "classifier.")) or ".se." in key

    assert any(fixed(k) for k in initialised) and any(not fixed(k) for k in initialised)
    for key in steps:
        factor = 1.0 if fixed(key) else 2.0
        torch.testing.assert_close(before3[key], factor * after4[key], rtol=0, atol=0)
    for key, value in after4.items():  # weights, BN statistics, kernel transforms kept
        if not key.endswith(".step"):
            assert torch.equal(before3[key], value), key
    assert [s["bits"] for s in result.log["stages"]] == [4, 3]
    assert result.log["stages"][1]["step_scale"] == 2.0
    searched = ctx.space.searchable_layers(ctx.space.max_arch())
    assert result.log["stages"][1]["quantizers_scaled"] == 2 * len(searched)


def test_reinit_inheritance_keeps_the_weights_and_initialises_the_searched_steps_again(
    splits, mbv3_state, tmp_path, monkeypatch
) -> None:
    """``inherit_steps="reinit"``: every weight and BN statistic is inherited, the searched
    layers' steps start over (LSQ's rule on the stage's first batch), the fixed ones stay."""
    ctx = make_ctx(splits, mbv3_state, tmp_path)
    seen: list[dict[str, torch.Tensor]] = []
    real = OQAT._train_stage

    def recording(self, ctx, space, model, bits, *args):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(self, ctx, space, model, bits, *args)

    monkeypatch.setattr(OQAT, "_train_stage", recording)
    keys = dataclasses.replace(KEYS, fixed="space", inherit_steps="reinit")
    result = OQAT(keys).search(ctx)
    before3 = seen[1]  # the start of the 3-bit stage

    def fixed(key: str) -> bool:
        return key.startswith(("stem.conv.", "classifier.")) or ".se." in key

    flags = [k for k in before3 if k.endswith(".initialized")]
    assert any(fixed(k) for k in flags) and any(not fixed(k) for k in flags)
    for key in flags:
        assert bool(before3[key].any()) == fixed(key), key
    assert result.log["stages"][1]["quantizers_reinitialised"] == 2 * len(
        ctx.space.searchable_layers(ctx.space.max_arch())
    )
    assert "step_scale" not in result.log["stages"][1]


# --- the sandwich step, extraction ---------------------------------------------------------
def test_sandwich_step_runs_largest_smallest_and_random_at_the_stage_bits(
    splits, mbv3_state, tmp_path
) -> None:
    ctx = make_ctx(splits, mbv3_state, tmp_path)
    space = ctx.space.with_fixed(32)
    supernet = ctx.fp_supernet(oqat_quant())
    calls: list[tuple] = []
    real = space.set_active

    def recording(model, arch, policy=None):
        calls.append((space.validate_arch(arch), policy))
        return real(model, arch, policy)

    space.set_active = recording  # type: ignore[method-assign]
    recipe = dataclasses.replace(ctx.preset.finetune, max_steps=1, batch_size=8)
    keys = dataclasses.replace(KEYS, subnets_per_step=4)
    stats = OQAT(KEYS)._train_stage(ctx, space, supernet, 3, recipe, keys, 0)
    assert stats.steps == 1 and stats.samples == 4 * 8 == ctx.budget.samples
    archs = [arch for arch, _ in calls]
    assert archs[0] == max_arch() and archs[1] == min_arch() and len(archs) == 5  # + re-activate
    for arch, policy in calls:
        searchable = space.searchable_layers(arch)
        assert {(policy[n].w_bits, policy[n].a_bits) for n in searchable} == {(3, 3)}
        assert {policy[n].w_bits for n in space.fixed_layer_names(arch)} == {32}
    grads = [p.grad for p in supernet.parameters() if p.grad is not None]
    assert grads and supernet.blocks["1"].pw_expand.act_quantizer.step.grad is not None


def test_extracted_subnet_equals_the_active_supernet_and_the_inherit_rebuild(
    splits, mbv3_state, tmp_path
) -> None:
    ctx = make_ctx(splits, mbv3_state, tmp_path)
    space = ctx.space.with_fixed(32)
    supernet = ctx.fp_supernet(oqat_quant())
    recipe = dataclasses.replace(ctx.preset.finetune, max_steps=1, batch_size=8)
    OQAT(KEYS)._train_stage(ctx, space, supernet, 4, recipe, KEYS, 0)
    arch = space.sample_arch(random.Random(3))
    policy = space.uniform_policy(2, 2, arch)
    x = torch.randn(5, 3, 32, 32)
    space.set_active(supernet, arch, policy)
    supernet.eval()
    expected = supernet(x)
    net = space.extract(supernet, arch, policy).eval()
    torch.testing.assert_close(net(x), expected)
    rebuilt = space.build(arch, policy=policy, quant=oqat_quant())  # what the inherit track does
    rebuilt.load_state_dict(net.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x), expected)


# --- selection -----------------------------------------------------------------------------
def test_selected_subnets_meet_the_constraint(splits, mbv3_state, tmp_path) -> None:
    keys = dataclasses.replace(KEYS, bits=(4,), stage_epochs=(1.0,), stage_max_steps=(1,),
                               population=4, generations=1)  # fmt: skip
    ctx = make_ctx(splits, mbv3_state, tmp_path, constraint="bitops<=1.0")
    result = OQAT(keys, candidates_per_bits=3).search(ctx)
    space = ctx.space.with_fixed(32)
    assert result.candidates
    for cand in result.candidates:
        assert cand.fixed == 32 and cand.quant == oqat_quant() and cand.weights is not None
        assert ctx.constraint.satisfied(space.cost(cand.policy, cand.arch), space.reference())
        assert 0.0 <= cand.meta["val_top1"] <= 100.0
    # W4A4 at bitops<=1.0: the smallest subnet is feasible, the largest not
    assert not ctx.constraint.satisfied(
        space.cost(space.uniform_policy(4, 4, max_arch()), max_arch()), space.reference()
    )
    (stage,) = result.log["stages"]
    assert [h["generation"] for h in stage["history"]] == [0, 1]
    assert result.log["population"] == 4 and result.log["generations"] == 1


def test_evolve_never_returns_an_infeasible_architecture() -> None:
    space = get_space("mbv3-cifar")

    def feasible(arch) -> bool:  # a cheap stand-in for a cost limit: few wide blocks
        active = arch.active_slots()
        return sum(arch.expands[i] for i in active) <= 4 * len(active) and sum(arch.depths) <= 7

    def score(arch) -> float:  # prefers big networks: pushes against the limit
        return float(sum(arch.expands) + sum(arch.kernels) + 10 * sum(arch.depths))

    result = evolve(space, score, feasible, random.Random(0), population=6, generations=3)
    assert result is not None and all(feasible(m.arch) for m in result.population)
    assert len(result.history) == 4 and result.evaluations <= 6 + 3 * 5
    assert [h["best"] for h in result.history] == sorted(h["best"] for h in result.history)
    never = evolve(space, score, lambda a: False, random.Random(0), population=2, generations=1)
    assert never is None


def test_unreachable_constraint_fails_before_training(splits, mbv3_state, tmp_path) -> None:
    ctx = make_ctx(splits, mbv3_state, tmp_path, constraint="bitops<=0.3")
    with pytest.raises(ValueError, match=r"achievable 0\.7995 \(smallest architecture at W3A3"):
        OQAT(KEYS, fixed="method").search(ctx)
    ctx = make_ctx(splits, mbv3_state, tmp_path, constraint="bitops<=0.01")
    with pytest.raises(ValueError, match="cannot be met on mbv3-cifar"):
        OQAT(KEYS).search(ctx)  # not even under the space's convention
    assert ctx.budget.samples == 0


def test_a_tight_limit_falls_back_to_the_space_convention(splits, mbv3_state, tmp_path) -> None:
    keys = dataclasses.replace(KEYS, bits=(2,), stage_epochs=(1.0,), stage_max_steps=(1,),
                               population=4, generations=1)  # fmt: skip
    ctx = make_ctx(splits, mbv3_state, tmp_path, constraint="bitops<=0.3")
    result = OQAT(keys).search(ctx)  # FP stem alone: 0.65x W8A8
    assert result.candidates and result.log["fixed"] is None
    assert "even the cheapest candidate misses bitops<=0.3" in result.log["fixed_why"]
    for cand in result.candidates:
        assert cand.fixed is None  # the task's space: stem, SE, classifier 8-bit
        cost = ctx.space.cost(cand.policy, cand.arch)
        assert ctx.constraint.satisfied(cost, ctx.space.reference())


@pytest.mark.parametrize("bad", ["fp", "", 32, None])
def test_fixed_option_is_checked(bad) -> None:
    with pytest.raises(PresetError, match="fixed = .* is wrong.*one of 'auto', 'method', 'space'"):
        OQAT(fixed=bad)


# --- checkpoints ---------------------------------------------------------------------------
def test_resume_after_a_stage_restarts_at_the_next_stage(
    splits, mbv3_state, tmp_path, monkeypatch
) -> None:
    real = OQAT._train_stage
    trained: list[int] = []

    def failing(self, ctx, space, model, bits, *args):
        if bits == 3 and not trained.count(3):
            trained.append(3)
            raise RuntimeError("killed during the 3-bit stage")
        trained.append(bits)
        return real(self, ctx, space, model, bits, *args)

    monkeypatch.setattr(OQAT, "_train_stage", failing)
    ctx = make_ctx(splits, mbv3_state, tmp_path)
    with pytest.raises(RuntimeError, match="killed"):
        OQAT(KEYS).search(ctx)
    spent = ctx.budget.samples
    assert trained == [4, 3] and spent > 0
    assert [c.label for c in ctx.offered] == ["W4A4"]  # offered after the finished stage
    resumed = make_ctx(splits, mbv3_state, tmp_path)
    assert resumed.restore_spend()["samples"] == spent  # what the harness does on resume
    result = OQAT(KEYS).search(resumed)
    assert trained == [4, 3, 3]  # the 4-bit stage was not trained again
    assert sorted(c.label for c in result.candidates) == ["W3A3", "W4A4"]
    assert [s["bits"] for s in result.log["stages"]] == [4, 3]
    assert resumed.budget.samples > spent


def test_a_diverged_later_stage_keeps_the_finished_bit_widths(
    splits, mbv3_state, tmp_path, monkeypatch
) -> None:
    real = OQAT._train_stage

    def diverging(self, ctx, space, model, bits, *args):
        if bits == 3:
            raise DivergedError("oqat W3A3 supernet: loss became nan at step 4")
        return real(self, ctx, space, model, bits, *args)

    monkeypatch.setattr(OQAT, "_train_stage", diverging)
    result = OQAT(KEYS).search(make_ctx(splits, mbv3_state, tmp_path / "a"))
    assert [c.label for c in result.candidates] == ["W4A4"]
    assert result.log["diverged_at_bits"] == 3
    assert [s["bits"] for s in result.log["stages"]] == [4, 3]
    assert "nan" in result.log["stages"][-1]["diverged"]

    def first_diverges(self, ctx, space, model, bits, *args):
        raise DivergedError("oqat W4A4 supernet: loss became nan at step 1")

    monkeypatch.setattr(OQAT, "_train_stage", first_diverges)
    with pytest.raises(DivergedError):  # nothing finished: the trial is `diverged`
        OQAT(KEYS).search(make_ctx(splits, mbv3_state, tmp_path / "b"))


# --- options, the fixed space ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"bits": [4, 4], "stage_epochs": [1, 1]}, "bits must decrease"),
        ({"bits": 4}, "bits = 4 is wrong"),
        ({"bits": []}, "non-empty list"),
        ({"bits": [4, 2.5]}, r"bits\[1\] = 2.5 is wrong"),
        ({"candidates_per_bits": 0}, "candidates_per_bits = 0 is out of range"),
        ({"nope": 1}, "unknown key nope"),
        ({"bits": [4, 3]}, "need 2 stage lengths; stage_epochs has 3"),
    ],
)
def test_options_are_checked_with_one_line_errors(options: dict, words: str) -> None:
    with pytest.raises((ValueError, TypeError), match=words):
        OQAT(**options)


def test_preset_section_is_validated_and_matched_to_the_bits(splits, mbv3_state, tmp_path) -> None:
    with pytest.raises(PresetError, match="population"):
        parse_section(OQATConfig, {"population": 1}, "preset x", "methods.oqat")
    with pytest.raises(PresetError, match="unknown key"):
        parse_section(OQATConfig, {"stages": [1]}, "preset x", "methods.oqat")
    for name in ("tiny", "smoke", "small", "paper", "fmnist"):  # every shipped preset fits
        keys = get_method("oqat").configure(load_preset(name))
        assert len(keys.stage_epochs) == 3 == len(keys.bits)
        assert list(keys.stage_epochs) == sorted(keys.stage_epochs, reverse=True)
    with pytest.raises(PresetError, match=r"--method-options for oqat: bits \[4, 3\] need 2"):
        get_method("oqat").configure(load_preset("tiny"), {"bits": [4, 3]})  # 3 stage lengths


def test_resnet20_is_uniform_bits_with_inheritance(splits, tmp_path) -> None:
    keys = dataclasses.replace(KEYS, stage_max_steps=(2, 1))
    ctx = make_ctx(splits, random_state("resnet20"), tmp_path, space="resnet20",
                   constraint="bitops<=0.5")  # fmt: skip
    result = OQAT(keys, bits=(4, 2)).search(ctx)
    assert [c.label for c in sorted(result.candidates, key=lambda c: -c.meta["bits"])] == [
        "W4A4",
        "W2A2",
    ]
    assert result.log["mode"].startswith("uniform bits with inheritance")
    space = ctx.space.with_fixed(32)
    for cand in result.candidates:
        assert cand.arch is None and cand.fixed == 32
        model = space.build(None, policy=cand.policy, quant=cand.quant)
        model.load_state_dict(cand.weights)
    assert ctx.budget.samples > 2 * 8


def test_the_clip_key_reaches_every_stage(splits, mbv3_state, tmp_path, monkeypatch) -> None:
    keys = dataclasses.replace(KEYS, clip_grad_norm=2.5)
    ctx = make_ctx(splits, mbv3_state, tmp_path)
    seen: list = []
    real = ctx.train

    def train(*args, **kwargs):
        seen.append(kwargs.get("clip_grad_norm"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ctx, "train", train)
    OQAT(keys).search(ctx)
    assert seen == [2.5, 2.5]
    with pytest.raises(PresetError, match="clip_grad_norm"):
        parse_section(OQATConfig, {"clip_grad_norm": 0}, "test", "methods.oqat")


# --- end to end --------------------------------------------------------------------------------
def test_cli_run_end_to_end_on_digits(tmp_path: Path, micro_preset, cache_dir: Path) -> None:
    preset = micro_preset("oqat-micro")  # and tiny.toml's [methods.oqat]
    argv = ["run", "--methods", "oqat", "--preset", str(preset), "--executor", "serial",
            "--out", str(tmp_path / "out"), "--run-id", "oqat", "--cache-dir", str(cache_dir),
            "--constraint", "bitops<=1.2"]  # fmt: skip
    assert main(argv) == 0
    rows = pd.read_parquet(tmp_path / "out" / "runs" / "oqat" / "records.parquet")
    assert set(rows["candidate"]) == {"W4A4", "W3A3", "W2A2"}
    assert (rows["status"] == "ok").all() and rows["feasible"].all()
    assert sorted(rows["track"]) == ["inherit"] * 3 + ["retrain"] * 3
    assert (rows["bitops_ratio_w8a8"] <= 1.2).all()
    inherit = rows[rows["track"] == "inherit"]
    assert all(json.loads(q)["act_grid"] == "unsigned" for q in inherit["quant"])
    assert all(json.loads(f) == {"stem": 32, "se": 32, "classifier": 32} for f in rows["fixed"])
    assert (rows["samples_processed"] > 0).all() and (rows["top1_test"] >= 0).all()
