"""DNAS's super-net on a model of the space: per-layer logits θ, Gumbel-softmax masks, the
mixed layers (through the arena's mixture hooks), the expected cost and plain weights for
one policy.

Each searchable layer is a super-net edge with one branch per candidate ``(w, a)`` pair
(bits). Its mask is a Gumbel-softmax draw from its logits (spec: Super-net),

    ``m_k = exp((θ_k + g_k)/τ) / Σ_k' exp((θ_k' + g_k')/τ)``,  ``g ~ Gumbel(0, 1)``,

either over the pairs (``categorical="pairs"``, the paper's form) or factorised, one
categorical over weight bits and one over activation bits, ``m_(i,j) = m_w,i·m_a,j``.
The edge's output is ``Σ_k m_k·conv(Q_ak(x), Q_wk(W_k))`` with ``W_k`` the branch's own
weight (``weights="separate"``, the paper's) or one latent weight for all (``"shared"``):

- shared + factorised: ``conv(Σ_j m_a,j Q_aj(x), Σ_i m_w,i Q_wi(W))``, one convolution,
  exactly the branch sum (the spec's identity; ``QuantLayer.set_bit_mixture``);
- any other combination: ``QuantLayer.set_branch_mixture``, one convolution per distinct
  activation bit-width (the same sum, regrouped by linearity in the weight).

θ starts at zero (every branch equally likely).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from benchmark.arena import CostTable, LayerBits, QuantLayer, expected_cost, quant_layers

BANK = "dnas_branches"
"""Name of the module holding the separate branch weights in :class:`Trainable`."""


class BranchBank(nn.Module):
    """The separate weights: per searchable layer, one copy of its FP weight per branch."""

    def __init__(self, layers: Mapping[str, QuantLayer], branches: int) -> None:
        super().__init__()
        self.weights = nn.ModuleDict(
            {
                _key(name): nn.ParameterList(
                    nn.Parameter(layer.weight.detach().clone()) for _ in range(branches)
                )
                for name, layer in layers.items()
            }
        )

    def of(self, name: str) -> list[Tensor]:
        """The branch weights of layer ``name``, in branch order."""
        return list(self.weights[_key(name)])


def _key(name: str) -> str:
    return name.replace(".", "__")


class Trainable(nn.Module):
    """What the weights' phase trains: the model and, with separate weights, the
    :class:`BranchBank` (as ``dnas_branches``); its forward is the model's."""

    def __init__(self, model: nn.Module, bank: BranchBank | None) -> None:
        super().__init__()
        self.model = model
        if bank is not None:
            self.add_module(BANK, bank)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class ArchLogits(nn.Module):
    """θ: ``pair`` (layers × pairs) or ``w`` and ``a`` (layers × bit-widths), zeros."""

    def __init__(self, layers: int, bits: int, categorical: str) -> None:
        super().__init__()
        self.categorical = categorical
        if categorical == "pairs":
            self.pair = nn.Parameter(torch.zeros(layers, bits * bits))
        else:
            self.w = nn.Parameter(torch.zeros(layers, bits))
            self.a = nn.Parameter(torch.zeros(layers, bits))

    def logits(self) -> dict[str, Tensor]:
        """``{"pair": ...}`` or ``{"w": ..., "a": ...}``."""
        return dict(self.named_parameters())


def gumbel_softmax(logits: Tensor, tau: float, generator: torch.Generator) -> Tensor:
    """Gumbel-softmax masks, rows of ``logits`` each a categorical: ``softmax((θ + g)/τ)``
    with ``g = −log(E)``, ``E ~ Exp(1)`` (a standard Gumbel), drawn on the CPU from
    ``generator``. Differentiable in ``logits``."""
    noise = torch.empty(logits.shape).exponential_(generator=generator).log().neg()
    return ((logits + noise.to(logits)) / tau).softmax(dim=-1)


class SuperNet:
    """The super-net around ``model`` (its layers are changed in place; ``model`` keeps
    being a plain model of the space between forward passes).

    Args:
        model: a model of the space, its fixed layers already at their fixed bits.
        table: the space's cost table of that architecture.
        layers: the searchable layer names (``table.searchable``).
        bits: the candidate bit-widths for weights and activations (ascending).
        categorical: ``"pairs"`` or ``"factorised"``.
        weights: ``"shared"`` or ``"separate"`` (a :class:`BranchBank` of branch weights).

    ``module`` (a :class:`Trainable`) is what ``ctx.train`` trains: the model and the
    branch weights, so the weights' default optimizer covers both.
        metric: ``"bitops"`` (BitOPs per 32×32 image) or ``"size"`` (bits of weights).
    """

    def __init__(
        self,
        model: nn.Module,
        table: CostTable,
        layers: Sequence[str],
        bits: Sequence[int],
        categorical: str,
        weights: str,
        metric: str,
    ) -> None:
        self.model, self.table, self.metric = model, table, metric
        self.names = tuple(layers)
        found = quant_layers(model)
        self.layers = [found[name] for name in self.names]
        self.bits = tuple(sorted(bits))
        self.pairs = tuple(itertools.product(self.bits, repeat=2))  # weight bits outer
        self.categorical, self.weights = categorical, weights
        device = next(model.parameters()).device
        self.theta = ArchLogits(len(self.names), len(self.bits), categorical).to(device)
        self.bank: BranchBank | None = None
        if weights == "separate":
            self.bank = BranchBank(dict(zip(self.names, self.layers, strict=True)), len(self.pairs))
            self.bank.to(device)
        self.module = Trainable(model, self.bank)

    # --- masks and the mixed layers -------------------------------------------------------
    def draw(self, tau: float, generator: torch.Generator, *, grad: bool) -> dict[str, Tensor]:
        """Gumbel-softmax masks for every layer at temperature ``tau``; with ``grad=False``
        no gradient reaches θ (the weights' phase)."""
        logits = self.theta.logits()
        if not grad:
            logits = {k: v.detach() for k, v in logits.items()}
        return {k: gumbel_softmax(v, tau, generator) for k, v in logits.items()}

    def probs(self) -> dict[str, Tensor]:
        """``P_θ``: ``softmax(θ)`` per layer (no noise), detached."""
        return {k: v.detach().softmax(dim=-1) for k, v in self.theta.logits().items()}

    def apply(self, masks: Mapping[str, Tensor]) -> None:
        """Set every searchable layer to the super-net edge with these masks."""
        for i, (name, layer) in enumerate(zip(self.names, self.layers, strict=True)):
            own = None if self.bank is None else self.bank.of(name)
            if self.categorical == "pairs":
                layer.set_branch_mixture(self.pairs, masks["pair"][i], own)
            elif own is None:
                layer.set_bit_mixture(self.bits, masks["w"][i], self.bits, masks["a"][i])
            else:
                joint = torch.outer(masks["w"][i], masks["a"][i]).reshape(-1)
                layer.set_branch_mixture(self.pairs, joint, own)

    def clear(self) -> None:
        """Back to plain layers (before a deep copy, a state dict, an extraction)."""
        for layer in self.layers:
            layer.clear_bit_mixture()

    def set_weights_trainable(self, trainable: bool) -> None:
        """``requires_grad`` of every model parameter (weights, BN, quantizer clips, branch
        weights): off in θ's phase, so no weight gradient is computed there."""
        for param in self.module.parameters():
            param.requires_grad_(trainable)

    # --- cost -----------------------------------------------------------------------------
    def expected_cost(self, masks: Mapping[str, Tensor]) -> Tensor:
        """``Σ_edges m_e·Cost(e)`` plus the fixed layers (the arena's
        :func:`~benchmark.arena.expected_cost`): BitOPs per image or weight bits, a scalar
        differentiable in the masks."""
        if self.categorical == "pairs":
            rows = {n: masks["pair"][i] for i, n in enumerate(self.names)}
            return expected_cost(self.table, metric=self.metric, pair_probs=rows, pairs=self.pairs)
        w = {n: masks["w"][i] for i, n in enumerate(self.names)}
        a = {n: masks["a"][i] for i, n in enumerate(self.names)}
        return expected_cost(self.table, w, a, self.metric, bits=self.bits)

    # --- policies -------------------------------------------------------------------------
    def _pair(self, index: int) -> LayerBits:
        w, a = self.pairs[index]
        return LayerBits(w, a)

    def argmax_policy(self) -> dict[str, LayerBits]:
        """Each layer's most likely choice under ``P_θ`` (searchable layers only)."""
        probs = self.probs()
        if self.categorical == "pairs":
            best = probs["pair"].argmax(dim=-1).tolist()
            return {n: self._pair(k) for n, k in zip(self.names, best, strict=True)}
        w, a = probs["w"].argmax(dim=-1).tolist(), probs["a"].argmax(dim=-1).tolist()
        return {
            n: LayerBits(self.bits[i], self.bits[j])
            for n, i, j in zip(self.names, w, a, strict=True)
        }

    def sample_policy(self, generator: torch.Generator) -> dict[str, LayerBits]:
        """One policy drawn from ``P_θ`` (each layer independently)."""
        probs = {k: v.cpu() for k, v in self.probs().items()}
        if self.categorical == "pairs":
            picks = torch.multinomial(probs["pair"], 1, generator=generator)[:, 0].tolist()
            return {n: self._pair(k) for n, k in zip(self.names, picks, strict=True)}
        w = torch.multinomial(probs["w"], 1, generator=generator)[:, 0].tolist()
        a = torch.multinomial(probs["a"], 1, generator=generator)[:, 0].tolist()
        return {
            n: LayerBits(self.bits[i], self.bits[j])
            for n, i, j in zip(self.names, w, a, strict=True)
        }

    def sampled_costs(self, count: int, generator: torch.Generator) -> Tensor:
        """The costs of ``count`` policies drawn from ``P_θ`` (each layer independently),
        float64, shape ``(count,)``: BitOPs per 32×32 image or weight bits, fixed layers
        included (what :meth:`sample_policy` then the cost table would give, at once)."""
        probs = {k: v.cpu().double() for k, v in self.probs().items()}
        if self.categorical == "pairs":
            coeffs = torch.from_numpy(self.table.pair_coefficients(self.metric, self.pairs))
            picks = torch.multinomial(probs["pair"], count, replacement=True, generator=generator)
            per_layer = coeffs.double().gather(1, picks)  # (layers, count)
        else:
            coeffs = torch.from_numpy(self.table.coefficients(self.metric, self.bits)).double()
            w = torch.multinomial(probs["w"], count, replacement=True, generator=generator)
            a = torch.multinomial(probs["a"], count, replacement=True, generator=generator)
            rows = torch.arange(len(self.names))[:, None]
            per_layer = coeffs[rows, w] if self.metric == "size" else coeffs[rows, w, a]
        return per_layer.sum(dim=0) + float(self.table.fixed_total(self.metric))

    def log_prob(self, policy: Mapping[str, LayerBits]) -> float:
        """``log P_θ(policy)`` (natural log) over the searchable layers."""
        probs = {k: v.cpu().double() for k, v in self.probs().items()}
        total = 0.0
        for i, name in enumerate(self.names):
            bits = policy[name]
            w, a = self.bits.index(bits.w_bits), self.bits.index(bits.a_bits)
            if self.categorical == "pairs":
                total += float(probs["pair"][i, w * len(self.bits) + a].log())
            else:
                total += float(probs["w"][i, w].log() + probs["a"][i, a].log())
        return total

    def theta_table(self, digits: int = 3) -> dict[str, dict[str, float]]:
        """``P_θ`` per layer as ``{"w4a2": p, ...}`` (pairs) or ``{"w4": p, "a2": p, ...}``."""
        probs = {k: v.cpu().tolist() for k, v in self.probs().items()}
        table = {}
        for i, name in enumerate(self.names):
            if self.categorical == "pairs":
                row = {
                    f"w{w}a{a}": p for (w, a), p in zip(self.pairs, probs["pair"][i], strict=True)
                }
            else:
                row = {f"w{b}": p for b, p in zip(self.bits, probs["w"][i], strict=True)}
                row.update({f"a{b}": p for b, p in zip(self.bits, probs["a"][i], strict=True)})
            table[name] = {k: round(v, digits) for k, v in row.items()}
        return table

    def plain_state(self, policy: Mapping[str, LayerBits]) -> dict[str, Tensor]:
        """A state dict for ``space.build(arch, policy, quant)``: the super-net's weights,
        each searchable layer's weight being its chosen branch's (separate weights), cloned
        to the CPU."""
        self.clear()
        state = {k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()}
        if self.bank is not None:
            for name in self.names:
                bits = policy[name]
                k = self.pairs.index((bits.w_bits, bits.a_bits))
                state[f"{name}.weight"] = self.bank.of(name)[k].detach().clone().cpu()
        return state
