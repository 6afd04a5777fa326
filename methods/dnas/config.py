"""DNAS's recipe keys (``[methods.dnas]`` of a preset) and the checks of its options.

Where each default comes from. The DNAS paper (Wu et al. 2018, arXiv 1812.00090) could not
be read here: its text is not in the stored corpora (only its abstract, which states no
hyper-parameter), so every value below marked [unverified] is the spec's
(``docs/methods/dnas.md``), which takes it from FBNet (Wu et al. 2019, arXiv 1812.03443,
the sibling paper with the same super-net and loss), recalled and not checked either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, Strict

from benchmark.arena import preset_schema

Positive = Annotated[float, Strict(), Field(gt=0)]
NonNegative = Annotated[float, Strict(), Field(ge=0)]

WEIGHTS = ("shared", "separate")
CATEGORICALS = ("pairs", "factorised")


@preset_schema
class DNASRecipe:
    """``[methods.dnas]``: the search recipe (lengths, rates, the τ schedule).

    Attributes:
        epochs: search epochs; each is one pass of weight updates over the 80% part of the
            method's train split (θ fixed), then one pass of θ updates over the other 20%
            (weights fixed), then τ is annealed (spec: Optimisation).
        batch_size: images per step of both phases (default: the preset's ``[finetune]``).
        lr: the weights' SGD learning rate, cosine over the search (default: ``[finetune]``'s;
            the search warm-starts from the FP checkpoint, as a QAT finetune does).
        theta_lr: θ's Adam learning rate (FBNet: 0.01 [unverified]).
        theta_weight_decay: θ's Adam weight decay (FBNet: 5e-4 [unverified]).
        tau0: the Gumbel-softmax temperature of the first epoch (FBNet: 5.0 [unverified]).
        tau_decay: ``τ_e = tau0·exp(−tau_decay·e)`` after epoch ``e`` (FBNet: 0.045 per
            epoch [unverified]).
        gamma_start: γ of the first epoch when ``gamma="auto"`` (FBNet's cost exponent, 0.6
            [unverified]).
        gamma_rate: with ``gamma="auto"``, after each epoch ``γ ← γ·(E[cost]/limit)^rate``
            (this benchmark's controller, not the paper's).
        weights: the branch weights when the method's ``weights`` option is not given:
            ``"shared"`` (one latent weight per layer, quantized per branch; memory of one
            network) or ``"separate"`` (the paper's: one weight per branch).
    """

    epochs: Annotated[int, Strict(), Field(ge=1, le=10_000)] = 90
    batch_size: Annotated[int, Strict(), Field(ge=1)] | None = None
    lr: Positive | None = None
    theta_lr: Positive = 0.01
    theta_weight_decay: NonNegative = 5e-4
    tau0: Positive = 5.0
    tau_decay: NonNegative = 0.045
    gamma_start: Positive = 0.6
    gamma_rate: NonNegative = 1.0
    weights: Literal["shared", "separate"] = "shared"


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str | None:
    """``value`` if it is ``None`` or one of ``choices``; else a one-line ``ValueError``."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_number_or_auto(name: str, value: Any, *, minimum: float, strict: bool) -> float | str:
    """``"auto"`` or a finite number above (``strict``) or at least ``minimum``."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number or 'auto', got {value!r}")
    value = float(value)
    bad = value <= minimum if strict else value < minimum
    if bad or value != value or value in (float("inf"), float("-inf")):
        sign = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {sign} {minimum:g}, got {value}")
    return value


def check_count(name: str, value: Any, minimum: int) -> int:
    """A whole number of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_bits(value: Any) -> tuple[int, ...] | None:
    """``None`` or at least two distinct bit-widths from 1 to 32, ascending."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"bits must be a list of bit-widths, e.g. [2, 4, 8], got {value!r}")
    if any(isinstance(b, bool) or not isinstance(b, int) for b in value):
        raise ValueError(f"bits must be whole numbers, got {list(value)!r}")
    bits = tuple(sorted(set(value)))
    if len(bits) < 2 or bits[0] < 1 or bits[-1] > 32:
        raise ValueError(
            f"bits must be at least two distinct bit-widths from 1 to 32, got {list(value)}"
        )
    return bits
