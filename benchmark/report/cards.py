"""A card per method: what it chose (its per-layer bits as a heatmap over seeds), what its
search cost, how it failed, and the options it ran with.

Per (code version, space, dataset, preset) and method one heatmap: the layers (rows, in
the order the policies list them) × for each constraint the mean over seeds of the
weight and the activation bits (two columns) of the candidate selected on validation on
the ``retrain`` track; a layer a seed's architecture does not have is left blank. The
card's text (markdown, in the board after the task tables) gives per constraint what a
trial's phases cost on average (search device-hours and CPU seconds, the finetunes'
device-hours summed over its candidates, the evaluations' seconds), every failure with its
status and first error line, and the method's recorded options (``method_options``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmark.report.figures import safe_name, save_all
from benchmark.report.selection import (
    CANDIDATE_KEYS,
    TRIAL_KEYS,
    assign_tracks,
    prepared,
    select_per_seed,
)

CARD_KEYS: tuple[str, ...] = ("space", "dataset", "preset")


def bit_table(selected: pd.DataFrame) -> pd.DataFrame:
    """Layers (rows) × (constraint, ``W`` / ``A``) columns: mean bits over the seeds'
    selected policies (NaN where no seed's architecture has the layer)."""
    records = []
    for _, pick in selected.iterrows():
        try:
            policy = json.loads(pick["policy"] or "{}")
        except ValueError:
            continue
        for layer, bits in policy.items():
            if isinstance(bits, dict):
                records.append((layer, pick["constraint"], "W", bits.get("w_bits")))
                records.append((layer, pick["constraint"], "A", bits.get("a_bits")))
    if not records:
        return pd.DataFrame()
    long = pd.DataFrame.from_records(records, columns=["layer", "constraint", "kind", "bits"])
    long["bits"] = pd.to_numeric(long["bits"], errors="coerce")
    order = list(dict.fromkeys(long["layer"]))
    table = long.pivot_table(
        index="layer", columns=["constraint", "kind"], values="bits", aggfunc="mean"
    )
    columns = [(c, k) for c in sorted(long["constraint"].unique()) for k in ("W", "A")]
    return table.reindex(index=order, columns=[c for c in columns if c in table.columns])


def figures_bit_heatmaps(frame: pd.DataFrame) -> dict[str, Figure]:
    """``{file name: figure}``: one heatmap per (space, dataset, preset, method) with a
    selected retrain candidate."""
    rows = assign_tracks(prepared(frame))
    selected = select_per_seed(rows)
    selected = selected[selected["track"] == "retrain"]
    figures = {}
    for key, group in selected.groupby([*CARD_KEYS, "method"], sort=True):
        table = bit_table(group)
        if table.empty:
            continue
        fig = Figure(figsize=(1.4 + 0.55 * table.shape[1], 1.2 + 0.16 * len(table)))
        ax = fig.subplots()
        image = ax.imshow(table.to_numpy(dtype=float), aspect="auto", cmap="viridis",
                          vmin=1, vmax=8, interpolation="nearest")  # fmt: skip
        ax.set_yticks(range(len(table)), table.index, fontsize=6)
        ax.set_xticks(range(table.shape[1]), [f"{c}\n{k}" for c, k in table.columns], fontsize=6)
        fig.colorbar(image, ax=ax, label="bits (mean over seeds)", fraction=0.05)
        seeds = group["seed"].nunique()
        ax.set_title(f"{key[3]} · {key[0]} · {key[1]} · {key[2]} ({seeds} seeds)", fontsize=8)
        figures[safe_name("card_bits", key[3], *key[:3]) + ".png"] = fig
    return figures


def plot_method_cards(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write :func:`figures_bit_heatmaps` into ``out_dir``; the PNGs written."""
    return save_all(figures_bit_heatmaps(frame), out_dir)


def phase_costs(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (space, dataset, preset, constraint): the trials, and per trial on average what
    each phase cost: the search (device-hours and CPU seconds, once per trial), the
    finetunes (device-hours, summed over the trial's candidates) and the evaluations
    (seconds, summed over its candidates and tracks)."""
    candidates = rows.drop_duplicates(list(CANDIDATE_KEYS))
    per_trial = candidates.groupby([*CARD_KEYS, "constraint", *TRIAL_KEYS], sort=True).agg(
        search_h=("search_device_hours", "max"),
        search_cpu_s=("search_cpu_seconds", "max"),
        finetune_h=("finetune_device_hours", lambda s: s.sum(min_count=1)),
        eval_s=("eval_seconds", lambda s: s.sum(min_count=1)),
    )
    return per_trial.groupby(level=[*CARD_KEYS, "constraint"], sort=True).agg(
        trials=("search_h", "size"),
        search_h=("search_h", "mean"),
        finetune_h=("finetune_h", "mean"),
        eval_s=("eval_s", "mean"),
        search_cpu_s=("search_cpu_s", "mean"),
    )


def card_lines(frame: pd.DataFrame) -> list[str]:
    """The cards' markdown: per method its costs per constraint, its failures and its
    recorded options."""
    rows = prepared(frame)
    if rows.empty:
        return []
    lines = ["## Method cards", ""]
    for method, mine in rows.groupby("method", sort=True):
        lines += [f"### {method}", ""]
        costs = phase_costs(mine)
        lines += ["| task | trials | search device-h | finetune device-h | evaluation s | "
                  "search CPU s |", "|---|---|---|---|---|---|"]  # fmt: skip
        for key, cost in costs.iterrows():
            lines.append(
                f"| {' · '.join(str(k) for k in key)} | {int(cost['trials'])} | "
                f"{_num(cost['search_h'])} | {_num(cost['finetune_h'])} | "
                f"{_num(cost['eval_s'])} | {_num(cost['search_cpu_s'])} |"
            )
        failed = mine[mine["status"] != "ok"].drop_duplicates(["run_id", "trial_key", "status"])
        lines.append("")
        if failed.empty:
            lines.append("Failures: none.")
        else:
            lines.append(f"Failures ({len(failed)}):")
            for _, fail in failed.iterrows():
                first = (str(fail["error"]).strip().splitlines() or [""])[0][:200]
                lines.append(
                    f"- {fail['space']} · {fail['constraint']} · seed {fail['seed']}: "
                    f"`{fail['status']}` {first.replace('|', '/')}"
                )
        options = sorted({str(o) for o in mine["method_options"] if str(o) not in ("", "{}")})
        lines.append("")
        lines.append("Options: " + ("; ".join(f"`{o}`" for o in options) or "the defaults") + ".")
        lines.append("")
    return lines


def _num(value: float) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.3g}"
