"""The benchmark contract: Task, Constraint, Budget and its meter, Candidate, SearchResult
and the status exceptions (budget exceeded, diverged, timeout).

A method receives a :class:`~benchmark.arena.context.Context` and returns a
:class:`SearchResult`; the harness does everything else (finetune, evaluation, cost,
recording).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor, nn

from benchmark.arena.cost import CostReport, Reference
from benchmark.arena.policy import Policy, policy_from_dict, policy_to_dict


class ProtocolError(ValueError):
    """Malformed task input (constraint, budget, seeds)."""


# --- status exceptions: how a search can end other than ``ok`` ------------------------
class DivergedError(RuntimeError):
    """The training loss became NaN or infinite (status ``diverged``)."""


class SearchIgnoredStop(BaseException):
    """The search kept running past the budget's stop and the harness's grace margin
    (status ``over_budget``). A ``BaseException`` so that ``except Exception`` cannot
    swallow it."""


class TrialTimeout(BaseException):
    """The trial ran past its time limit (status ``timeout``).

    A ``BaseException`` so that a method's ``except Exception`` cannot swallow it.
    """


# --- constraint ---------------------------------------------------------------------
_CONSTRAINT = re.compile(
    r"^\s*(?P<metric>bitops|size)\s*<=\s*(?P<value>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)"
    r"\s*(?P<unit>[a-z]*)\s*$",
    re.IGNORECASE | re.ASCII,  # ASCII: "ſize" or a Kelvin sign must not pass for size / k
)
_METRIC = re.compile(r"^\s*(?P<metric>[a-z_]\w*)\s*(<=|<|>=|>|=)", re.IGNORECASE | re.ASCII)
_UNITS = {
    "bitops": {"": None, "x": None, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12},
    "size": {
        "": None,
        "x": None,
        "b": 8,
        "kb": 8e3,
        "mb": 8e6,
        "kib": 8 * 1024.0,
        "mib": 8 * 1024.0**2,
        "bits": 1,
    },
}


def _exact(value: float) -> str:
    """The shortest text that reads back as ``value`` exactly (0.07274191, 0.3, 2, 1e-05)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Constraint:
    """One metric and a limit: ``bitops<=0.5`` (50% of uniform W8A8 BitOPs), ``size<=0.25``
    (25% of the 8-bit weight size), or absolute with a unit: ``bitops<=0.3G`` (BitOPs per
    image), ``size<=40KB`` (bytes; ``bits``, ``KiB``, ``MB`` ... also accepted).

    Attributes:
        metric: ``"bitops"`` or ``"size"``.
        limit: the limit, a ratio to W8A8 when ``relative`` else BitOPs or bits.
        relative: whether ``limit`` is a ratio to the same model at W8A8.
        text: the canonical spelling, used as the constraint's name in results.
    """

    metric: str
    limit: float
    relative: bool
    text: str

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Read ``text``; anything malformed raises :class:`ProtocolError` (one line)."""
        if not isinstance(text, str):
            raise ProtocolError(f"a constraint must be text like bitops<=0.5, got {text!r}")
        match = _CONSTRAINT.match(text)
        if not match:
            other = _METRIC.match(text)
            if other and other["metric"].lower() not in _UNITS:
                raise ProtocolError(
                    f"unknown constraint metric {other['metric']!r} in {text!r}: use bitops or "
                    "size, e.g. bitops<=0.5 or size<=0.25"
                )
            raise ProtocolError(
                f"cannot read constraint {text!r}: write e.g. bitops<=0.5 (ratio to W8A8), "
                "size<=0.25, bitops<=0.3G or size<=40KB"
            )
        metric, unit = match["metric"].lower(), match["unit"].lower()
        value = float(match["value"])
        if unit not in _UNITS[metric]:
            units = ", ".join(u for u in _UNITS[metric] if u)
            raise ProtocolError(f"unknown unit {unit!r} in {text!r}: use one of {units}")
        scale = _UNITS[metric][unit]
        if value <= 0 or not math.isfinite(value):
            raise ProtocolError(
                f"constraint limit must be a positive, finite number, got {text!r}: "
                "write e.g. bitops<=0.5"
            )
        if scale is None:
            if value > 16:
                raise ProtocolError(
                    f"{text!r}: a plain number is a ratio to W8A8 (FP is 16× W8A8 at most); "
                    "add a unit for an absolute limit, e.g. bitops<=0.3G or size<=40KB"
                )
            return cls(metric, value, True, f"{metric}<={_exact(value)}")
        if not math.isfinite(value * scale):
            raise ProtocolError(
                f"constraint {text!r} is too large to hold as a number: write a smaller limit"
            )
        return cls(metric, value * scale, False, f"{metric}<={_exact(value)}{match['unit']}")

    def measure(self, cost: CostReport, reference: Reference | None = None) -> float:
        """The constrained quantity of ``cost``, in the limit's unit.

        Relative limits divide by ``reference`` (the space's W8A8 cost, so every
        architecture of a joint space is held to the same absolute number); without
        one, by the model's own W8A8 cost.
        """
        if self.metric == "bitops":
            value, ref = float(cost.bitops), cost.bitops_w8a8
            if reference is not None:
                ref = reference.bitops_w8a8
        else:
            value, ref = float(cost.size_bits), cost.size_bits_w8a8
            if reference is not None:
                ref = reference.size_bits_w8a8
        return value / ref if self.relative else value

    def absolute(self, reference: Reference) -> float:
        """The limit in absolute units: BitOPs per 32×32 image (``bitops``) or bits of
        weight storage (``size``).

        A relative limit is multiplied by ``reference``'s W8A8 value of the metric (the
        space's :meth:`~benchmark.arena.spaces.base.SearchSpace.reference`); an absolute
        one is returned as is.
        """
        if not self.relative:
            return float(self.limit)
        ref = reference.bitops_w8a8 if self.metric == "bitops" else reference.size_bits_w8a8
        return float(self.limit * ref)

    def satisfied(self, cost: CostReport, reference: Reference | None = None) -> bool:
        """THE feasibility check: ``cost``'s BitOPs (or weight bits) at most
        :meth:`absolute` of ``reference`` (1e-9 relative tolerance for round-off).

        Without ``reference``, a relative limit refers to the model's own W8A8 cost.
        """
        if reference is None:
            reference = Reference(cost.bitops_w8a8, cost.size_bits_w8a8)
        value = cost.bitops if self.metric == "bitops" else cost.size_bits
        return value <= self.absolute(reference) * (1 + 1e-9)

    def __str__(self) -> str:
        return self.text


# --- budget -------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """Search budget: wall seconds on the trial's device and training samples processed."""

    max_search_seconds: float
    max_search_samples: int

    def __post_init__(self) -> None:
        if not self.max_search_seconds > 0 or not self.max_search_samples > 0:
            raise ProtocolError("budget limits must be positive")


class BudgetExceeded(RuntimeError):
    """Raised by :meth:`BudgetMeter.charge` once a method goes past its budget: the harness
    stops the search there and evaluates what it offered (status ``ok``,
    ``stopped_by_budget``); ``over_budget`` only when it offered nothing."""


class BudgetMeter:
    """Charges the method's training samples and wall time against its :class:`Budget`.

    Helpers of the toolkit charge for the method; a method that forwards images itself
    calls ``charge(samples)``. ``exhausted()`` says the budget is spent (a method may poll
    it to stop gracefully); ``charge`` raises :class:`BudgetExceeded` once it is passed:
    the normal end of a search, whose offered candidates the harness then evaluates.
    """

    def __init__(
        self,
        budget: Budget,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.budget = budget
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._start = clock()
        self._cpu_start = cpu_clock()
        self._earlier_seconds = 0.0
        self._earlier_cpu_seconds = 0.0
        self.samples = 0

    @property
    def seconds(self) -> float:
        """Wall seconds spent, an interrupted earlier attempt's included."""
        return self._earlier_seconds + self._clock() - self._start

    @property
    def cpu_seconds(self) -> float:
        """This process's CPU seconds (all threads) spent, an earlier attempt's included
        (not a budget: what the harness records beside the wall time)."""
        return self._earlier_cpu_seconds + self._cpu_clock() - self._cpu_start

    def restore(self, samples: int, seconds: float, cpu_seconds: float = 0.0) -> None:
        """Count what an interrupted attempt of this search spent (``--resume``)."""
        self.samples += int(samples)
        self._earlier_seconds += float(seconds)
        self._earlier_cpu_seconds += float(cpu_seconds)

    def spent(self) -> dict[str, float]:
        """What was spent so far: ``{"samples": ..., "seconds": ..., "cpu_seconds": ...}``
        (saved with a search checkpoint)."""
        return {"samples": self.samples, "seconds": self.seconds, "cpu_seconds": self.cpu_seconds}

    def seconds_left(self) -> float:
        return self.budget.max_search_seconds - self.seconds

    def exhausted(self) -> bool:
        return (
            self.samples >= self.budget.max_search_samples
            or self.seconds >= self.budget.max_search_seconds
        )

    def over(self) -> bool:
        """Strictly past a limit (what ``charge`` raises on)."""
        return (
            self.samples > self.budget.max_search_samples
            or self.seconds > self.budget.max_search_seconds
        )

    def charge(self, samples: int) -> None:
        """Add ``samples`` images (each image through each subnet counts)."""
        self.samples += int(samples)
        if self.over():
            raise BudgetExceeded(
                f"search budget spent: {self.samples} samples "
                f"(max {self.budget.max_search_samples}), {self.seconds:.1f} s "
                f"(max {self.budget.max_search_seconds:g} s)"
            )


# --- task ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """What every method in one comparison gets the same of."""

    space: str
    dataset: str
    preset: str
    constraint: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def key(self) -> str:
        return f"{self.space}|{self.dataset}|{self.preset}|{self.constraint}|seed{self.seed}"


# --- results of a search ------------------------------------------------------------
@dataclass
class Candidate:
    """A proposed architecture + per-layer policy, optionally with weights (inherit track).

    ``weights`` is a state dict for ``space.build(arch, policy, quant)`` with the method's
    own ``quant`` config (a ``QuantConfig``; ``None``: the shared LSQ config).

    ``fixed`` is the candidate's own convention for the space's fixed layers, if not the
    space's: an int (every fixed layer at W = A = that many bits; 32 = FP) or a mapping from
    role (``"stem"``, ``"se"``, ``"classifier"``) or fixed layer name to bits, on top of the
    space's convention (``space.with_fixed(fixed)``). The harness validates it against the
    space's fixed layers and allowed bits, then costs, checks and evaluates the candidate
    (both tracks) under it; the row's ``fixed`` column records the convention used.
    """

    policy: Policy
    arch: Any = None
    label: str = ""
    weights: Mapping[str, Tensor] | None = None
    quant: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    fixed: int | Mapping[str, Any] | None = None

    @classmethod
    def from_model(
        cls, model: nn.Module, policy: Policy, arch: Any = None, **fields: Any
    ) -> Candidate:
        """A candidate with ``model``'s weights for the inherit track: a snapshot of its
        state dict (detached, on the CPU, copied), so training the model on does not
        change it. ``fields``: ``label``, ``quant``, ``meta``, ``fixed``."""
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(policy, arch, weights=weights, **fields)

    def to_state(self) -> dict[str, Any]:
        """The candidate as plain data for a search checkpoint: tensors, numbers, strings,
        lists and dicts only, so that it loads with ``torch.load(weights_only=True)``
        (:meth:`from_state` rebuilds it)."""
        quant = self.quant.to_dict() if hasattr(self.quant, "to_dict") else self.quant
        fixed = dict(self.fixed) if isinstance(self.fixed, Mapping) else self.fixed
        return {
            "policy": policy_to_dict(self.policy),
            "arch": jsonable_arch(self.arch),
            "label": self.label,
            "weights": None if self.weights is None else dict(self.weights),
            "quant": quant,
            "meta": _plain_data(self.meta),
            "fixed": fixed,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], space: Any) -> Candidate:
        """The candidate :meth:`to_state` wrote, its architecture validated by ``space``."""
        from benchmark.arena.quant import QuantConfig

        quant = state.get("quant")
        return cls(
            policy_from_dict(state["policy"]),
            None if state.get("arch") is None else space.validate_arch(state["arch"]),
            label=state.get("label", ""),
            weights=state.get("weights"),
            quant=QuantConfig.from_dict(quant) if isinstance(quant, Mapping) else quant,
            meta=dict(state.get("meta") or {}),
            fixed=state.get("fixed"),
        )

    def policy_json(self) -> str:
        return json.dumps(policy_to_dict(self.policy), sort_keys=False)

    def arch_json(self) -> str:
        return json.dumps(jsonable_arch(self.arch), sort_keys=True, default=str)


def _plain_data(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists (checkpoints
    load with ``weights_only=True``, which refuses numpy objects)."""
    if isinstance(value, Mapping):
        return {k: _plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_data(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, Tensor):
        return value.tolist()
    return value


def jsonable_arch(arch: Any) -> Any:
    """``arch`` as JSON-ready data (for rows and search logs): ``None`` for none, its
    ``to_dict()`` when it has one, plain JSON data as it is, anything else as ``str``."""
    if arch is None:
        return None
    to_dict = getattr(arch, "to_dict", None)
    if to_dict is not None:
        return to_dict()
    return arch if isinstance(arch, dict | list | str | int | float | bool) else str(arch)


@dataclass
class SearchResult:
    """A method's answer: candidates (best first) and its own log (JSON-serialisable)."""

    candidates: list[Candidate]
    log: dict[str, Any] = field(default_factory=dict)
