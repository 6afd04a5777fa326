"""The protocol's rule for a method's own fixed-layer convention (``arena.fit_fixed``)."""

from __future__ import annotations

import pytest

from benchmark.arena import FP_BITS, fit_fixed, get_space
from benchmark.arena.protocol import Constraint
from benchmark.arena.spaces.fit import lowest_cost


def fit(space: str, constraint: str, mode: str = "auto", low: int | None = None):
    return fit_fixed(get_space(space), Constraint.parse(constraint), FP_BITS, mode=mode,
                     method="m", own_label="every fixed layer FP", low_bits=low)  # fmt: skip


def test_the_fp_stem_alone_rules_out_tight_limits_on_mbv3() -> None:
    space = get_space("mbv3-cifar")
    ratio = Constraint.parse("bitops<=1").measure
    fp = ratio(lowest_cost(space.with_fixed(FP_BITS), 2), space.reference())
    eight = ratio(lowest_cost(space, 2), space.reference())
    assert 0.7 < fp < 0.8 and eight < 0.1  # the number the module doc states


@pytest.mark.parametrize("space", ["mbv3-cifar", "resnet20"])
def test_auto_keeps_the_method_convention_when_it_fits(space: str) -> None:
    chosen = fit(space, "bitops<=1.2")
    assert chosen.fixed == FP_BITS and "own convention" in chosen.why
    assert chosen.space.fixed_policy(chosen.space.reference_arch) != (
        get_space(space).fixed_policy(get_space(space).reference_arch)
    )


def test_auto_falls_back_to_the_space_convention_and_says_why() -> None:
    chosen = fit("mbv3-cifar", "bitops<=0.3")
    assert chosen.fixed is None and chosen.space.name == "mbv3-cifar"
    assert "even the cheapest candidate misses bitops<=0.3" in chosen.why
    cheapest = lowest_cost(chosen.space, 2)
    assert Constraint.parse("bitops<=0.3").satisfied(cheapest, chosen.space.reference())


def test_the_lowest_bits_decide_reachability() -> None:
    assert fit("resnet20", "bitops<=0.3", low=2).fixed == FP_BITS  # 0.237 under FP
    assert fit("resnet20", "bitops<=0.3", low=3).fixed is None  # 0.314 under FP


def test_method_mode_refuses_an_unreachable_limit_with_the_minimum() -> None:
    with pytest.raises(ValueError, match=r"minimum achievable 0\.7597 .*fixed='auto'"):
        fit("mbv3-cifar", "bitops<=0.3", mode="method")
    assert fit("mbv3-cifar", "bitops<=1.2", mode="method").fixed == FP_BITS


def test_space_mode_and_limits_no_convention_meets() -> None:
    chosen = fit("mbv3-cifar", "bitops<=1.2", mode="space")
    assert chosen.fixed is None and "option fixed='space'" in chosen.why
    with pytest.raises(ValueError, match=r"cannot be met on resnet20: minimum achievable 0\.15"):
        fit("resnet20", "bitops<=0.12", low=3)
    with pytest.raises(ValueError, match="fixed must be one of auto, method, space"):
        fit("resnet20", "bitops<=0.5", mode="fp")


def test_size_limits_use_the_same_rule() -> None:
    chosen = fit("mbv3-cifar", "size<=0.3")
    reference = chosen.space.reference()
    assert Constraint.parse("size<=0.3").satisfied(lowest_cost(chosen.space, 2), reference)
