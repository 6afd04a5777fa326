"""Result rows say which quantizer config and which fixed-layer convention each candidate
was evaluated with (``quant`` and ``fixed`` columns), and use the candidate's convention
for cost, feasibility and both tracks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from benchmark.arena import (
    Candidate,
    Constraint,
    LayerBits,
    LSQConfig,
    QuantConfig,
    TaskLimit,
    get_space,
)
from benchmark.arena.presets import load_preset
from benchmark.harness.evaluation import evaluate_candidate
from benchmark.harness.records import COLUMNS, ResultRow, RunStore, normalise, read_records

TINY = str(Path(__file__).parent / "tiny.toml")
FP = LayerBits(32, 32)


def base_row() -> ResultRow:
    return ResultRow(
        run_id="r",
        trial_key="k",
        method="m",
        space="resnet20",
        dataset="digits",
        preset="tiny",
        seed=0,
        constraint="bitops<=1",
    )


def context(space, constraint: str = "bitops<=1") -> SimpleNamespace:
    torch.manual_seed(0)
    return SimpleNamespace(
        space=space,
        constraint=Constraint.parse(constraint),
        limit=TaskLimit(Constraint.parse(constraint), space),
        preset=load_preset(TINY),
        device="cpu",
        task=SimpleNamespace(seed=0),
        fp_state=space.build().state_dict(),
    )


def evaluate(candidate: Candidate, ctx, splits) -> list[ResultRow]:
    return evaluate_candidate(base_row(), 0, candidate, None, ctx, splits, None)


@pytest.fixture(scope="module")
def space():
    return get_space("resnet20")


def test_rows_record_quant_and_fixed_for_both_tracks(space, digits_splits) -> None:
    ctx = context(space)
    fixed = {"stem": 32}
    own = space.with_fixed(fixed)
    policy = own.uniform_policy(4)
    searched = {k: v for k, v in policy.items() if k in own.searchable_layers()}
    quant = QuantConfig(weight=LSQConfig(grad_scale=False), per_bit_weight=True, per_bit_act=True)
    model = own.build(policy=policy, quant=quant)
    model(torch.randn(2, 3, 32, 32))  # initialise the quantizers
    candidate = Candidate(searched, weights=model.state_dict(), quant=quant, fixed=fixed)

    rows = evaluate(candidate, ctx, digits_splits)
    assert [r.track for r in rows] == ["retrain", "inherit"]
    assert all(r.status == "ok" for r in rows), [r.error for r in rows]
    retrain, inherit = rows
    # the convention: stated in its own column and in the full policy
    for row in rows:
        assert json.loads(row.fixed) == {"stem": 32, "classifier": 8}
        assert json.loads(row.policy)["conv1"] == {"w_bits": 32, "a_bits": 32}
        assert json.loads(row.policy)["fc"] == {"w_bits": 8, "a_bits": 8}
        assert row.bitops == own.cost(policy).bitops > space.cost(space.uniform_policy(4)).bitops
    # the quantizer config of each track: the shared default, and the candidate's own
    assert QuantConfig.from_dict(json.loads(retrain.quant)) == QuantConfig()
    assert QuantConfig.from_dict(json.loads(inherit.quant)) == space.layer_quant(quant)
    assert json.loads(inherit.quant)["weight"] == {"kind": "lsq", "grad_scale": False}
    assert retrain.quant != inherit.quant


def test_default_candidate_rows_state_the_space_convention(space, digits_splits) -> None:
    ctx = context(space)
    candidate = Candidate(space.uniform_policy(3))
    (row,) = evaluate(candidate, ctx, digits_splits)
    assert row.status == "ok" and row.track == "retrain"
    assert json.loads(row.fixed) == {"stem": 8, "classifier": 8}
    assert json.loads(row.quant) == QuantConfig().to_dict()
    # the candidate's convention changes feasibility: an FP stem and classifier cost more
    tight = context(space, "bitops<=0.15")
    (cheap,) = evaluate(Candidate(space.uniform_policy(2)), tight, digits_splits)
    assert cheap.feasible
    searched = {k: v for k, v in space.uniform_policy(2).items() if k not in ("conv1", "fc")}
    (costly,) = evaluate(Candidate(searched, fixed=32), tight, digits_splits)
    assert costly.feasible is False and costly.track == "none" and costly.quant == ""
    assert json.loads(costly.fixed) == {"stem": 32, "classifier": 32}
    assert costly.bitops > cheap.bitops


@pytest.mark.parametrize(
    ("fixed", "policy_extra", "word"),
    [
        ({"head": 32}, {}, "'head'"),
        ({"stem": 5}, {}, "W5A5"),
        ({"stem": 32}, {"conv1": LayerBits(8, 8)}, "fixed at W32A32"),
    ],
)
def test_bad_candidate_conventions_fail_that_candidate(
    space, digits_splits, fixed, policy_extra, word
) -> None:
    ctx = context(space)
    candidate = Candidate({**space.uniform_policy(4), **policy_extra}, fixed=fixed)
    (row,) = evaluate(candidate, ctx, digits_splits)
    assert row.status == "failed" and "invalid candidate" in row.error and word in row.error


def test_inherit_track_with_a_wrong_quant_type_is_a_failed_row(space, digits_splits) -> None:
    ctx = context(space)
    model = space.build(policy=space.uniform_policy(4))
    candidate = Candidate(space.uniform_policy(4), weights=model.state_dict(), quant={"x": 1})
    rows = evaluate(candidate, ctx, digits_splits)
    assert [r.track for r in rows] == ["retrain", "inherit"]
    assert rows[1].status == "failed" and "QuantConfig" in rows[1].error


# --------------------------------------------------------------------------- records


def test_columns_are_stored_and_typed(tmp_path: Path) -> None:
    assert {"quant", "fixed"} <= set(COLUMNS)
    quant = json.dumps(QuantConfig(per_bit_act=True).to_dict())
    row = ResultRow(**{**base_row().to_dict(), "quant": quant, "fixed": '{"stem": 32}'})
    store = RunStore.open(tmp_path / "run")
    store.add([row])
    for path in (store.records_path, store.csv_path):
        frame = normalise(read_records(path))
        assert frame.loc[0, "quant"] == quant and frame.loc[0, "fixed"] == '{"stem": 32}'


def test_old_records_without_the_columns_stay_readable(tmp_path: Path) -> None:
    old = base_row().to_dict()
    del old["quant"], old["fixed"]
    for suffix in ("csv", "parquet"):
        path = tmp_path / f"records.{suffix}"
        frame = pd.DataFrame([old])
        frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
        typed = normalise(read_records(path))
        assert list(typed.columns[: len(COLUMNS)]) == list(COLUMNS)
        assert typed.loc[0, "quant"] == "" and typed.loc[0, "fixed"] == ""
        assert typed.loc[0, "policy"] == "{}"
