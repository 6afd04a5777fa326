"""The leaderboard's tables and header lines as text cells (what render writes as markdown
and HTML)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.report.leaderboard import Leaderboard
from benchmark.report.pareto import DEFAULT_REF, FRONT_KEYS
from benchmark.report.selection import TASK_KEYS
from benchmark.report.versions import CODE_VERSION

OVERALL = "Overall"
GROUPS = "Task groups (space · dataset · preset · constraint · track)"

Cell = tuple[str, float | str | None]


@dataclass
class Table:
    """A rendered table: headers and rows of (text, sort key) cells; ``None`` sorts last."""

    title: str
    headers: list[str]
    rows: list[list[Cell]]
    note: str = ""
    section: str = OVERALL


def _num(value: float, fmt: str) -> Cell:
    """``value`` formatted, with its numeric sort key; NaN shows as an em dash."""
    if value is None or not np.isfinite(value):
        return "—", None
    return format(value, fmt), float(value)


def _text(value: object) -> Cell:
    return str(value), str(value)


def _mixed_versions(lb: Leaderboard) -> bool:
    return len(lb.aggregate) > 0 and lb.aggregate[CODE_VERSION].nunique() > 1


def _key_title(keys: Sequence[str], values: Sequence[object], lb: Leaderboard, sep: str) -> str:
    """The values of a task key joined by ``sep``; the code version only when the
    leaderboard keeps several apart."""
    shown = [
        str(v)
        for k, v in zip(keys, values, strict=True)
        if k != CODE_VERSION or _mixed_versions(lb)
    ]
    return sep.join(shown)


def _accuracy_cell(row: pd.Series) -> Cell:
    """``mean ± std (n=k/s)``: k seeds with a result of s seeds run; missing test scores
    are said so."""
    n, seeds, missing = int(row["n"]), int(row["n_seeds"]), int(row["n_missing_test"])
    count = f"n={n}/{seeds}" if seeds != n else f"n={n}"
    if missing:
        count += f", {missing} missing test"
    mean, std = row["top1_test_mean"], row["top1_test_std"]
    if n == 0 or not np.isfinite(mean):
        return f"— ({count})", None
    spread = f" ± {std:.2f}" if np.isfinite(std) else ""
    return f"{mean:.2f}{spread} ({count})", float(mean)


def _failure_cell(row: pd.Series) -> Cell:
    n = int(row["n_failures"])
    text = f"{n} ({row['failure_statuses']})" if n else "0"
    return text, float(n)


def _group_table(key: tuple, group: pd.DataFrame, lb: Leaderboard) -> Table:
    """One task group (code version, space, dataset, preset, constraint, track)."""
    headers = [
        "rank", "method", "top-1 test % (mean ± std)", "95% CI ±", "best test %", "val %",
        "BitOPs / W8A8", "GBitOPs", "size KiB", "search device-h / trial", "search wall h",
        "search CPU s", "search samples / trial", "finetune device-h / trial",
        "device share", "feasible", "infeasible", "failures",
    ]  # fmt: skip
    rows = []
    for _, row in group.iterrows():
        rows.append(
            [
                _num(row["rank"], ".3g"),
                _text(row["method"]),
                _accuracy_cell(row),
                _num(row["top1_test_ci95"], ".2f"),
                _num(row["top1_test_best"], ".2f"),
                _num(row["top1_val_mean"], ".2f"),
                _num(row["bitops_ratio_w8a8_mean"], ".3f"),
                _num(row["bitops_mean"] / 1e9, ".4g"),
                _num(row["size_bits_mean"] / 8 / 1024, ".1f"),
                _num(row["search_device_hours_mean"], ".3g"),
                _num(row["search_wall_hours_mean"], ".3g"),
                _num(row["search_cpu_seconds_mean"], ".3g"),
                _num(row["search_samples_mean"], ".3g"),
                _num(row["finetune_device_hours_mean"], ".3g"),
                _text(row["device_shares"]),
                (str(int(row["n_feasible"])), float(row["n_feasible"])),
                (str(int(row["n_infeasible"])), float(row["n_infeasible"])),
                _failure_cell(row),
            ]
        )
    alone = group["method"].nunique() < 2
    note = "A lone method in its group is not ranked." if alone else ""
    return Table(_key_title(TASK_KEYS, key, lb, " · "), headers, rows, note, GROUPS)


def _rank_overview(lb: Leaderboard) -> Table:
    """Average rank per method: over every group, then per track."""
    ranks = lb.ranks
    tracks = [t for t in sorted(ranks["track"].unique()) if t != "all"] if len(ranks) else []
    headers = ["method", "average rank (all groups)", *[f"avg rank {t}" for t in tracks]]
    headers += ["groups ranked", "seeds with result / run", "failures"]
    overall = ranks[ranks["track"] == "all"] if len(ranks) else ranks
    rows = []
    for _, row in overall.iterrows():
        method = row["method"]
        mine = lb.aggregate[lb.aggregate["method"] == method]
        cells = [_text(method), _num(row["average_rank"], ".2f")]
        for track in tracks:
            hit = ranks[(ranks["track"] == track) & (ranks["method"] == method)]
            cells.append(_num(hit["average_rank"].iloc[0], ".2f") if len(hit) else ("—", None))
        n_ok, n_all = int(mine["n"].sum()), int(mine["n_seeds"].sum())
        cells += [
            (str(int(row["n_groups"])), float(row["n_groups"])),
            (f"{n_ok} / {n_all}", float(n_ok)),
            (str(int(mine["n_failures"].sum())), float(mine["n_failures"].sum())),
        ]
        rows.append(cells)
    note = (
        "Ranked per task group (space, dataset, preset, constraint, track) and seed by the "
        "test top-1 of the validation-selected candidate: 1 = best, ties averaged, a seed "
        "without a result (failed, over budget, no feasible candidate, no test score) shares "
        "the last places; a (group, seed) with a single method ranks nobody. A method's "
        "group rank is the mean over its seeds; the average rank is the mean over groups. "
        "Seeds and failures are summed over task groups (a failed trial counts once per track)."
    )
    return Table("Average rank", headers, rows, note)


def _hypervolume_overview(lb: Leaderboard) -> Table:
    """Hypervolume per method (rows) and (space, dataset, preset, track) (columns)."""
    hv = lb.hypervolume
    title = "Hypervolume (accuracy vs BitOPs), per seed"
    if hv.empty:
        return Table(title, ["method"], [], "No feasible candidates.")
    keys = list(FRONT_KEYS[:-1])
    hv = hv.assign(
        column=[_key_title(keys, values, lb, "/") for values in hv[keys].itertuples(False)]
    )
    columns = sorted(hv["column"].unique())
    rows = []
    for method in lb.ranks.loc[lb.ranks["track"] == "all", "method"]:
        cells: list[Cell] = [_text(method)]
        for column in columns:
            hit = hv[(hv["method"] == method) & (hv["column"] == column)]
            cells.append(_hypervolume_cell(hit.iloc[0]) if len(hit) else ("—", None))
        rows.append(cells)
    note = (
        "Per seed, the front of the method's final candidates (pooled over constraints) is "
        "chosen on validation top-1 vs BitOPs / W8A8 BitOPs and measured with their test "
        "top-1 (%) (pymoo's HV, reference point: cost "
        f"{DEFAULT_REF[0]:g}, top-1 {DEFAULT_REF[1]:g} %; unit ratio × %, 100 is the "
        "unreachable maximum); a seed without a feasible candidate counts 0. Cells: mean over "
        "seeds ± half-width of its 95% t-interval (n = seeds with a value / seeds run). "
        "Columns: space/dataset/preset/track."
    )
    return Table(title, ["method", *columns], rows, note)


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
                _text(start["space"]),
                _text(start["dataset"]),
                _text(start["preset"]),
                (str(start["seed"]), float(start["seed"])),
                _num(float(start["samples"]), ".0f"),
                _num(start["device_hours"], ".3g"),
                _text(start["device"]),
                _text(start["built_at"] or "—"),
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
    return Table("Shared FP starting points (not charged to methods)", headers, rows, note)


def leaderboard_tables(lb: Leaderboard) -> list[Table]:
    """The overall tables, then one table per task group."""
    tables = [_rank_overview(lb), _hypervolume_overview(lb), _fp_table(lb)]
    if lb.aggregate.empty:
        return tables
    for key, group in lb.aggregate.groupby(list(TASK_KEYS), sort=True):
        tables.append(_group_table(key, group.sort_values("rank", kind="mergesort"), lb))
    return tables


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
        "top-1 is selected; its **test** top-1 (%) is reported as mean ± std over seeds "
        "(std with ddof=1, none for one seed; 95% CI: t-interval half-width; n = seeds with a "
        "result, /s = seeds run). A selected candidate without a test score is missing, "
        "never replaced by the next one. Costs are per trial; device-hours are wall hours × "
        "the trial's device share (GPU fraction on a GPU: GPU-hours; CPUs on a CPU: "
        "CPU-core-hours), with wall hours and process CPU seconds beside them.",
    ]
    notes = [note.removeprefix("leaderboard: ") for note in lb.notes]
    return [*lines, *(f"**Warning:** {note}" for note in notes)]
