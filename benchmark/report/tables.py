"""The leaderboard's tables and header lines as text cells (what render writes as markdown
and HTML)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.report.best import VERDICTS
from benchmark.report.cells import (
    FILTER_KEYS,
    GROUPS,
    Cell,
    Table,
    key_title,
    mixed_versions,
    num_cell,
    text_cell,
)
from benchmark.report.leaderboard import Leaderboard
from benchmark.report.paired import REFERENCE_METHOD
from benchmark.report.pareto import DEFAULT_REF, FRONT_KEYS
from benchmark.report.selection import TASK_KEYS
from benchmark.report.track_tables import agreement_table, side_by_side_table
from benchmark.report.versions import CODE_VERSION

MDD_NOTE = (
    "Min. detectable Δ: the smallest true difference to `random` that the paired t-test "
    "(α 0.05, two-sided) finds with probability 0.8 at this task's number of seeds, from the "
    "spread of its paired differences pooled over the methods (the same for every row of a "
    "task); a smaller Δ is not one the run can tell from noise."
)


def _accuracy_cell(row: pd.Series) -> Cell:
    """``mean ± half-width of the 95% t-interval (n=k/s)``: k seeds with a result of s
    seeds run; missing test scores are said so."""
    n, seeds, missing = int(row["n"]), int(row["n_seeds"]), int(row["n_missing_test"])
    count = f"n={n}/{seeds}" if seeds != n else f"n={n}"
    if missing:
        count += f", {missing} missing test"
    mean, half = row["top1_test_mean"], row["top1_test_ci95"]
    if n == 0 or not np.isfinite(mean):
        return f"— ({count})", None
    spread = f" ± {half:.2f}" if np.isfinite(half) else ""
    return f"{mean:.2f}{spread} ({count})", float(mean)


def _vs_random_cell(row: pd.Series) -> Cell:
    """``+d ± h (n=k)``: mean difference to random over k paired seeds (percentage points)
    and the half-width of its 95% t-interval; "reference" for random itself."""
    if row["method"] == REFERENCE_METHOD:
        return "reference", None
    n, diff, half = int(row["vs_random_n"]), row["vs_random_diff"], row["vs_random_ci95"]
    if n == 0 or not np.isfinite(diff):
        return "—", None
    spread = f" ± {half:.2f}" if np.isfinite(half) else ""
    return f"{diff:+.2f}{spread} (n={n})", float(diff)


def _failure_cell(row: pd.Series) -> Cell:
    n = int(row["n_failures"])
    text = f"{n} ({row['failure_statuses']})" if n else "0"
    return text, float(n)


ENTRY_HEADERS: tuple[str, ...] = (
    "rank", "method", "top-1 test % (mean ± 95% CI, n)", "std", "Δ vs random, pp (± 95% CI)",
    "p vs random", "min. detectable Δ, pp", "best test %", "val %", "BitOPs / W8A8", "GBitOPs",
    "size KiB",
    "search device-h / trial", "search wall h", "search CPU s", "search samples / trial",
    "finetune device-h / trial", "device share", "feasible", "infeasible", "failures",
)  # fmt: skip


def _entry_cells(row: pd.Series) -> list[Cell]:
    """The cells of :data:`ENTRY_HEADERS` for one (task group, method) of the aggregate."""
    return [
        num_cell(row["rank"], ".3g"),
        text_cell(row["method"]),
        _accuracy_cell(row),
        num_cell(row["top1_test_std"], ".2f"),
        _vs_random_cell(row),
        num_cell(row["vs_random_p"], ".2g"),
        num_cell(row["vs_random_mdd"], ".2f"),
        num_cell(row["top1_test_best"], ".2f"),
        num_cell(row["top1_val_mean"], ".2f"),
        num_cell(row["bitops_ratio_w8a8_mean"], ".3f"),
        num_cell(row["bitops_mean"] / 1e9, ".4g"),
        num_cell(row["size_bits_mean"] / 8 / 1024, ".1f"),
        num_cell(row["search_device_hours_mean"], ".3g"),
        num_cell(row["search_wall_hours_mean"], ".3g"),
        num_cell(row["search_cpu_seconds_mean"], ".3g"),
        num_cell(row["search_samples_mean"], ".3g"),
        num_cell(row["finetune_device_hours_mean"], ".3g"),
        text_cell(row["device_shares"]),
        (str(int(row["n_feasible"])), float(row["n_feasible"])),
        (str(int(row["n_infeasible"])), float(row["n_infeasible"])),
        _failure_cell(row),
    ]


WALL_HEADER = "search wall h"
WALL_SAME_NOTE = (
    "Search wall hours equal the device-hours here (every trial had a device share of 1), "
    "so they are not shown twice."
)


def wall_equals_device(frame: pd.DataFrame) -> bool:
    """Whether every row's mean search wall hours equal its device-hours (a device share
    of 1 everywhere): the two columns would repeat each other."""
    if not len(frame):
        return False
    device = frame["search_device_hours_mean"].to_numpy(dtype=float)
    wall = frame["search_wall_hours_mean"].to_numpy(dtype=float)
    same = np.isclose(device, wall, rtol=1e-9, atol=0.0) | (np.isnan(device) & np.isnan(wall))
    return bool(same.all())


def without_column(
    headers: list[str], rows: list[list[Cell]], header: str
) -> tuple[list[str], list[list[Cell]]]:
    """``headers`` and ``rows`` less the column named ``header``."""
    i = headers.index(header)
    return headers[:i] + headers[i + 1 :], [row[:i] + row[i + 1 :] for row in rows]


def _group_table(key: tuple, group: pd.DataFrame, lb: Leaderboard) -> Table:
    """One task group (code version, space, dataset, preset, constraint, track)."""
    headers, rows = list(ENTRY_HEADERS), [_entry_cells(row) for _, row in group.iterrows()]
    notes = ["A lone method in its group is not ranked."] if group["method"].nunique() < 2 else []
    if wall_equals_device(group):
        headers, rows = without_column(headers, rows, WALL_HEADER)
        notes.append(WALL_SAME_NOTE)
    return Table(key_title(TASK_KEYS, key, lb, " · "), headers, rows, " ".join(notes), GROUPS)


def results_table(lb: Leaderboard) -> Table:
    """Every (task group, method) in one table (the HTML page's main table: sorted and
    filtered there): the method, the task keys that vary, then :data:`ENTRY_HEADERS`.

    A task key with one value in every row is said in the note instead of a column.
    """
    agg = lb.aggregate
    shown = [k for k in TASK_KEYS if k != CODE_VERSION or mixed_versions(lb)]
    keys = [k for k in shown if len(agg) and agg[k].nunique() > 1]
    same = [
        f"{k.replace('_', ' ')} `{agg[k].iloc[0]}`" for k in shown if len(agg) and k not in keys
    ]
    rows, row_keys = [], []
    for _, row in agg.iterrows():
        rank, method, *rest = _entry_cells(row)
        rows.append([method, *(text_cell(row[k]) for k in keys), rank, *rest])
        row_keys.append({k: str(row[k]) for k in FILTER_KEYS})
    rank_header, method_header, *rest_headers = ENTRY_HEADERS
    headers = [method_header, *(k.replace("_", " ") for k in keys), rank_header, *rest_headers]
    note = (
        "One row per task group (space, dataset, preset, constraint, track) and method; the "
        "rank is within its task group. Top-1: mean over seeds ± half-width of the 95% "
        "t-interval (n = seeds with a result / seeds run). Δ vs random: this method − "
        "`random` at the same task, paired by seed (percentage points ± 95% interval; p: "
        "paired t-test); — where `random` has no result there (e.g. on the `inherit` track), "
        "and p — for fewer than two pairs or differences without spread. " + MDD_NOTE
    )
    if same:
        note += " Every row: " + ", ".join(same) + "."
    if wall_equals_device(agg):
        headers, rows = without_column(headers, rows, WALL_HEADER)
        note += " " + WALL_SAME_NOTE
    return Table("Results", headers, rows, note, row_keys=row_keys, name="results")


def _rank_overview(lb: Leaderboard) -> Table:
    """Average rank per method and track, the ``retrain`` track first (rows in its order)."""
    ranks = lb.ranks
    tracks = list(dict.fromkeys(ranks["track"])) if len(ranks) else []
    headers = ["method"]
    for track in tracks:
        headers += [f"avg rank {track}", f"{track} ± 95% CI", f"{track} groups"]
    headers += ["seeds with result / run", "failures"]
    methods = list(dict.fromkeys(ranks["method"])) if len(ranks) else []
    rows = []
    for method in methods:
        mine = lb.aggregate[lb.aggregate["method"] == method]
        cells = [text_cell(method)]
        for track in tracks:
            hit = ranks[(ranks["track"] == track) & (ranks["method"] == method)]
            if hit.empty:
                cells += [("— (not on this track)", None), ("—", None), ("0", 0.0)]
                continue
            found = hit.iloc[0]
            cells += [num_cell(found["average_rank"], ".2f"), num_cell(found["rank_ci95"], ".2f")]
            cells.append((str(int(found["n_groups"])), float(found["n_groups"])))
        n_ok, n_all = int(mine["n"].sum()), int(mine["n_seeds"].sum())
        cells += [
            (f"{n_ok} / {n_all}", float(n_ok)),
            (str(int(mine["n_failures"].sum())), float(mine["n_failures"].sum())),
        ]
        rows.append(cells)
    note = (
        "Ranked per task group (space, dataset, preset, constraint, track) and seed by the "
        "test top-1 of the validation-selected candidate: 1 = best, ties averaged, a seed "
        "without a result (failed, over budget, no feasible candidate, no test score) shares "
        "the last places; a (group, seed) with a single method ranks nobody. A method's "
        "group rank is the mean over its seeds; its average rank on a track is the mean over "
        "that track's groups, with the half-width of its 95% t-interval (— for one group). "
        "Tracks are never pooled: on `retrain` every method competes (rows in its order); "
        "`inherit` ranks only the methods whose candidates carry their own weights (scored "
        "with those weights after BN recalibration), so its ranks are out of fewer methods. "
        "Seeds and failures are summed over task groups (a failed trial counts once per track)."
    )
    return Table("Average rank per track", headers, rows, note, name="ranks")


VERDICT_TEXT = {
    "best": "**best**",
    "tied": "≈ best (not significantly worse)",
    "worse": "worse",
    "untested": "untested (< 2 paired seeds)",
    "no result": "no result",
}


def best_table(lb: Leaderboard) -> Table:
    """Who wins at each budget: per task on the ``retrain`` track, each method against the
    task's best (:mod:`benchmark.report.best`)."""
    best = lb.best
    headers = [
        "task", "method", "top-1 test % (mean ± 95% CI, n)", "vs best, pp (± 95% CI)",
        "Holm p", "verdict", "task min. detectable Δ, pp", "search device-h / trial",
    ]  # fmt: skip
    rows, row_keys = [], []
    for _, row in best.iterrows():
        task = key_title(TASK_KEYS[:-1], [row[k] for k in TASK_KEYS[:-1]], lb, " · ")
        verdict = str(row["verdict"])
        accuracy = _accuracy_cell(row)
        if verdict == "best":
            accuracy = (f"**{accuracy[0]}**", accuracy[1])
        rows.append(
            [
                text_cell(task),
                text_cell(row["method"]),
                accuracy,
                _vs_best_cell(row),
                num_cell(row["vs_best_p_holm"], ".2g"),
                (VERDICT_TEXT.get(verdict, verdict), str(VERDICTS.index(verdict))),
                num_cell(row["task_mdd"], ".2f"),
                num_cell(row["search_device_hours_mean"], ".3g"),
            ]
        )
        row_keys.append({k: str(row[k]) for k in FILTER_KEYS})
    note = (
        "Per task (space · dataset · preset · constraint) on the `retrain` track, where every "
        "method's candidates get the same finetune: each method's test top-1 of its "
        "validation-selected candidate (mean ± 95% t-interval over seeds). The best mean is "
        "in bold. Every other method is compared with it paired over the seeds both have a "
        "result for (method − best, percentage points ± 95% interval; paired t-test, "
        "Holm-corrected over the task's methods): **≈ best** where it is not significantly "
        "worse (Holm p ≥ 0.05, or the same score on every paired seed), `worse` where it is. "
        "A difference smaller than the task's minimum detectable Δ (α 0.05, power 0.8, from "
        "the spread of its paired differences to `random`) is not one these seeds can show. "
        "Search device-hours: per trial, wall hours × the trial's device share."
    )
    return Table(
        "Best at each budget", headers, rows, note, row_keys=row_keys, name="best", rich=True
    )


def _vs_best_cell(row: pd.Series) -> Cell:
    if row["verdict"] == "best":
        return "—", None
    n, diff, half = int(row["vs_best_n"]), row["vs_best_diff"], row["vs_best_ci95"]
    if n == 0 or not np.isfinite(diff):
        return "—", None
    spread = f" ± {half:.2f}" if np.isfinite(half) else ""
    return f"{diff:+.2f}{spread} (n={n})", float(diff)


def _hypervolume_overview(lb: Leaderboard) -> Table:
    """Hypervolume per method (rows) and (space, dataset, preset, track) (columns)."""
    hv = lb.hypervolume
    title = "Hypervolume (accuracy vs BitOPs), per seed"
    if hv.empty:
        return Table(title, ["method"], [], "No feasible candidates.", name="hypervolume")
    keys = list(FRONT_KEYS[:-1])
    hv = hv.assign(
        column=[key_title(keys, values, lb, "/") for values in hv[keys].itertuples(False)]
    )
    columns = sorted(hv["column"].unique())
    rows = []
    for method in dict.fromkeys(lb.ranks["method"]):  # the retrain track's order first
        cells: list[Cell] = [text_cell(method)]
        for column in columns:
            hit = hv[(hv["method"] == method) & (hv["column"] == column)]
            cells.append(_hypervolume_cell(hit.iloc[0]) if len(hit) else ("—", None))
        rows.append(cells)
    note = (
        "Per seed and constraint, the front of the method's final candidates at that limit "
        "(never pooled over limits, so a method that returns one candidate per limit is "
        "compared at each limit; its hypervolume is that one point's area) is "
        "chosen on validation top-1 vs BitOPs / W8A8 BitOPs and measured with their test "
        "top-1 (%) (pymoo's HV, reference point: cost "
        f"{DEFAULT_REF[0]:g}, top-1 {DEFAULT_REF[1]:g} %; unit ratio × %, 100 is the "
        "unreachable maximum); a seed without a feasible candidate counts 0. Cells: mean over "
        "seeds ± half-width of its 95% t-interval (n = seeds with a value / seeds run). "
        "Columns: space/dataset/preset/constraint/track."
    )
    return Table(title, ["method", *columns], rows, note, name="hypervolume")


def _hypervolume_cell(row: pd.Series) -> Cell:
    n, seeds, missing = int(row["n"]), int(row["n_seeds"]), int(row["n_missing_test"])
    count = f"n={n}/{seeds}" if seeds != n else f"n={n}"
    if missing:
        count += f", {missing} missing test"
    mean, half = row["hypervolume_mean"], row["hypervolume_ci95"]
    if not np.isfinite(mean):
        return f"— ({count})", None
    spread = f" ± {half:.2f}" if np.isfinite(half) else ""
    return f"{mean:.2f}{spread} ({count})", float(mean)


def _fp_table(lb: Leaderboard) -> Table:
    """The shared FP starts, once each: their cost is shown here, never charged to methods."""
    headers = [
        "space", "dataset", "preset", "seed", "samples", "device-h", "device", "built at",
        "source", "trials using it",
    ]  # fmt: skip
    rows = []
    for _, start in lb.fp_starts.iterrows():
        runs = ", ".join(start["built_in_runs"])
        source = "from the cache (built before these runs)" if start["from_cache"] else runs
        rows.append(
            [
                text_cell(start["space"]),
                text_cell(start["dataset"]),
                text_cell(start["preset"]),
                (str(start["seed"]), float(start["seed"])),
                num_cell(float(start["samples"]), ".0f"),
                num_cell(start["device_hours"], ".3g"),
                text_cell(start["device"]),
                text_cell(start["built_at"] or "—"),
                (source if start["from_cache"] else f"built in run {source}", source),
                (str(start["n_trials"]), float(start["n_trials"])),
            ]
        )
    note = (
        "The FP checkpoint (or FP supernet) each (space, dataset, preset, seed) starts from is "
        "trained once, cached and shared by every method; its cost is shown here once and is "
        "not in any method's search or finetune hours. Device-hours: its build's wall hours × "
        "the device share of the trial that built it."
    )
    title = "Shared FP starting points (not charged to methods)"
    return Table(title, headers, rows, note, name="fp")


def overall_tables(lb: Leaderboard) -> list[Table]:
    """The tables over every task: the best at each budget, average rank per track, the
    tracks side by side and their rank agreement, hypervolume, the shared FP starts."""
    return [
        best_table(lb),
        _rank_overview(lb),
        side_by_side_table(lb),
        agreement_table(lb),
        _hypervolume_overview(lb),
        _fp_table(lb),
    ]


def group_tables(lb: Leaderboard) -> list[Table]:
    """One table per task group (code version, space, dataset, preset, constraint, track)."""
    if lb.aggregate.empty:
        return []
    return [
        _group_table(key, _by_accuracy(group), lb)
        for key, group in lb.aggregate.groupby(list(TASK_KEYS), sort=True)
    ]


def _by_accuracy(group: pd.DataFrame) -> pd.DataFrame:
    """A task group's rows by mean test top-1 (best first; no result last), then rank."""
    return group.sort_values(
        ["top1_test_mean", "rank", "method"],
        ascending=[False, True, True],
        na_position="last",
        kind="mergesort",
    )


def leaderboard_tables(lb: Leaderboard) -> list[Table]:
    """The overall tables, then one table per task group (the markdown document)."""
    return [*overall_tables(lb), *group_tables(lb)]


def provenance(lb: Leaderboard) -> list[str]:
    """The header lines: where the numbers come from and the rules behind them."""
    runs = ", ".join(f"`{r}`" for r in lb.run_ids) or "(none)"
    devices = ", ".join(f"`{d}`" for d in lb.devices) or "(not recorded)"
    versions = ", ".join(f"`{v}` ({n} rows)" for v, n in lb.code_versions.items()) or "(none)"
    if lb.all_repeats:
        repeats = (
            f"Repeats: every repeat of a (method, task, seed) is shown; {lb.n_repeats_left_out} "
            "older repeat(s) are entries of their own, named `method (run <run id>)`."
        )
    else:
        repeats = (
            "Repeats: a (method variant, task, seed) counts once, its most recent finished "
            f"trial; {lb.n_repeats_left_out} older repeat(s) left out (`--all-repeats` shows "
            "them as entries of their own)."
        )
    lines = [
        f"Numbers from {lb.n_rows} result rows of {len(lb.run_ids)} run(s): {runs}.",
        f"Code versions read (mpqbench version @ git sha): {versions}.",
        f"Devices seen (`device` column): {devices}.",
        repeats,
        "Per method, task and seed the feasible `ok` candidate with the best **validation** "
        "top-1 is selected; its **test** top-1 (%) is reported as mean over seeds ± the "
        "half-width of its 95% Student-t interval (none for one seed; n = seeds with a "
        "result, /s = seeds run; std with ddof=1 beside it). A selected candidate without a "
        "test score is missing, never replaced by the next one. **Δ vs random**: the method "
        "− `random` at the same task, paired by seed over the seeds both have a result for "
        "(percentage points, mean ± 95% t-interval half-width), and the paired t-test's "
        "two-sided p-value (— for fewer than two pairs or differences without spread). With "
        "few seeds, a difference whose interval contains 0 is no difference. "
        "**Min. detectable Δ** (per task): the smallest true difference to `random` the "
        "paired t-test (α 0.05) finds with probability 0.8 at the task's seeds, from the "
        "pooled spread of its paired differences; a difference below it is not a difference. "
        "Costs are per trial; device-hours are wall hours × "
        "the trial's device share (GPU fraction on a GPU: GPU-hours; CPUs on a CPU: "
        "CPU-core-hours), with wall hours and process CPU seconds beside them.",
    ]
    notes = [note.removeprefix("leaderboard: ") for note in lb.notes]
    return [*lines, *(f"**Warning:** {note}" for note in notes)]
