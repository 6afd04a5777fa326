"""The leaderboard's statistics on synthetic records: the paired comparison with random,
the spread of the average rank, and the two tracks side by side with their Kendall τ."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from report_records import OMPQ_GAIN, synthetic_rows
from scipy import stats

from benchmark.harness.records import rows_to_frame
from benchmark.report.aggregate import AGGREGATE_COLUMNS
from benchmark.report.leaderboard import Leaderboard, build_leaderboard
from benchmark.report.ranks import rank_table
from benchmark.report.render import render_markdown
from benchmark.report.stats import min_detectable_difference, paired_difference, pooled_sd
from benchmark.report.tracks import ALL_CONSTRAINTS, track_agreement


@pytest.fixture(scope="module")
def board() -> Leaderboard:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the synthetic table is clean: no warning at all
        return build_leaderboard(rows_to_frame(synthetic_rows()))


def entries(agg: pd.DataFrame, method: str, track: str = "retrain") -> pd.DataFrame:
    hit = agg[(agg["method"] == method) & (agg["track"] == track)]
    assert len(hit) == 4, hit  # 2 spaces × 2 constraints
    return hit


# ------------------------------------------------------------------------ paired difference
def test_paired_difference_by_hand() -> None:
    a, b = [80.0, 82.0, 85.0], [79.0, 80.0, 81.0]  # differences 1, 2, 4
    result = paired_difference(a, b)
    sd = float(np.std([1.0, 2.0, 4.0], ddof=1))
    assert result.n == 3 and result.mean == pytest.approx(7 / 3)
    assert result.ci95 == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3))
    assert result.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert 0 < result.p_value < 0.2


def test_paired_difference_edge_cases() -> None:
    nan = math.nan
    dropped = paired_difference([1.0, nan, 3.0], [0.0, 5.0, nan])  # one pair left
    assert dropped.n == 1 and dropped.mean == 1.0
    assert math.isnan(dropped.ci95) and math.isnan(dropped.p_value)
    constant = paired_difference([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])  # no spread: no test
    assert constant.mean == 2.0 and constant.ci95 == 0.0 and math.isnan(constant.p_value)
    empty = paired_difference([], [])
    assert empty.n == 0 and math.isnan(empty.mean)
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0], [1.0, 2.0])


# --------------------------------------------------------------------------- vs random
def test_each_method_is_paired_with_random_at_the_same_task(board: Leaderboard) -> None:
    agg = board.aggregate
    assert {"vs_random_n", "vs_random_diff", "vs_random_ci95", "vs_random_p"} <= set(
        AGGREGATE_COLUMNS
    )
    ompq = entries(agg, "ompq")
    assert (ompq["vs_random_n"] == 3).all()
    assert ompq["vs_random_diff"].to_numpy() == pytest.approx([OMPQ_GAIN] * 4)
    assert (ompq["vs_random_ci95"] == 0).all() and ompq["vs_random_p"].isna().all()
    uniform = entries(agg, "uniform")  # −1, −1.5, −2 points on seeds 0, 1, 2
    expected = stats.ttest_rel([79.0, 80.5, 82.0], [80.0, 82.0, 84.0])
    assert uniform["vs_random_diff"].to_numpy() == pytest.approx([-1.5] * 4)
    assert uniform["vs_random_ci95"].to_numpy() == pytest.approx(
        [stats.t.ppf(0.975, 2) * 0.5 / math.sqrt(3)] * 4
    )
    assert uniform["vs_random_p"].to_numpy() == pytest.approx([expected.pvalue] * 4)
    random = entries(agg, "random")
    assert (random["vs_random_n"] == 0).all() and random["vs_random_diff"].isna().all()
    inherit = agg[agg["track"] == "inherit"]  # random has no inherit track: nothing to pair
    assert len(inherit) and (inherit["vs_random_n"] == 0).all()


def test_a_seed_without_a_result_is_left_out_of_the_pairs() -> None:
    rows = [r for r in synthetic_rows() if not (r.method == "ompq" and r.seed == 2)]
    agg = build_leaderboard(rows_to_frame(rows)).aggregate
    assert (entries(agg, "ompq")["vs_random_n"] == 2).all()


def test_markdown_shows_the_comparison_and_the_interval(board: Leaderboard) -> None:
    md = render_markdown(board)
    assert "Δ vs random" in md and "| reference |" in md
    assert "| -1.50 ± 1.24 (n=3) | 0.035 |" in md
    assert "| +2.00 ± 0.00 (n=3) | — |" in md
    assert "80.00 ± 2.48 (n=3)" in md  # ompq's mean ± t-interval half-width, n


# ------------------------------------------------------------------- power of the tests
@pytest.mark.parametrize("n", [3, 5])
def test_the_min_detectable_difference_is_found_with_power_0_8(n: int) -> None:
    """Simulated paired t-tests at the stated difference reject in 80% of the draws."""
    mdd = min_detectable_difference(1.0, n)
    rng = np.random.default_rng(n)
    draws = rng.normal(mdd, 1.0, size=(40_000, n))
    p = stats.ttest_1samp(draws, 0.0, axis=1).pvalue
    assert float(np.mean(p < 0.05)) == pytest.approx(0.8, abs=0.01)
    # a smaller true difference is found less often: no power to spare
    weaker = stats.ttest_1samp(rng.normal(0.8 * mdd, 1.0, size=(40_000, n)), 0.0, axis=1)
    assert float(np.mean(weaker.pvalue < 0.05)) < 0.75


def test_min_detectable_difference_scales_and_edges() -> None:
    assert min_detectable_difference(2.0, 5) == pytest.approx(2 * min_detectable_difference(1.0, 5))
    large = min_detectable_difference(1.0, 400)  # the normal approximation holds for large n
    assert large == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / 20, rel=0.01)
    assert min_detectable_difference(1.0, 3) > min_detectable_difference(1.0, 5)
    assert math.isfinite(min_detectable_difference(1.0, 2))  # one degree of freedom
    assert math.isnan(min_detectable_difference(1.0, 1))
    assert math.isnan(min_detectable_difference(math.nan, 3))
    assert min_detectable_difference(0.0, 3) == 0.0


def test_pooled_sd_by_hand() -> None:
    sd, dof = pooled_sd([[1.0, 2.0, 3.0], [5.0, 5.0], [7.0], [math.nan, 4.0, 6.0]])
    # squares about each mean: 2, 0, (one value: left out), 2; dof 2 + 1 + 1
    assert dof == 4 and sd == pytest.approx(math.sqrt(4 / 4))
    assert pooled_sd([[1.0]]) == (pytest.approx(math.nan, nan_ok=True), 0)


def test_each_task_states_its_min_detectable_difference(board: Leaderboard) -> None:
    agg = board.aggregate
    retrain = agg[agg["track"] == "retrain"]
    # paired differences: oqat, qfa and ompq constant (sd 0), uniform −1, −1.5, −2 (sd 0.5),
    # pooled over 4 methods with 2 degrees of freedom each: sd² = 0.5² · 2 / 8
    assert retrain["vs_random_sd"].to_numpy() == pytest.approx([0.25] * len(retrain))
    expected = min_detectable_difference(0.25, 3)
    assert retrain["vs_random_mdd"].to_numpy() == pytest.approx([expected] * len(retrain))
    assert agg.loc[agg["track"] == "inherit", "vs_random_mdd"].isna().all()  # no random there
    md = render_markdown(board)
    assert "min. detectable Δ, pp" in md and f"| {expected:.2f} |" in md


# --------------------------------------------------------------------------- rank spread
def test_average_rank_carries_its_spread_over_groups() -> None:
    agg = pd.DataFrame(
        {
            "track": ["retrain"] * 6,
            "method": ["A", "B"] * 3,
            "rank": [1.0, 2.0, 2.0, 1.0, 1.0, 2.0],
        }
    )
    table = rank_table(agg)
    assert set(table["track"]) == {"retrain"}  # never pooled across tracks
    a = table[(table["track"] == "retrain") & (table["method"] == "A")].iloc[0]
    assert a["average_rank"] == pytest.approx(4 / 3) and a["n_groups"] == 3
    assert a["rank_std"] == pytest.approx(np.std([1, 2, 1], ddof=1))
    assert a["rank_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * a["rank_std"] / math.sqrt(3))
    one = rank_table(agg.iloc[:2])
    assert one["rank_std"].isna().all() and one["rank_ci95"].isna().all()


# ------------------------------------------------------------------------------ tracks
def test_tracks_side_by_side_for_the_one_shot_methods(board: Leaderboard) -> None:
    tracks = board.tracks
    assert sorted(tracks["method"].unique()) == ["oqat", "qfa"]  # only those on both tracks
    assert len(tracks) == 8  # 2 methods × 2 spaces × 2 constraints
    oqat = tracks[tracks["method"] == "oqat"]
    assert (oqat["retrain_mean"] - oqat["inherit_mean"]).to_numpy() == pytest.approx([7.0] * 4)
    assert oqat["retrain_minus_inherit"].to_numpy() == pytest.approx([7.0] * 4)
    assert (oqat["retrain_minus_inherit_n"] == 3).all()
    assert oqat["kendall_tau"].to_numpy() == pytest.approx([1.0] * 4)
    assert (oqat["n_candidates"] == 9).all()
    qfa = tracks[tracks["method"] == "qfa"]
    assert qfa["kendall_tau"].to_numpy() == pytest.approx([-1.0] * 4)


def test_kendall_tau_pooled_over_constraints_counts_a_candidate_once(board: Leaderboard) -> None:
    pooled = board.track_agreement
    pooled = pooled[pooled["constraint"] == ALL_CONSTRAINTS]
    assert len(pooled) == 4  # 2 methods × 2 spaces
    # the synthetic candidates repeat their policy at both constraints: 9, not 18
    assert (pooled["n_candidates"] == 9).all()
    expected = {"oqat": 1.0, "qfa": -1.0}
    for _, row in pooled.iterrows():
        assert row["kendall_tau"] == pytest.approx(expected[row["method"]])
        assert row["kendall_p"] < 0.01


def test_kendall_tau_needs_three_candidates_on_both_tracks() -> None:
    rows = [
        r
        for r in synthetic_rows()
        if r.method == "oqat" and r.space == "resnet20" and r.constraint == "bitops<=0.12"
    ]
    few = [r for r in rows if r.seed == 0 and r.candidate_index < 2]  # 2 candidates
    agreement = track_agreement(rows_to_frame(few))
    assert (agreement["n_candidates"] == 2).all() and agreement["kendall_tau"].isna().all()
    one_track = [
        r for r in rows if r.seed == 0 and not (r.candidate_index == 0 and r.track == "inherit")
    ]
    assert (track_agreement(rows_to_frame(one_track))["n_candidates"] == 2).all()


def test_markdown_has_the_track_tables(board: Leaderboard) -> None:
    md = render_markdown(board)
    assert "### Tracks side by side: inherit vs retrain" in md
    assert "| oqat | resnet20 | digits | smoke | bitops<=0.12 | 77.00 ± 2.48 (n=3) |" in md
    assert "predict the retrained ranking" in md and "| +1.00 |" in md and "| -1.00 |" in md


def test_equal_differences_up_to_float_rounding_have_no_t_test() -> None:
    from benchmark.report.stats import paired_difference

    a = [98.70, 98.70, 98.70]  # one test image (0.28 points) below on every seed
    b = [98.98, 98.98, 98.98]
    b_noisy = [98.98, 98.98 + 1e-13, 98.98 - 1e-13]
    for other in (b, b_noisy):
        result = paired_difference(a, other)
        assert result.n == 3 and abs(result.mean + 0.28) < 1e-9
        assert math.isnan(result.p_value)  # not p ≈ 1e-27 from rounding
