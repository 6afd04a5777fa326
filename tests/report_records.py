"""Synthetic result rows for the report tests: a small, fully determined record table
(no real run). Accuracies are percent, BitOPs ratios to W8A8.

:func:`synthetic_rows` covers 2 spaces × 2 constraints × 3 seeds on digits/smoke with
``random``, ``uniform`` and ``ompq`` (``retrain`` only) and the one-shot ``oqat`` and
``qfa`` (three candidates each, on both tracks). Every accuracy is a formula of the
method, space, constraint, seed and candidate, so the tests can state what to expect:

* ``ompq`` beats ``random`` by exactly :data:`OMPQ_GAIN` points on every seed, ``uniform``
  trails it by 1.0 + 0.5·seed points;
* ``oqat``'s inherit accuracy is its retrain accuracy − 7 (τ = +1, retrain − inherit = 7
  on every seed), ``qfa``'s is 150 − retrain (τ = −1).
"""

from __future__ import annotations

from benchmark.harness.records import ResultRow

SPACES = ("resnet20", "mbv3-cifar")
CONSTRAINTS = ("bitops<=0.12", "bitops<=0.25")
SEEDS = (0, 1, 2)
OMPQ_GAIN = 2.0
ONE_SHOT = ("oqat", "qfa")


def _row(method: str, space: str, constraint: str, seed: int, index: int, track: str,
         top1: float, ratio: float, run_id: str = "synthetic") -> ResultRow:  # fmt: skip
    policy = f'{{"layer1": {{"w_bits": {2 + index}, "a_bits": {2 + index}}}}}'
    return ResultRow(
        run_id=run_id,
        trial_key=f"{method}|{space}|{constraint}|{seed}",
        method=method,
        space=space,
        dataset="digits",
        preset="smoke",
        seed=seed,
        constraint=constraint,
        candidate=f"c{index}",
        candidate_index=index,
        track=track,
        policy=policy,
        feasible=True,
        top1_val=top1 + 0.1,
        top1_test=top1,
        bitops=ratio * 1e9,
        bitops_ratio_w8a8=ratio,
        size_bits=ratio * 8e5,
        search_device_hours=0.01 * (1 + index),
        samples_processed=1000,
        device="cpu",
        device_share=1.0,
        mpqbench_version="0.1.0",
        git_sha="abcdef123456",
        finished_at="2030-01-01T00:00:00",
    )


def _base(space: str, constraint: str, seed: int) -> float:
    """``random``'s test top-1 (%) at a task: lower on the tighter limit and the joint space."""
    return 80.0 + (5.0 if constraint.endswith("0.25") else 0.0) - 3.0 * SPACES.index(space) + seed


def synthetic_rows(run_id: str = "synthetic") -> list[ResultRow]:
    """The record table described in the module docstring (one row per candidate and track)."""
    rows = []
    for space in SPACES:
        for constraint in CONSTRAINTS:
            limit = float(constraint.split("<=")[1])
            for seed in SEEDS:
                base = _base(space, constraint, seed)
                fixed = {
                    "random": base,
                    "ompq": base + OMPQ_GAIN,
                    "uniform": base - 1.0 - 0.5 * seed,
                }
                for method, top1 in fixed.items():
                    rows.append(
                        _row(method, space, constraint, seed, 0, "retrain", top1, limit, run_id)
                    )
                for method in ONE_SHOT:
                    for index in range(3):
                        retrain = base + 1.0 + index  # candidate 2 is best after retraining
                        inherit = retrain - 7.0 if method == "oqat" else 150.0 - retrain
                        ratio = limit * (0.6 + 0.1 * index)
                        for track, top1 in (("retrain", retrain), ("inherit", inherit)):
                            rows.append(
                                _row(
                                    method,
                                    space,
                                    constraint,
                                    seed,
                                    index,
                                    track,
                                    top1,
                                    ratio,
                                    run_id,
                                )  # fmt: skip
                            )
    return rows
