"""The context of one trial: everything a method may use.

Built by the harness for one (method, task) trial. It carries the train and validation
splits only: the test split never reaches a method.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from benchmark.arena import reporting
from benchmark.arena.cache import load_verified, save_verified
from benchmark.arena.cost import CostReport
from benchmark.arena.limit import TaskLimit
from benchmark.arena.policy import LayerBits
from benchmark.arena.presets import Preset
from benchmark.arena.protocol import (
    Budget,
    BudgetMeter,
    Candidate,
    Constraint,
    DivergedError,
    Task,
)
from benchmark.arena.spaces.base import SearchSpace
from benchmark.arena.toolkit import Toolkit


@dataclass
class Context(Toolkit):
    """Everything a method may use; built by the harness for one (method, task) trial.

    Besides the attributes below, the budget-charged toolkit of
    :class:`~benchmark.arena.toolkit.Toolkit`: ``train``, ``finetune``, ``score``,
    ``subnet``, ``fp_supernet`` and ``split``.

    Attributes:
        task: the task.
        space: the built search space.
        preset: the preset (recipes, budget defaults).
        train_set / val_set: the method's data (the test split is not here).
        num_classes: classes of the dataset.
        fp_state: the cached FP checkpoint (state dict of the space's FP model or supernet).
        device: where to compute.
        budget: the meter to charge training samples to.
        rng / np_rng: seeded generators (the torch global seed is also set).
        log: the trial's logger.
        workdir: a folder for the method's checkpoints (survives a resumed trial).
    """

    task: Task
    space: SearchSpace
    preset: Preset
    constraint: Constraint
    train_set: Dataset
    val_set: Dataset
    num_classes: int
    fp_state: Mapping[str, Tensor]
    device: torch.device
    budget: BudgetMeter
    rng: random.Random
    np_rng: np.random.Generator
    log: logging.Logger
    workdir: Path
    reporter: Callable[[dict[str, Any]], None] | None = None
    _warned_infeasible: bool = field(default=False, init=False, repr=False)
    offered: list[Candidate] = field(default_factory=list)
    offered_log: dict[str, Any] = field(default_factory=dict)
    """The search log handed over with the latest :meth:`offer` (kept when a budget ends
    the search)."""
    anytime: list[dict[str, Any]] = field(default_factory=list)
    """The search's anytime record: one entry per ``ctx.score`` and per ``ctx.offer``, with
    the samples charged and the search seconds at that moment (the harness writes it to the
    trial's ``anytime.json``)."""

    @classmethod
    def create(
        cls,
        task: Task,
        space: SearchSpace,
        preset: Preset,
        splits: Any,
        fp_state: Mapping[str, Tensor],
        *,
        budget: Budget,
        workdir: Path,
        device: torch.device | str = "cpu",
        log: logging.Logger | None = None,
        reporter: Callable[[dict[str, Any]], None] | None = None,
    ) -> Context:
        """The context of one trial: constraint parsed from the task, RNGs seeded by it,
        train/val taken from ``splits`` (a :class:`~benchmark.arena.data.DataSplits`; test
        left out).
        """
        return cls(
            task=task,
            space=space,
            preset=preset,
            constraint=Constraint.parse(task.constraint),
            train_set=splits.train,
            val_set=splits.val,
            num_classes=splits.num_classes,
            fp_state=fp_state,
            device=torch.device(device),
            budget=BudgetMeter(budget),
            rng=random.Random(task.seed),
            np_rng=np.random.default_rng(task.seed),
            log=log or logging.getLogger("mpqbench.method"),
            workdir=workdir,
            reporter=reporter,
        )

    def report(self, **metrics: Any) -> None:
        """Send intermediate metrics to the scheduler (Ray Tune), the live view and the trial log.

        A metric whose name contains ``loss`` and whose value is NaN or infinite ends
        the search: it raises :class:`~benchmark.arena.protocol.DivergedError` (status
        ``diverged``).
        """
        self.log.info("report %s", metrics)
        for name, value in metrics.items():
            if "loss" in name and isinstance(value, float | int) and not math.isfinite(value):
                raise DivergedError(f"the search reported {name}={value}")
        reporting.metrics(**metrics)
        if self.reporter is not None:
            self.reporter(metrics)

    def cost(self, policy: Mapping[str, LayerBits], arch: Any = None) -> CostReport:
        """The shared cost model on this task's space."""
        return self.space.cost(policy, arch)

    @property
    def limit(self) -> TaskLimit:
        """The task's cost limit on this space (:class:`~benchmark.arena.limit.TaskLimit`):
        ``limit.absolute`` in BitOPs per 32×32 image (``bitops`` constraints) or bits of
        weight storage (``size``), the W8A8 reference, the fixed layers' share, per-layer
        coefficients, and ``check`` / ``slack`` of a policy."""
        return TaskLimit(self.constraint, self.space)

    def feasible(self, policy: Mapping[str, LayerBits], arch: Any = None) -> bool:
        """Whether ``policy`` on ``arch`` meets the task's constraint (:attr:`limit`)."""
        return self.limit.met(policy, arch)

    # resumable searches --------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / "search_checkpoint.pt"

    def save_checkpoint(self, state: Any) -> None:
        """Save the method's search state (atomically) so a resumed trial can continue;
        the budget spent so far is saved with it and restored on resume."""
        payload = {"state": state, "spent": self.budget.spent()}
        save_verified(self.checkpoint_path, payload, {"task": self.task.to_dict()})

    def load_checkpoint(self) -> Any | None:
        """The last saved search state of this trial, or ``None``."""
        payload = load_verified(self.checkpoint_path)
        return None if payload is None else payload["state"]

    def restore_spend(self) -> dict[str, float] | None:
        """Charge the meter what the saved search had spent (the harness calls this when a
        trial resumes, so a resumed search gets only what it had left)."""
        payload = load_verified(self.checkpoint_path)
        if not isinstance(payload, dict) or "spent" not in payload:
            return None
        spent = payload["spent"]
        self.budget.restore(spent["samples"], spent["seconds"], spent.get("cpu_seconds", 0.0))
        return spent

    # anytime candidates -----------------------------------------------------------------
    def offer(self, *candidates: Candidate, log: Mapping[str, Any] | None = None) -> None:
        """Hand over the search's current answer (best first), replacing what was offered
        before. When the budget ends the search, these are evaluated (status ``ok``,
        ``stopped_by_budget``); a search that returns gives its own final answer.

        ``log``: the search's log so far (what its ``SearchResult.log`` would hold), kept
        as the trial's ``search_log.json`` if the budget ends the search; without it that
        file says only why the search stopped. ``None`` keeps the log of the last offer.

        A candidate over the task's limit would be recorded infeasible and never trained:
        the first such offer of a trial says so in the trial's log (a warning)."""
        for candidate in candidates:
            if not isinstance(candidate, Candidate):
                raise TypeError(
                    f"ctx.offer takes Candidate objects, got {type(candidate).__name__}"
                )
        if not self._warned_infeasible:
            over = [c for c in candidates if self.candidate_feasible(c) is False]
            if over:
                self._warned_infeasible = True
                self.log.warning(
                    "ctx.offer: candidate %s is over the task's limit %s (it would be "
                    "recorded infeasible and never trained); said once per trial",
                    over[0].label or "(unlabelled)",
                    self.constraint.text,
                )
        self.offered = list(candidates)
        if log is not None:
            if not isinstance(log, Mapping):
                raise TypeError(f"ctx.offer's log is a {type(log).__name__}, not a dict")
            self.offered_log = dict(log)
        scores = [
            float(v)
            for c in candidates
            for v in (c.meta.get("val_top1"), c.meta.get("proxy_val_top1"))
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        self._record(
            "offer",
            candidates=len(candidates),
            labels=[c.label for c in candidates[:3]],
            val_top1=max(scores) if scores else None,
        )

    def score(self, model: nn.Module, *, seed: int = 0, batches: int | None = None) -> float:
        """:meth:`Toolkit.score` (validation top-1, percent), recorded in :attr:`anytime`."""
        value = super().score(model, seed=seed, batches=batches)
        self._record("score", val_top1=float(value))
        reporting.metrics(val_top1=round(float(value), 2))  # what the view shows next
        return value

    def _record(self, event: str, **fields: Any) -> None:
        self.anytime.append(
            {
                "event": event,
                "samples": int(self.budget.samples),
                "search_seconds": round(float(self.budget.seconds), 3),
                **fields,
            }
        )

    def candidate_feasible(self, candidate: Candidate) -> bool | None:
        """Whether ``candidate`` meets the task's limit as the harness will cost it (under
        its own fixed-layer convention, the policy completed with the fixed layers);
        ``None`` when it is not a valid candidate of this space."""
        try:
            space = self.space.with_fixed(candidate.fixed)
            arch = space.validate_arch(candidate.arch)
            policy = space.full_policy(candidate.policy, arch)
        except ValueError:
            return None
        return self.limit.on(space).met(policy, arch)
