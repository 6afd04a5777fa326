"""OMPQ: ORM math, allocation (LP + rounding, ILP), feature taps, the method, end to end.

The method tests use an FP ResNet-20 trained by a micro preset (``tests/tiny.toml`` with a
320-image training subset and 1 pretrain epoch: 5 steps) and cached in the session cache
folder, where the end-to-end CLI run with the same preset file finds it again.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.arena.context import Context
from benchmark.arena.data import load_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.protocol import Budget, Task
from benchmark.arena.spaces import get_space
from benchmark.cli import main
from benchmark.harness.spec import TrialSpec
from benchmark.harness.trial import run_trial
from methods import get_method
from methods.ompq import OMPQ, feature_gram
from methods.ompq_orm import (
    BitProblem,
    InfeasibleBudget,
    center_gram,
    gamma,
    gram_linear,
    importance,
    objective_coefs,
    orm_from_grams,
    orm_matrix,
    repair,
    round_floor_ceil,
    solve_ilp,
    solve_lp,
)

TINY = Path(__file__).parent / "tiny.toml"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of the micro preset: tiny.toml, 320 training images, 1 pretrain epoch."""
    text = TINY.read_text().replace('name = "tiny"', 'name = "ompq-micro"')
    text = text.replace("[data]\n", "[data]\ntrain_subset = 320\n")
    text = text.replace("[pretrain]\nepochs = 2", "[pretrain]\nepochs = 1")
    path = tmp_path_factory.mktemp("ompq-preset") / "micro.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def splits(micro: str):
    data = load_preset(micro).data
    return load_splits(
        "digits", val_fraction=data.val_fraction, seed=0, train_subset=data.train_subset,
        augment=data.augment,
    )  # fmt: skip


@pytest.fixture(scope="module")
def micro_fp(micro: str, splits, cache_dir: Path) -> dict:
    """FP ResNet-20 of the micro preset (cached where the CLI runs below look for it)."""
    from benchmark.arena.recipes.pretrain import pretrain_fp

    space = get_space("resnet20", num_classes=splits.num_classes)
    state, _ = pretrain_fp(space, splits, load_preset(micro), seed=0, cache_dir=cache_dir)
    return state


def make_ctx(
    space_name: str, fp_state: dict, splits, constraint: str, tmp_path: Path, seed: int = 0
) -> Context:
    space = get_space(space_name, num_classes=splits.num_classes)
    preset = load_preset(str(TINY))
    return Context.create(
        Task(space_name, "digits", preset.name, constraint, seed),
        space,
        preset,
        splits,
        fp_state,
        budget=Budget(600.0, 10**6),
        workdir=tmp_path,
        log=logging.getLogger("test_ompq"),
    )


def _random_features(rng: np.random.Generator, n: int = 16) -> list[np.ndarray]:
    return [rng.normal(size=(n, d)) ** p for d, p in ((5, 1), (40, 2), (300, 1), (8, 3))]


# --------------------------------------------------------------------------- ORM math
def test_orm_symmetric_unit_diagonal_bounded() -> None:
    orm = orm_matrix(_random_features(np.random.default_rng(0)))
    assert np.array_equal(orm, orm.T)
    assert np.array_equal(np.diag(orm), np.ones(4))
    assert (orm >= 0).all() and (orm <= 1).all()
    assert (orm[~np.eye(4, dtype=bool)] < 1).all()


def test_orm_invariant_to_feature_scale_offset_and_rotation() -> None:
    rng = np.random.default_rng(1)
    feats = _random_features(rng)
    orm = orm_matrix(feats)
    scaled = list(feats)
    scaled[1] = 7 * feats[1]  # scale one tap by 7
    np.testing.assert_allclose(orm_matrix(scaled), orm, atol=1e-12)
    shifted = [f + 3.0 for f in feats]  # centred: a constant offset changes nothing
    np.testing.assert_allclose(orm_matrix(shifted), orm, atol=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(300, 300)))
    rotated = list(feats)
    rotated[2] = feats[2] @ q
    np.testing.assert_allclose(orm_matrix(rotated), orm, atol=1e-10)


def test_centring_is_hkh_and_torch_taps_match_numpy() -> None:
    x = np.random.default_rng(2).normal(size=(10, 7)) + 5
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    np.testing.assert_allclose(center_gram(gram_linear(x)), h @ gram_linear(x) @ h, atol=1e-9)
    feats = _random_features(np.random.default_rng(3))
    via_torch = orm_from_grams([feature_gram(torch.tensor(f)) for f in feats])[0]
    np.testing.assert_allclose(via_torch, orm_matrix(feats), atol=1e-6)
    tap = torch.tensor(feats[1])
    np.testing.assert_allclose(feature_gram(7 * tap), feature_gram(tap), atol=1e-6)


def test_identical_taps_score_high_gamma_and_low_importance() -> None:
    n = 12
    # orthonormal columns, the first ∝ 1: the others are centred and mutually orthogonal
    basis, _ = np.linalg.qr(np.c_[np.ones(n), np.random.default_rng(4).normal(size=(n, n - 1))])
    a, b, c = basis[:, 1:4], basis[:, 4:7], basis[:, 7:10]
    orm = orm_matrix([a, 2 * a, b, c])  # taps 0, 1 identical up to scale; 2, 3 orthogonal
    np.testing.assert_allclose(
        orm, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], atol=1e-9
    )
    g = gamma(orm)
    np.testing.assert_allclose(g, [1, 1, 0, 0], atol=1e-9)
    raw, scaled = importance(g, beta=2.0)
    np.testing.assert_allclose(raw, np.exp(-2.0 * np.array([1, 1, 0, 0])), atol=1e-9)
    assert raw[0] < raw[2] and scaled.max() == 1.0
    np.testing.assert_allclose(importance(g, 0.0)[1], np.ones(4))  # ORM off: all equal
    # suffix means: c_i = mean(θ_i..θ_L)
    np.testing.assert_allclose(objective_coefs(np.array([1.0, 2.0, 3.0])), [2.0, 2.5, 3.0])


def test_degenerate_tap_and_huge_beta() -> None:
    feats = _random_features(np.random.default_rng(5))
    feats[2] = np.ones((16, 30)) * 4.2  # constant over the batch
    orm, degenerate = orm_from_grams([gram_linear(f) for f in feats])
    assert degenerate == [2] and orm[2, 2] == 1 and orm[2, [0, 1, 3]].sum() == 0
    raw, scaled = importance(np.array([20.0, 20.5, 30.0]), beta=100.0)
    assert raw.max() == 0.0  # exp(-2000) underflows ...
    np.testing.assert_allclose(scaled[:2], [1.0, np.exp(-50.0)])  # ... the scaled form not


# --------------------------------------------------------------------------- allocation
def _problem(seed: int, size: int, frac: float, choices=(2, 3, 4, 8)) -> BitProblem:
    rng = np.random.default_rng(seed)
    units = rng.integers(1_000, 100_000, size).astype(float)
    lo, hi = units.sum() * choices[0], units.sum() * choices[-1]
    coefs = objective_coefs(rng.uniform(0.01, 1.0, size))
    return BitProblem(coefs, units, lo + frac * (hi - lo), tuple(choices))


@pytest.mark.parametrize("frac", [0.0, 1e-4, 0.05, 0.3, 0.7, 1.0, 1.5])
def test_lp_rounding_and_ilp_respect_the_budget(frac: float) -> None:
    for seed in range(6):
        problem = _problem(seed, 12, frac)
        lp_bits, info = solve_lp(problem)
        assert info["status"] == "Optimal"
        rounded = round_floor_ceil(problem, lp_bits)
        exact = solve_ilp(problem)
        for sol in (rounded, exact):
            assert problem.fits(sol.bits) and set(sol.bits) <= set(problem.choices)
        assert exact.objective >= rounded.objective - 1e-12
        assert info["objective"] >= exact.objective - 1e-9  # the LP bounds the ILP
        if frac == 0.0:
            assert rounded.bits == exact.bits == [2] * 12
        if frac >= 1.0:
            assert rounded.bits == exact.bits == [8] * 12


def test_ilp_is_exact_against_brute_force() -> None:
    for seed in range(5):
        problem = _problem(seed, 5, 0.35)
        best = max(
            (b for b in itertools.product(problem.choices, repeat=5) if problem.fits(b)),
            key=problem.objective,
        )
        assert solve_ilp(problem).objective == pytest.approx(problem.objective(best), rel=1e-12)


def test_rounding_is_floor_or_ceil_of_the_lp() -> None:
    problem = _problem(7, 10, 0.4)
    lp_bits, _ = solve_lp(problem)
    rounded = round_floor_ceil(problem, lp_bits)
    for b, r in zip(lp_bits, rounded.bits, strict=True):
        below = max(c for c in problem.choices if c <= b + 1e-6)
        above = min(c for c in problem.choices if c >= b - 1e-6)
        assert r in (below, above)


def test_greedy_rounding_and_repair_keep_the_budget() -> None:
    problem = _problem(3, 20, 0.2)
    many_fractional = [2.5] * 20  # more than MAX_ENUMERATED fractional variables
    rounded = round_floor_ceil(problem, many_fractional)
    assert rounded.info["mode"] == "greedy" and problem.fits(rounded.bits)
    assert set(rounded.bits) <= {2, 3}
    bits, steps = repair(problem, [8] * 20)
    assert problem.fits(bits) and steps > 0


def test_infeasible_problem_raises() -> None:
    problem = _problem(0, 6, 0.0)
    tight = BitProblem(problem.coefs, problem.unit_costs, problem.budget * 0.999, problem.choices)
    for solve in (lambda p: solve_lp(p), solve_ilp):
        with pytest.raises(InfeasibleBudget, match="minimum cost"):
            solve(tight)


# --------------------------------------------------------------------------- the method
def test_registered_and_options_validated() -> None:
    assert get_method("ompq") is OMPQ and OMPQ.searches == "bits"
    with pytest.raises(ValueError, match="solver"):
        OMPQ(solver="slsqp")
    with pytest.raises(ValueError, match="batch_size"):
        OMPQ(batch_size=1)
    with pytest.raises(ValueError, match="unknown key gamma"):
        OMPQ(gamma=3)
    with pytest.raises(ValueError, match=r"bit_bounds must be \[low, high\]"):
        OMPQ(bit_bounds=[4, 2])
    assert OMPQ(betas=1).config.betas == (1.0,)  # one number is a list of one


@pytest.mark.parametrize(
    ("constraint", "options"),
    [
        ("bitops<=0.3", {"solver": "both", "betas": [1.0], "orm_off": True}),
        ("bitops<=0.5", {"a_bits": 4, "bit_bounds": [3, 8]}),
        ("size<=0.3", {}),
        ("size<=100KB", {"solver": "ilp"}),
    ],
)
def test_search_meets_the_constraint(
    constraint: str, options: dict, micro_fp, splits, tmp_path: Path
) -> None:
    ctx = make_ctx("resnet20", micro_fp, splits, constraint, tmp_path)
    result = OMPQ(**options).search(ctx)
    reference = ctx.space.reference()
    assert ctx.budget.samples == 32
    for cand in result.candidates:
        assert ctx.constraint.satisfied(ctx.space.cost(cand.policy), reference), cand.label
        assert cand.meta["beta"] >= 0 and cand.meta["variant"] in ("lp+floor/ceil", "ilp")
        searched = [cand.policy[n] for n in ctx.space.searchable_layers()]
        assert {b.a_bits for b in searched} == {options.get("a_bits", 8)}
        low = options.get("bit_bounds", [2])[0]
        assert all(b.w_bits >= low for b in searched)
        assert cand.policy["conv1"].w_bits == cand.policy["fc"].w_bits == 8
    log = json.loads(json.dumps(result.log))  # JSON-serialisable
    assert len(log["orm"]) == len(log["gamma"]) == len(log["taps"]) == 18
    assert {r["lp"]["status"] for r in log["runs"]} == {"Optimal"}
    if options.get("orm_off"):
        labels = [c.label for c in result.candidates]
        assert labels == [
            "ompq",
            "ompq-ilp",
            "ompq-beta1",
            "ompq-ilp-beta1",
            "ompq-orm-off",
            "ompq-ilp-orm-off",
        ]
        assert result.candidates[-1].meta["orm"] is False
        lp, ilp = result.candidates[0].meta, result.candidates[1].meta
        assert ilp["objective"] >= lp["objective"] - 1e-12


def test_tight_and_infeasible_limits(micro_fp, splits, tmp_path: Path) -> None:
    space = get_space("resnet20")
    lowest = space.cost(space.uniform_policy(2, 8)).bitops / space.reference().bitops_w8a8
    ctx = make_ctx("resnet20", micro_fp, splits, f"bitops<={lowest * 1.000001}", tmp_path)
    (cand,) = OMPQ().search(ctx).candidates
    assert all(cand.policy[n].w_bits == 2 for n in space.searchable_layers())
    ctx = make_ctx("resnet20", micro_fp, splits, f"bitops<={lowest * 0.99}", tmp_path)
    with pytest.raises(ValueError, match=f"infeasible on resnet20: .* costs {lowest:.4f}x W8A8"):
        OMPQ().search(ctx)
    assert ctx.budget.samples == 0  # refused before the forward pass


def test_deterministic_for_a_seed(micro_fp, splits, tmp_path: Path) -> None:
    runs = []
    for _ in range(2):
        ctx = make_ctx("resnet20", micro_fp, splits, "bitops<=0.35", tmp_path, seed=3)
        result = OMPQ(betas=[1.0]).search(ctx)
        runs.append(([c.policy_json() for c in result.candidates], json.dumps(result.log)))
    assert runs[0] == runs[1]


def test_mbv3_reference_arch(splits, tmp_path: Path) -> None:
    space = get_space("mbv3-cifar", num_classes=splits.num_classes)
    fp_state = space.build_supernet().state_dict()  # untrained: the mechanics only
    ctx = make_ctx("mbv3-cifar", fp_state, splits, "bitops<=0.6", tmp_path)
    result = OMPQ(batch_size=16).search(ctx)
    (cand,) = result.candidates
    assert cand.arch == space.reference_arch and result.log["tap_mode"] == "blocks"
    assert ctx.feasible(cand.policy, cand.arch)
    assert {cand.policy[n].w_bits for n in space.searchable_layers(cand.arch)} <= {2, 3, 4}


# --------------------------------------------------------------------------- end to end
def test_cli_run_end_to_end(tmp_path: Path, cache_dir: Path, micro: str, micro_fp) -> None:
    argv = ["run", "--methods", "ompq", "--space", "resnet20", "--preset", micro,
            "--executor", "serial", "--out", str(tmp_path), "--run-id", "ompq",
            "--cache-dir", str(cache_dir), "--constraint", "bitops<=0.3",
            "--method-options", '{"ompq": {"solver": "both"}}']  # fmt: skip
    assert main(argv) == 0
    rows = pd.read_parquet(tmp_path / "runs" / "ompq" / "records.parquet")
    assert list(rows["candidate"]) == ["ompq", "ompq-ilp"]
    assert (rows["status"] == "ok").all() and rows["feasible"].all()
    assert (rows["track"] == "retrain").all() and (rows["bitops_ratio_w8a8"] <= 0.3).all()
    assert (rows["samples_processed"] == 32).all() and (rows["top1_test"] > 0).all()
    assert json.loads(rows["extra"].iloc[1])["variant"] == "ilp"


def test_infeasible_limit_is_a_failed_trial_not_a_crash(
    tmp_path: Path, cache_dir: Path, micro: str, micro_fp
) -> None:
    task = {"space": "resnet20", "dataset": "digits", "preset": micro,
            "constraint": "bitops<=0.2", "seed": 0}  # fmt: skip
    spec = TrialSpec("r", "ompq", task, str(tmp_path), cache_dir=str(cache_dir))
    (row,) = run_trial(spec)
    assert row["status"] == "failed"
    assert "cheapest policy" in row["error"] and "0.2582" in row["error"]
