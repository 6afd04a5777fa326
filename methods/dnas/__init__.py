"""``dnas``: DNAS mixed-precision search (Wu, Wang, Zhang, Tian, Vajda, Keutzer, "Mixed
Precision Quantization of ConvNets via Differentiable Neural Architecture Search", arXiv
1812.00090; no official code). Notes: ``docs/methods/dnas.md``.

Kept from the paper (as the spec states it; the paper's text beyond its abstract could not
be read here, so each item is [unverified] against it; the abstract's "up to 21.1× smaller
model or 103.9× lower computational cost" was checked, the spec's CIFAR-10 figures of its
Table 2 were not):

- a super-net on the space's reference architecture: every searchable layer holds one
  branch per candidate ``(w_bits, a_bits)`` pair, its output the mask-weighted sum of the
  branches (:mod:`methods.dnas.supernet`);
- a per-layer categorical over the pairs, masks drawn by Gumbel-softmax with the
  temperature τ annealed exponentially per epoch;
- the multiplicative cost-aware loss ``CE·β·(log Cost)^γ``, ``Cost`` the expected BitOPs
  or weight bits under the masks (the arena's differentiable ``expected_cost``), as the
  task's constraint measures (:mod:`methods.dnas.loss`);
- alternating updates on disjoint data (``ctx.split(0.8)``): each epoch the weights on 80%
  with θ fixed, then θ on the other 20% with the weights fixed, then τ annealed
  (``ctx.train`` with a ``Phase(every="epoch")``, :mod:`methods.dnas.steps`);
- several final architectures sampled from ``P_θ``; the candidates are the most accurate
  and the most efficient that meet the constraint, best first (:mod:`methods.dnas.selection`);
- DoReFa weights and PACT activations (``benchmark.arena.quant.dorefa`` / ``pact``).

Scaled down or changed (stated, allowed by the spec):

- warm start from the FP checkpoint (of ``mbv3-cifar``: the reference subnet of the FP
  supernet); search epochs, learning rates and the τ schedule from the preset's
  ``[methods.dnas]`` (:class:`methods.dnas.config.DNASConfig`; defaults are FBNet's values
  as the spec recalls them, the shipped smoke/tiny/small presets shorten them);
- the final retraining is the harness's shared QAT finetune (``retrain`` track); the
  ``inherit`` track gets each candidate's super-net weights;
- candidate bits default to the space's choices (``bits`` narrows them);
- ``weights="shared"`` (the presets' default on CPU): one latent weight per layer,
  quantized per branch; with the factorised ``p_w·p_a`` categorical that is one
  convolution per layer, exactly the branch sum. ``weights="separate"`` is the paper's
  (default of the ``paper`` preset). Either way a layer runs one convolution per distinct
  activation bit-width at most (the branch sum regrouped by linearity in the weight);
- ``gamma="auto"`` adjusts γ between epochs (at most 3× an epoch) so that the share
  ``feasible_target`` (0.9) of the architectures drawn from ``P_θ`` meets the task's limit
  (it steers that quantile of their costs to the limit), ``beta="auto"`` normalises the loss
  factor to 1 at the start: in a multiplicative loss β only scales θ's gradient, γ sets the
  accuracy/cost trade-off;
- the weights' phase minimises plain cross-entropy (the cost factor is a positive constant
  in the weights for given masks);
- one PACT clip per bit-width; DoReFa keeps the FP weights' scale (``keep_scale``).

The search log holds the variant that ran (and whether the weights choice came from the
option or the preset), θ, τ, β, γ and the expected cost per epoch (also sent to
``ctx.report``), every sample with its cost, feasibility and proxy accuracy, and where each
value comes from. After every epoch the argmax policy is offered when it is feasible.
"""

from methods.dnas.method import DNAS

__all__ = ["DNAS"]
