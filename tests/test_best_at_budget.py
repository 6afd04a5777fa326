"""Who wins at each budget (benchmark.report.best) and the ranks per track, on hand-made
rows whose answers are known by construction."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark.report.best import best_at_each_budget
from benchmark.report.leaderboard import build_leaderboard
from benchmark.report.render import render_markdown
from benchmark.report.stats import holm
from tests.test_leaderboard import failed, frame_of, row

# seeds 0..3: A and B within ±0.2 of each other (B a hair lower on average), C ~4 points
# lower on every seed, D run on one seed only, E failed everywhere
SCORES = {
    "A": [92.0, 92.5, 91.8, 92.2],
    "B": [92.1, 92.3, 91.9, 92.0],
    "C": [88.0, 88.6, 87.9, 88.1],
}


def task_rows(constraint: str = "bitops<=0.5") -> list:
    rows = [
        row(method, seed, top1_test=value, top1_val=value, constraint=constraint)
        for method, values in SCORES.items()
        for seed, value in enumerate(values)
    ]
    rows.append(row("D", 0, top1_test=95.0, top1_val=95.0, constraint=constraint))
    rows += [failed("E", seed, constraint=constraint) for seed in range(4)]
    return rows


def test_holm_by_hand() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.2, float("nan"), 0.01])
    assert adjusted[0] == pytest.approx(0.2) and adjusted[2] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_the_best_the_tied_and_the_worse_are_marked() -> None:
    lb = build_leaderboard(frame_of(*task_rows()))
    best = lb.best.set_index("method")
    # D's one seed at 95 is the highest mean: it is the best, but nobody pairs with it on
    # more than one seed, so nobody can be told from it
    assert best.loc["D", "verdict"] == "best"
    assert set(best.loc[["A", "B", "C"], "verdict"]) == {"untested"}
    assert best.loc["E", "verdict"] == "no result"
    assert list(lb.best["method"]) == ["D", "A", "B", "C", "E"]  # best, then by mean

    lb = build_leaderboard(frame_of(*[r for r in task_rows() if r.method != "D"]))
    best = lb.best.set_index("method")
    assert best.loc["A", "verdict"] == "best"
    assert best.loc["B", "verdict"] == "tied"  # 0.05 lower, p ≫ 0.05
    assert best.loc["C", "verdict"] == "worse"
    diff = pd.Series(SCORES["C"]) - pd.Series(SCORES["A"])
    assert best.loc["C", "vs_best_diff"] == pytest.approx(diff.mean())
    assert best.loc["C", "vs_best_n"] == 4
    # Holm over the task's two comparisons: the smaller p doubled, the larger kept (≥)
    p_b, p_c = best.loc["B", "vs_best_p"], best.loc["C", "vs_best_p"]
    assert best.loc["C", "vs_best_p_holm"] == pytest.approx(min(1, 2 * p_c))
    assert best.loc["B", "vs_best_p_holm"] == pytest.approx(max(min(1, 2 * p_c), p_b))
    assert math.isnan(best.loc["A", "vs_best_p"])


def test_identical_scores_are_tied_and_a_constant_loss_is_worse() -> None:
    rows = [row("A", s, top1_test=90.0 + s, top1_val=90.0 + s) for s in range(3)]
    rows += [row("B", s, top1_test=90.0 + s, top1_val=90.0 + s) for s in range(3)]
    rows += [row("C", s, top1_test=89.0 + s, top1_val=89.0 + s) for s in range(3)]
    best = build_leaderboard(frame_of(*rows)).best.set_index("method")
    assert best.loc["A", "verdict"] == "best"  # ties by mean: more seeds, then the name
    assert best.loc["B", "verdict"] == "tied" and best.loc["C", "verdict"] == "worse"


def test_each_task_has_its_own_best_and_only_the_retrain_track_counts() -> None:
    rows = [r for r in task_rows("bitops<=0.5") if r.method in ("A", "C")]
    rows += [  # at the tighter budget C wins on every seed
        row(m, s, top1_test=v, top1_val=v, constraint="bitops<=0.25")
        for m, values in (("A", [80.0, 80.5, 79.0, 80.1]), ("C", [85.0, 85.1, 84.0, 85.3]))
        for s, v in enumerate(values)
    ]
    rows += [  # an inherit-track result above everything: not a budget's best
        row("A", s, index=1, track="inherit", top1_test=99.0, top1_val=99.0) for s in range(4)
    ]
    lb = build_leaderboard(frame_of(*rows))
    assert set(lb.best["track"]) == {"retrain"}
    winners = lb.best[lb.best["verdict"] == "best"].set_index("constraint")["method"]
    assert winners.to_dict() == {"bitops<=0.25": "C", "bitops<=0.5": "A"}
    assert best_at_each_budget(frame_of(*rows).iloc[:0], lb.aggregate).empty


def test_ranks_are_per_track_retrain_first_and_never_pooled() -> None:
    rows = [r for r in task_rows() if r.method in ("A", "B", "C")]
    rows += [  # on the inherit track only C and B produce weights; C ranks first there
        row(m, s, index=1, track="inherit", top1_test=v, top1_val=v)
        for m, v in (("C", 70.0), ("B", 60.0))
        for s in range(4)
    ]
    lb = build_leaderboard(frame_of(*rows))
    assert list(dict.fromkeys(lb.ranks["track"])) == ["retrain", "inherit"]
    retrain = lb.ranks[lb.ranks["track"] == "retrain"].set_index("method")["average_rank"]
    inherit = lb.ranks[lb.ranks["track"] == "inherit"].set_index("method")["average_rank"]
    assert retrain.idxmax() == "C" and inherit.to_dict() == {"C": 1.0, "B": 2.0}
    md = render_markdown(lb)
    # the board opens on the best-at-each-budget table, then the ranks per track
    assert md.index("### Best at each budget") < md.index("### Average rank per track")
    assert "| resnet20 · digits · smoke · bitops<=0.5 | A | **" in md
    assert "≈ best (not significantly worse)" in md and "| worse |" in md
    assert "— (not on this track)" in md  # A on the inherit track


def test_the_long_exports_hold_every_table_once_per_metric(tmp_path) -> None:
    import json

    from benchmark.report.render import write_leaderboard

    rows = [r for r in task_rows() if r.method in ("A", "B", "C")]
    rows += [row(m, s, index=1, track="inherit", top1_test=70.0, top1_val=70.0)
             for m in ("B", "C") for s in range(4)]  # fmt: skip
    lb = build_leaderboard(frame_of(*rows))
    write_leaderboard(lb, tmp_path)
    long = pd.read_csv(tmp_path / "leaderboard_long.csv", keep_default_na=False)
    # one code version: said once in the JSON, not a column repeated on every row
    assert list(long.columns) == [
        "table", "space", "dataset", "preset", "constraint", "track", "method", "metric",
        "value", "text",
    ]  # fmt: skip
    assert {"best", "results", "ranks", "hypervolume"} <= set(long["table"])
    key = ["table", "space", "dataset", "preset", "constraint", "track", "method", "metric"]
    assert not long.duplicated(key).any()

    def pick(table: str, method: str, metric: str, track: str = "retrain") -> pd.Series:
        hit = long[(long["table"] == table) & (long["method"] == method)
                   & (long["metric"] == metric) & (long["track"] == track)]  # fmt: skip
        assert len(hit) == 1, hit
        return hit.iloc[0]

    assert pick("best", "C", "verdict")["text"] == "worse"
    assert float(pick("results", "A", "top1_test_mean")["value"]) == pytest.approx(92.125)
    assert float(pick("ranks", "C", "average_rank", "inherit")["value"]) == 1.5  # tied at 70
    assert pick("ranks", "A", "average_rank")["space"] == ""  # ranks are per track only
    document = json.loads((tmp_path / "leaderboard.json").read_text())
    assert list(document["code_versions"].values()) == [len(lb.frame)]
    assert len(document["rows"]) == len(long)
    assert {"table", "metric"} <= set(document["rows"][0])


# -------------------------------------------------------------------- hostile records
def test_one_bad_record_costs_its_rows_not_the_board(tmp_path, capsys) -> None:
    """A run whose file holds impossible values (a seed of inf, an accuracy of 1e308) loses
    those rows with one warning; the other runs' board is written, figures included."""
    from benchmark.cli import main

    good = frame_of(*task_rows())
    (tmp_path / "good").mkdir()
    good.to_csv(tmp_path / "good" / "records.csv", index=False)
    bad = frame_of(*[r for r in task_rows() if r.method in ("A", "B")]).assign(run_id="bad")
    bad = bad.astype({"seed": "float64"})  # as a hand-edited CSV reads back
    bad.loc[0, "seed"] = float("inf")
    bad.loc[1, "top1_test"] = 1e308
    (tmp_path / "bad").mkdir()
    bad.to_csv(tmp_path / "bad" / "records.csv", index=False)
    out = tmp_path / "lb"
    argv = ["leaderboard", str(tmp_path / "good"), str(tmp_path / "bad"), "--out", str(out)]
    assert main(argv) == 0
    said = capsys.readouterr().err
    assert "2 row(s) with impossible values dropped" in said and "seed inf" in said
    assert (out / "leaderboard.md").exists() and list(out.glob("*.png"))
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["method"]) >= {"A", "B", "C"}


def test_text_a_spreadsheet_would_run_is_written_as_text(tmp_path) -> None:
    from benchmark.report.render import write_leaderboard

    rows = [row("=HYPERLINK(1)", s, top1_test=90.0 + s, top1_val=90.0) for s in range(2)]
    rows += [row("@cmd", s, top1_test=80.0, top1_val=80.0) for s in range(2)]
    write_leaderboard(build_leaderboard(frame_of(*rows)), tmp_path)
    for name in ("leaderboard.csv", "leaderboard_long.csv"):
        text = (tmp_path / name).read_text()
        assert "'=HYPERLINK(1)" in text and "'@cmd" in text, name
        assert ",=HYPERLINK" not in text and ",@cmd" not in text and "\\n=" not in text
    long = pd.read_csv(tmp_path / "leaderboard_long.csv")
    assert (long.loc[long["metric"] == "vs_best_diff", "value"].dropna() < 0).any()  # numbers


# ------------------------------------------------------------- critical-difference diagram
def test_nemenyi_critical_difference_matches_demsars_table() -> None:
    from benchmark.report.plot_cd import critical_difference

    # q_0.05 from Demšar (2006), Table 5: k = 2, 3, 5, 10 → 1.960, 2.343, 2.728, 3.164
    for k, q in ((2, 1.960), (3, 2.343), (5, 2.728), (10, 3.164)):
        assert critical_difference(k, 6) == pytest.approx(q * math.sqrt(k * (k + 1) / 36), 1e-3)
    assert math.isnan(critical_difference(1, 5)) and math.isnan(critical_difference(3, 0))


def test_the_diagram_ranks_complete_tasks_and_joins_the_indistinguishable(tmp_path) -> None:
    from benchmark.report.plot_cd import plot_critical_difference, task_ranks

    rows = []
    for t in range(10):  # ten tasks: A always first, B second, C third (C far behind)
        constraint = f"bitops<=0.{t + 1:02d}"
        for m, v in (("A", 92.0), ("B", 91.0), ("C", 80.0)):
            rows += [row(m, s, top1_test=v + 0.1 * s, top1_val=v, constraint=constraint)
                     for s in range(2)]  # fmt: skip
    rows.append(row("D", 0, top1_test=99.0, top1_val=99.0, constraint="bitops<=0.01"))
    lb = build_leaderboard(frame_of(*rows))
    ranks = task_ranks(lb.aggregate)
    assert list(ranks.columns) == ["A", "B", "C", "D"] and len(ranks) == 1  # D ran one task
    lb = build_leaderboard(frame_of(*[r for r in rows if r.method != "D"]))
    ranks = task_ranks(lb.aggregate)
    assert len(ranks) == 10 and ranks.mean().to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
    (path,) = plot_critical_difference(lb.aggregate, tmp_path)
    assert path.name == "critical_difference_retrain.png" and path.stat().st_size > 1000


# --------------------------------------------------------------------------- method cards
def test_a_method_card_shows_its_bits_costs_failures_and_options(tmp_path) -> None:
    import json

    from benchmark.report.cards import bit_table, plot_method_cards
    from benchmark.report.selection import assign_tracks, prepared, select_per_seed

    def policy(w: int, a: int) -> str:
        return json.dumps({"conv1": {"w_bits": 8, "a_bits": 8}, "l1": {"w_bits": w, "a_bits": a}})

    rows = [
        row("A", 0, top1_val=90.0, policy=policy(2, 4), method_options='{"x": 1}',
            search_device_hours=0.5, finetune_device_hours=0.5, eval_seconds=10.0),
        row("A", 1, top1_val=90.0, policy=policy(4, 4), method_options='{"x": 1}',
            search_device_hours=1.5, finetune_device_hours=0.25, eval_seconds=20.0),
        row("A", 1, 1, top1_val=10.0, policy=policy(8, 8), search_device_hours=1.5,
            finetune_device_hours=0.25, eval_seconds=30.0),  # not selected: lower val
        failed("A", 2, status="timeout", error="the trial ran 3600 s\nmore"),
    ]  # fmt: skip
    frame = frame_of(*rows)
    selected = select_per_seed(assign_tracks(prepared(frame)))
    table = bit_table(selected[selected["track"] == "retrain"])
    assert table.loc["l1"].to_dict() == {("bitops<=0.5", "W"): 3.0, ("bitops<=0.5", "A"): 4.0}
    assert list(table.index) == ["conv1", "l1"]
    (path,) = plot_method_cards(frame, tmp_path)
    assert path.name == "card_bits_A_resnet20_digits_smoke.png"
    md = render_markdown(build_leaderboard(frame))
    card = md[md.index("### A", md.index("## Method cards")) :]
    # search: mean of 0.5 and 1.5 h; finetune: a trial's candidates summed (0.5, 0.25 +
    # 0.25), then the mean; evaluation: 10 and 20 + 30 s, mean 30 s
    assert "| resnet20 · digits · smoke · bitops<=0.5 | 3 | 1 | 0.5 | 30 |" in card, card
    assert "seed 2: `timeout` the trial ran 3600 s" in card and 'Options: `{"x": 1}`' in card
