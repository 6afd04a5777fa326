"""DNAS's one config (:class:`DNASConfig`: ``[methods.dnas]`` of a preset, then
``--method-options``).

Where each default comes from. The DNAS paper (Wu et al. 2018, arXiv 1812.00090) could not
be read here: its text is not in the stored corpora (only its abstract, which states no
hyper-parameter), so every value below marked [unverified] is the spec's
(``docs/methods/dnas.md``), which takes it from FBNet (Wu et al. 2019, arXiv 1812.03443,
the sibling paper with the same super-net and loss), recalled and not checked either.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict

from benchmark.arena import method_config

Positive = Annotated[float, Strict(), Field(gt=0)]
NonNegative = Annotated[float, Strict(), Field(ge=0)]


@method_config
class DNASConfig:
    """DNAS's settings: the search recipe (lengths, rates, the τ schedule), the variant
    (branch weights, categorical, bits) and the loss's β and γ.

    Attributes:
        epochs: search epochs; each is one pass of weight updates over the 80% part of the
            method's train split (θ fixed), then one pass of θ updates over the other 20%
            (weights fixed), then τ is annealed (spec: Optimisation).
        weight_fraction: the share of the 80% part that the weights' phase passes over
            each epoch (a fixed subset, seeded by the task's seed; default 1: all of it,
            as the paper). θ's phase keeps its whole 20% part: its steps set how far θ
            moves. A preset cuts it where a super-net step is slow (``fmnist``).
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
        gamma_rate: with ``gamma="auto"``, ``γ ← γ·(C_q/limit)^rate`` an epoch, applied
            in 8 steps within it (``^(rate/8)`` after every ~1/8 of its θ steps), at most
            ×3 or ÷3 an epoch, ``C_q`` the ``feasible_target`` quantile of the costs of
            1,000 draws from ``P_θ`` (this benchmark's controller, not the paper's).
        feasible_target: the share of architectures drawn from ``P_θ`` that
            ``gamma="auto"`` aims to have meet the limit (default 0.9: each architecture
            sampled at the end must meet it itself).
        weights: the branch weights: ``"shared"`` (one latent weight per layer, quantized
            per branch; memory of one network) or ``"separate"`` (the paper's: one weight
            per branch).
        categorical: ``"pairs"`` (one categorical over the (w, a) pairs per layer, the
            paper's) or ``"factorised"`` (``p_w·p_a``); default: factorised with shared
            weights (then one convolution per layer is exact), pairs with separate ones.
        bits: candidate bit-widths for weights and activations, at least two (default:
            the space's).
        beta: β of ``CE·β·(log Cost)^γ``, a number > 0 or ``"auto"`` (the factor starts
            at 1).
        gamma: γ, a number ≥ 0 or ``"auto"`` (adjusted between epochs so the expected
            cost approaches the task's limit).
        samples: architectures sampled from ``P_θ`` at the end (at least 2).
        candidates: how many of them become candidates (at least 2; with ``"proxy"`` the
            most accurate and the most efficient feasible ones first).
        select: how the candidates are chosen from the samples: ``"sampled"`` (default,
            the paper's: the first ``candidates`` distinct feasible architectures drawn
            from ``P_θ``, in draw order, each offered with the super-net's weights; the
            harness's retrain of each is what ranks them) or ``"proxy"`` (each feasible
            sample and ``P_θ``'s argmax scored on the validation split with the
            super-net's weights after BN recalibration, and the most accurate and the
            most efficient offered: this benchmark's shortcut, which charges one score
            per sample and trusts super-net accuracy as a proxy of trained accuracy).
    """

    epochs: Annotated[int, Strict(), Field(ge=1, le=10_000)] = 90
    weight_fraction: Annotated[float, Strict(), Field(gt=0, le=1)] = 1.0
    batch_size: Annotated[int, Strict(), Field(ge=1)] | None = None
    lr: Positive | None = None
    theta_lr: Positive = 0.01
    theta_weight_decay: NonNegative = 5e-4
    tau0: Positive = 5.0
    tau_decay: NonNegative = 0.045
    gamma_start: Positive = 0.6
    gamma_rate: NonNegative = 1.0
    feasible_target: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.9
    weights: Literal["shared", "separate"] = "shared"
    categorical: Literal["pairs", "factorised"] | None = None
    bits: tuple[Annotated[int, Strict(), Field(ge=1, le=32)], ...] | None = None
    beta: Positive | Literal["auto"] = "auto"
    gamma: NonNegative | Literal["auto"] = "auto"
    samples: Annotated[int, Strict(), Field(ge=2)] = 8
    candidates: Annotated[int, Strict(), Field(ge=2)] = 2
    select: Literal["sampled", "proxy"] = "sampled"

    def __post_init__(self) -> None:
        if self.bits is not None:
            bits = tuple(sorted(set(self.bits)))
            if len(bits) < 2:
                raise ValueError(f"bits must be at least two distinct bit-widths, got {bits}")
            object.__setattr__(self, "bits", bits)
