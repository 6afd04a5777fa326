"""Cost per trial as the leaderboard reports it: device-hours, wall hours, CPU seconds and
samples, and the device share they were charged at.

Device-hours are wall hours × the trial's ``device_share`` (GPU-hours on a GPU, CPU-core-
hours on a CPU); wall hours and the process CPU seconds are kept beside them. Search values
are once per trial (the harness repeats them on each of its rows); finetune values are
summed over the trial's candidates on a track (each candidate is finetuned on its own).
"""

from __future__ import annotations

import math
import warnings

import pandas as pd

from benchmark.report.selection import CANDIDATE_KEYS, GROUP_KEYS, TASK_KEYS, TRIAL_KEYS

SEARCH_COSTS: tuple[str, ...] = (
    "search_device_hours", "search_wall_hours", "search_cpu_seconds", "search_samples"
)  # fmt: skip
FINETUNE_COSTS: tuple[str, ...] = (
    "finetune_device_hours", "finetune_wall_hours", "finetune_cpu_seconds"
)  # fmt: skip
COST_COLUMNS: tuple[str, ...] = (*SEARCH_COSTS, *FINETUNE_COSTS)


def share_label(device: str, share: float) -> str:
    """``0.5 × NVIDIA H200``, ``2 × cpu (2 threads)``; ``? ×`` where no share was recorded
    (rows written before shares were)."""
    amount = f"{share:g}" if share is not None and math.isfinite(share) else "?"
    return f"{amount} × {device or 'unknown device'}"


def trial_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (task group, method, trial) of track-assigned rows: :data:`COST_COLUMNS`
    and ``device_share_label`` (:func:`share_label` of the trial's device and share)."""
    keys = [*GROUP_KEYS, *TRIAL_KEYS]
    if frame.empty:
        return pd.DataFrame(columns=[*keys, *COST_COLUMNS, "device_share_label"])
    trials = frame.groupby(list(TRIAL_KEYS))
    per_trial = trials.agg(
        search_device_hours=("search_device_hours", "max"),
        search_wall_hours=("search_wall_hours", "max"),
        search_cpu_seconds=("search_cpu_seconds", "max"),
        search_samples=("samples_processed", "max"),
        device=("device", "first"),
        device_share=("device_share", "first"),
    )
    per_trial["search_samples"] = per_trial["search_samples"].astype("float64")
    per_trial["device_share_label"] = [
        share_label(d, s)
        for d, s in zip(per_trial["device"], per_trial["device_share"], strict=True)
    ]
    candidates = frame.drop_duplicates(list(CANDIDATE_KEYS))
    finetune = candidates.groupby(keys)[list(FINETUNE_COSTS)].sum(min_count=1).reset_index()
    index = pd.MultiIndex.from_frame(finetune[list(TRIAL_KEYS)])
    for column in (*SEARCH_COSTS, "device_share_label"):
        finetune[column] = per_trial[column].reindex(index).to_numpy()
    return finetune[[*keys, *COST_COLUMNS, "device_share_label"]]


def cost_means(costs: pd.DataFrame) -> pd.DataFrame:
    """Per (task group, method): the mean of each of :data:`COST_COLUMNS` over its trials
    (suffix ``_mean``) and ``device_shares``, its trials' share labels joined by ``; ``."""
    keys = list(GROUP_KEYS)
    if costs.empty:
        columns = [*keys, *(f"{c}_mean" for c in COST_COLUMNS), "device_shares"]
        return pd.DataFrame(columns=columns)
    grouped = costs.groupby(keys)
    means = grouped[list(COST_COLUMNS)].mean().add_suffix("_mean")
    means["device_shares"] = grouped["device_share_label"].agg(lambda s: "; ".join(sorted(set(s))))
    return means.reset_index()


def warn_mixed_shares(costs: pd.DataFrame) -> None:
    """One warning line when a task group holds trials charged at different device shares
    (their device-hours are each scaled by their own share; wall hours are not comparable)."""
    if costs.empty:
        return
    mixed = costs.groupby(list(TASK_KEYS))["device_share_label"].nunique()
    mixed = mixed[mixed > 1]
    if mixed.empty:
        return
    example = " · ".join(str(k) for k in mixed.index[0] if str(k))
    labels = costs.set_index(list(TASK_KEYS)).loc[mixed.index[0], "device_share_label"]
    shares = "; ".join(sorted(set(pd.Series(labels).astype(str))))
    warnings.warn(
        f"leaderboard: {len(mixed)} task group(s) mix trials charged at different device "
        f"shares (e.g. {example}: {shares}); device-hours are wall hours × each trial's share, "
        "compare CPU seconds across machines",
        stacklevel=2,
    )
