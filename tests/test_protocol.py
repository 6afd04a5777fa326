"""Constraints, budgets and the method registry."""

from __future__ import annotations

import pytest

from benchmark.arena.cost import Reference
from benchmark.arena.protocol import Budget, BudgetExceeded, BudgetMeter, Constraint, ProtocolError
from benchmark.arena.spaces import get_space
from methods import MethodError, get_method, list_methods


@pytest.mark.parametrize(
    ("text", "metric", "limit", "relative"),
    [
        ("bitops<=0.5", "bitops", 0.5, True),
        (" BitOPs <= 0.25x", "bitops", 0.25, True),
        ("bitops<=0.3G", "bitops", 0.3e9, False),
        ("bitops<=450M", "bitops", 450e6, False),
        ("size<=0.25", "size", 0.25, True),
        ("size<=40KB", "size", 40e3 * 8, False),
        ("size<=2KiB", "size", 2 * 1024 * 8, False),
        ("size<=1000bits", "size", 1000, False),
    ],
)
def test_constraint_parse(text: str, metric: str, limit: float, relative: bool) -> None:
    c = Constraint.parse(text)
    assert (c.metric, c.relative) == (metric, relative)
    assert c.limit == pytest.approx(limit)
    assert Constraint.parse(c.text) == c  # canonical text parses to the same constraint


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bitops",
        "bitops<0.5",
        "flops<=0.5",
        "bitops<=-1",
        "bitops<=0",
        "bitops<=20",
        "size<=3furlongs",
        "bitops<=abc",
    ],
)
def test_constraint_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        Constraint.parse(text)


def test_constraint_against_space_reference() -> None:
    space = get_space("resnet20")
    ref = space.reference()
    assert ref.bitops_w8a8 == 40_551_040 * 64
    w4 = space.cost(space.uniform_policy(4))
    assert Constraint.parse("bitops<=0.26").satisfied(w4, ref)
    assert not Constraint.parse("bitops<=0.25").satisfied(w4, ref)
    # relative limits are measured against the given reference, not the model's own W8A8
    half = Reference(ref.bitops_w8a8 / 2, ref.size_bits_w8a8 / 2)
    assert Constraint.parse("bitops<=0.52").satisfied(w4, half)
    assert not Constraint.parse("bitops<=0.5").satisfied(w4, half)
    exact = Constraint.parse(f"bitops<={w4.bitops / 1e9}G")
    assert not exact.relative and exact.satisfied(w4, ref)
    assert not Constraint.parse(f"bitops<={(w4.bitops - 1e3) / 1e9}G").satisfied(w4, ref)
    assert Constraint.parse("size<=140KB").satisfied(w4, ref)  # 134,704 bytes
    assert not Constraint.parse("size<=130KB").satisfied(w4, ref)


@pytest.mark.parametrize("metric", ["bitops", "size"])
def test_constraint_absolute_limit(metric: str) -> None:
    space = get_space("resnet20")
    ref = space.reference()
    w8a8 = ref.bitops_w8a8 if metric == "bitops" else ref.size_bits_w8a8
    assert w8a8 == (40_551_040 * 64 if metric == "bitops" else 268_336 * 8)
    assert Constraint.parse(f"{metric}<=0.5").absolute(ref) == 0.5 * w8a8
    half = Reference(ref.bitops_w8a8 / 2, ref.size_bits_w8a8 / 2)
    assert Constraint.parse(f"{metric}<=0.5").absolute(half) == 0.25 * w8a8
    # absolute limits: as parsed (BitOPs per image, bits), whatever the reference
    unit = "G" if metric == "bitops" else "KB"
    absolute = Constraint.parse(f"{metric}<=0.3{unit}")
    expected = 0.3e9 if metric == "bitops" else 0.3e3 * 8
    assert absolute.absolute(ref) == absolute.absolute(half) == pytest.approx(expected)
    assert isinstance(absolute.absolute(ref), float)


def test_satisfied_is_the_cost_against_the_absolute_limit() -> None:
    space = get_space("resnet20")
    ref = space.reference()
    w4 = space.cost(space.uniform_policy(4))
    for metric, value in (("bitops", w4.bitops), ("size", w4.size_bits)):
        w8a8 = ref.bitops_w8a8 if metric == "bitops" else ref.size_bits_w8a8
        at = Constraint.parse(f"{metric}<={value / w8a8!r}")
        assert at.absolute(ref) == pytest.approx(value, rel=1e-15) and at.satisfied(w4, ref)
        below = Constraint.parse(f"{metric}<={(value - 1e3) / w8a8!r}")
        assert below.absolute(ref) < value and not below.satisfied(w4, ref)
    # without a reference, a relative limit refers to the model's own W8A8 cost
    own = Constraint.parse(f"bitops<={w4.bitops / w4.bitops_w8a8!r}")
    assert own.satisfied(w4) and not Constraint.parse("bitops<=0.25").satisfied(w4)


@pytest.mark.parametrize(
    ("space_name", "constraint"),
    [("resnet20", "bitops<=0.4"), ("resnet20", "size<=100KB"), ("mbv3-cifar", "size<=0.6")],
)
def test_context_limit(space_name: str, constraint: str, tmp_path) -> None:
    from types import SimpleNamespace

    from benchmark.arena.context import Context
    from benchmark.arena.presets import load_preset
    from benchmark.arena.protocol import Task

    space = get_space(space_name)
    ctx = Context.create(
        Task(space_name, "digits", "smoke", constraint, 0),
        space,
        load_preset("smoke"),
        SimpleNamespace(train=[], val=[], num_classes=10),
        {},
        budget=Budget(1.0, 1),
        workdir=tmp_path,
    )
    ref = space.reference()
    assert ctx.limit.absolute == Constraint.parse(constraint).absolute(ref)
    expected = {"bitops<=0.4": 0.4 * ref.bitops_w8a8, "size<=100KB": 100e3 * 8}
    expected["size<=0.6"] = 0.6 * ref.size_bits_w8a8
    assert ctx.limit.absolute == pytest.approx(expected[constraint])
    # feasible() is the same check against the same number
    arch = space.reference_arch
    for bits in space.bit_choices:
        policy = space.uniform_policy(bits, bits, arch)
        cost = space.cost(policy, arch)
        value = cost.bitops if ctx.constraint.metric == "bitops" else cost.size_bits
        assert ctx.feasible(policy, arch) == (value <= ctx.limit.absolute)
    lowest = min(space.bit_choices)
    assert ctx.feasible(space.uniform_policy(lowest, lowest, arch), arch)
    assert not ctx.feasible(space.uniform_policy(8, 8, arch), arch)


def test_budget_meter_charges_and_raises() -> None:
    now = [0.0]
    meter = BudgetMeter(Budget(10.0, 100), clock=lambda: now[0])
    meter.charge(60)
    assert not meter.exhausted()
    meter.charge(40)
    assert meter.exhausted() and not meter.over()
    with pytest.raises(BudgetExceeded, match="samples"):
        meter.charge(1)
    timed = BudgetMeter(Budget(10.0, 100), clock=lambda: now[0])
    now[0] = 11.0
    assert timed.exhausted()
    with pytest.raises(BudgetExceeded):
        timed.charge(0)
    with pytest.raises(ProtocolError):
        Budget(0, 10)


def test_registry_lists_and_loads() -> None:
    assert {"uniform", "random"} <= set(list_methods())
    assert get_method("uniform").name == "uniform"
    with pytest.raises(MethodError, match="choose one of"):
        get_method("nope")
    with pytest.raises(MethodError, match="cannot import"):
        get_method("no_such_module_xyz:Thing")
    with pytest.raises(MethodError, match="not a Method"):
        get_method("benchmark.arena.protocol:Task")


def test_outside_method_by_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    cls = get_method("mpqbench_fake:AllW4")
    assert cls.name == "allw4"
    sys.modules.pop("mpqbench_fake", None)


def test_entry_point_method(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint
    from pathlib import Path

    import methods

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    ep = EntryPoint(name="fake-w4", value="mpqbench_fake:AllW4", group="mpqbench.methods")
    monkeypatch.setattr(methods, "entry_points", lambda group: [ep])
    assert "fake-w4" in list_methods()
    assert get_method("fake-w4").name == "allw4"


@pytest.mark.parametrize("space_name", ["resnet20", "mbv3-cifar"])
@pytest.mark.parametrize("constraint", ["bitops<=0.3", "size<=0.5"])
def test_the_task_limit_is_the_cost_model_on_random_policies(
    space_name: str, constraint: str
) -> None:
    import random

    from benchmark.arena import LayerBits, TaskLimit

    space = get_space(space_name)
    limit = TaskLimit(Constraint.parse(constraint), space)
    ref = space.reference()
    metric = limit.metric
    assert limit.reference == (ref.bitops_w8a8 if metric == "bitops" else ref.size_bits_w8a8)
    assert limit.absolute == pytest.approx(limit.ratio * limit.reference)
    rng = random.Random(0)
    for _ in range(25):
        arch = space.sample_arch(rng) if space_name == "mbv3-cifar" else None
        bits = space.bit_choices
        layers = space.searchable_layers(arch)
        policy = {n: LayerBits(rng.choice(bits), rng.choice(bits)) for n in layers}
        report = space.cost(space.full_policy(policy, arch), arch)
        value = report.bitops if metric == "bitops" else report.size_bits
        assert limit.cost(policy, arch) == value
        # the fixed layers' share plus the per-layer coefficients give the same total
        table = limit.table(arch)
        index = {b: i for i, b in enumerate(space.allowed_bits())}
        coefficients = limit.coefficients(arch)
        searched = sum(
            coefficients[row, index[policy[n].w_bits], index[policy[n].a_bits]]
            for row, n in enumerate(table.searchable)
        )
        assert limit.fixed(arch) + searched == pytest.approx(value)
        met = Constraint.parse(constraint).satisfied(report, ref)
        assert limit.met(policy, arch) is met
        assert (limit.check(policy, arch) is None) is met
        assert (limit.slack(policy, arch) >= 0) is (value <= limit.absolute)
    over = space.uniform_policy(8, 8)
    message = limit.check(over)
    assert message is not None and constraint in message and "over the limit" in message
    assert limit.free() == pytest.approx(limit.absolute - limit.fixed())


def test_a_candidate_from_a_model_keeps_a_snapshot_of_its_weights() -> None:
    import torch

    from benchmark.arena import Candidate, LayerBits

    model = torch.nn.Linear(3, 2)
    policy = {"fc": LayerBits(4, 4)}
    candidate = Candidate.from_model(model, policy, label="w4", meta={"val_top1": 1.0})
    with torch.no_grad():
        model.weight.add_(1.0)  # training on after the offer
    assert candidate.policy == policy and candidate.label == "w4" and candidate.meta
    assert set(candidate.weights) == {"weight", "bias"}
    assert not torch.equal(candidate.weights["weight"], model.weight)
    assert candidate.weights["weight"].device.type == "cpu"
    assert not candidate.weights["weight"].requires_grad
