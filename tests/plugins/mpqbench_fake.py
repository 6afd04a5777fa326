"""Methods that misbehave on purpose, loaded from outside the package by path."""

from __future__ import annotations

import os
import time
from typing import Annotated

import torch
from pydantic import Field, Strict

from benchmark.arena import Candidate, Context, Method, SearchResult, make_loader, method_config


class Raising(Method):
    """Raises inside search."""

    name = "raising"
    searches = "bits"

    def search(self, ctx: Context) -> SearchResult:
        raise RuntimeError("boom from a broken method")


class Greedy(Method):
    """Keeps charging samples and ignores ``exhausted()``."""

    name = "greedy"
    searches = "bits"

    def search(self, ctx: Context) -> SearchResult:
        while True:
            ctx.budget.charge(1000)


@method_config
class AllW4Config:
    bits: int = 4


class AllW4(Method):
    """Proposes W4A4 on every searchable layer, with options."""

    name = "allw4"
    searches = "bits"

    config_class = AllW4Config

    def search(self, ctx: Context) -> SearchResult:
        policy = ctx.space.uniform_policy(
            self.config.bits, self.config.bits, ctx.space.reference_arch
        )
        return SearchResult([Candidate(policy, label=f"all{self.config.bits}")])


class Diverging(Method):
    """Trains until its weights, and so its loss, overflow to inf/NaN."""

    name = "diverging"
    searches = "bits"

    def search(self, ctx: Context) -> SearchResult:
        model = ctx.space.build(ctx.space.reference_arch).to(ctx.device)
        model.load_state_dict(ctx.fp_state, strict=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in make_loader(ctx.train_set, 32, shuffle=True):
            ctx.budget.charge(x.shape[0])  # a method forwarding images itself charges them
            loss = torch.nn.functional.cross_entropy(model(x.to(ctx.device)), y.to(ctx.device))
            ctx.report(loss=float(loss))  # the harness ends the search on a non-finite loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # a blow-up, 1e20× per step (BN would hide a big lr)
                for param in model.parameters():
                    param.mul_(1e20)
        raise AssertionError("the loss stayed finite")


class Crashing(Method):
    """Kills its own process (a segfault, an OOM kill) in the middle of the search."""

    name = "crashing"
    searches = "bits"

    def search(self, ctx: Context) -> SearchResult:
        with (ctx.workdir / "attempts").open("a") as handle:  # the test counts retries
            handle.write("attempt\n")
        os._exit(17)


@method_config
class HangingConfig:
    nap: float = 0.2  # 0: spin in Python; long: stuck in one C call


class Hanging(Method):
    """Never returns from search (sleeps, or spins in pure Python)."""

    name = "hanging"
    searches = "bits"

    config_class = HangingConfig

    def search(self, ctx: Context) -> SearchResult:
        while True:
            if self.config.nap:
                time.sleep(self.config.nap)


@method_config
class CheckpointingConfig:
    steps: int = 5
    die_at: int | None = None


class Checkpointing(Method):
    """Counts ``steps`` search steps, checkpointing each; with ``die_at`` the process
    dies (``os._exit``) at that step the first time, so a resumed run must continue."""

    name = "checkpointing"
    searches = "bits"

    config_class = CheckpointingConfig

    def search(self, ctx: Context) -> SearchResult:
        state = ctx.load_checkpoint() or {"step": 0, "started_at": []}
        state["started_at"].append(state["step"])
        for step in range(state["step"], self.config.steps):
            if step == self.config.die_at and len(state["started_at"]) == 1:
                os._exit(9)
            state["step"] = step + 1
            ctx.save_checkpoint(state)
        policy = ctx.space.uniform_policy(4, 4, ctx.space.reference_arch)
        meta = {"started_at": state["started_at"]}
        return SearchResult([Candidate(policy, label="w4", meta=meta)])


def _uniform(ctx: Context, bits: int) -> Candidate:
    policy = ctx.space.uniform_policy(bits, bits, ctx.space.reference_arch)
    return Candidate(policy, label=f"w{bits}")


@method_config
class OfferingConfig:
    charge: int = 100
    sleep: float = 0.0
    log: bool = False  # offer the search log so far with each answer


class Offering(Method):
    """Offers a better answer after every 100 charged samples and never returns: only the
    budget ends it (``sleep``: seconds per step, so the wall clock can be the limit)."""

    name = "offering"
    searches = "bits"

    config_class = OfferingConfig

    def search(self, ctx: Context) -> SearchResult:
        for step in range(10**9):
            log = {"steps": list(range(step + 1))} if self.config.log else None
            ctx.offer(_uniform(ctx, 8 if step == 0 else 4), log=log)
            if self.config.charge:
                ctx.budget.charge(self.config.charge)
            time.sleep(self.config.sleep)
        raise AssertionError("unreachable")


class Stubborn(Method):
    """Offers an answer, then swallows the budget's stop and keeps running."""

    name = "stubborn"
    searches = "bits"

    def search(self, ctx: Context) -> SearchResult:
        ctx.offer(_uniform(ctx, 4))
        while True:
            try:
                time.sleep(0.05)
            except Exception:  # noqa: BLE001 - the point: it ignores the stop
                pass


@method_config
class MalformedConfig:
    kind: str = "list"


class Malformed(Method):
    """Spends a little time, then returns something that is not a proper result."""

    name = "malformed"
    searches = "bits"

    config_class = MalformedConfig

    def search(self, ctx: Context) -> SearchResult:
        time.sleep(0.3)
        good = _uniform(ctx, 4)
        if self.config.kind == "list":
            return [good]
        if self.config.kind == "not-a-candidate":
            return SearchResult([good, {"policy": good.policy}])
        return SearchResult([Candidate([("conv", 4)])])  # "bad-policy"


@method_config
class SpendingConfig:
    steps: int = 8
    die_at: int | None = None


class Spending(Method):
    """Charges 1000 samples per step and checkpoints; dies at ``die_at`` the first time.
    Stops itself when the budget is exhausted and returns the steps it managed."""

    name = "spending"
    searches = "bits"

    config_class = SpendingConfig

    def search(self, ctx: Context) -> SearchResult:
        state = ctx.load_checkpoint() or {"step": 0, "runs": 0}
        state["runs"] += 1
        for step in range(state["step"], self.config.steps):
            if ctx.budget.exhausted():
                break
            if step == self.config.die_at and state["runs"] == 1:
                os._exit(9)
            ctx.budget.charge(1000)
            state["step"] = step + 1
            ctx.save_checkpoint(state)
        candidate = _uniform(ctx, 4)
        candidate.meta.update(steps=state["step"], runs=state["runs"])
        return SearchResult([candidate])


@method_config
class SectionedConfig:
    """``[methods.sectioned]``: the bits to propose (2, 4 or 8)."""

    bits: Annotated[int, Strict(), Field(ge=2, le=8)] = 8


class Sectioned(Method):
    """Proposes uniform bits read from its own preset section, ``[methods.sectioned]``."""

    name = "sectioned"
    searches = "bits"
    config_class = SectionedConfig

    def search(self, ctx: Context) -> SearchResult:
        return SearchResult([_uniform(ctx, self.config.bits)])


class CostQuerying(Method):
    """Asks for the task's limit and a candidate's cost first thing (what the harness's
    warm-up must have paid for already), then proposes W4A4."""

    name = "costquerying"
    searches = "bits"

    def search(self, ctx: Context) -> SearchResult:
        arch = ctx.space.reference_arch
        policy = ctx.space.uniform_policy(4, 4, arch)
        meta = {"limit": ctx.limit.absolute, "feasible": ctx.feasible(policy, arch)}
        return SearchResult([Candidate(policy, label="w4", meta=meta)])
