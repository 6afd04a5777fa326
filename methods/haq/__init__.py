"""``haq``: Hardware-Aware Automated Quantization (Wang et al., CVPR 2019, arXiv 1811.08886).

A DDPG agent chooses every searchable layer's weight bits and then its activation bits,
layer by layer; after each episode a backward loop lowers bits until the policy meets the
hardware limits, the policy is finetuned briefly and scored, and every transition of the
episode learns from that one reward. Works on any space (on ``mbv3-cifar`` its reference
architecture) and with any per-layer cost table.

Kept from the paper and its code (mit-han-lab/haq, read for every value below):

- the agent (:mod:`methods.haq.agent`): actor ``s→300→300→1`` with a sigmoid, critic
  ``fc(s)+fc(a)→300→1``, Adam lr 1e-4 / 1e-3, τ = 0.01, discount 1, minibatch 64, replay
  128 × layers, a moving-average reward baseline (α = 0.5) over minibatch means, one
  update per transition after the warm-up (``n_update`` 1), warm-up episodes of uniform
  random actions, truncated-normal exploration with ``σ = 0.5·decay^(episode − warm-up)``;
- the environment (:mod:`methods.haq.env`): the 10-number state, weight-then-activation
  steps, the action → bit map, the backward constraint loop (last layer first, activation
  bits then weight bits, one step at a time, never below the lowest choice), first and
  last layer at W8A8 (the spaces' stem and classifier already are);
- the reward ``0.1·(top-1 − FP top-1)`` shared by every transition of the episode;
- the quantizer: linear, KL-calibrated clip for weights below 5 bits (max |w| above),
  activations with a learnable clip capped at 6 (``benchmark.arena.KLLinearConfig``);
- hardware feedback from a per-layer cost table (layer × w-bits × a-bits): the shared
  BitOPs (or weight-size) model by default, or a user's measured table
  (``--method-options '{"haq": {"cost_table": "lat.csv"}}'``,
  :mod:`benchmark.arena.cost_file`). With a table the loop meets both the table's limit
  (``table_ratio`` of its W8A8 cost, by default the task's fraction) and the task's
  constraint, which still decides feasibility; both costs are in every episode's log.

Changed or scaled down, and why:

- the length comes from the preset (``[methods.haq]``: episodes, warm-up, finetune steps,
  σ decay; the schema's defaults are the original's 600 / 20 / ~157 steps / 0.99, the
  shipped presets scale them down: ``paper`` 150 / 20 / 100 / 0.97 as the spec allows);
- the per-episode finetune is the shared recipe (``ctx.finetune``: the preset's
  ``[finetune]`` SGD recipe cut to ``finetune_steps``), and the score is top-1 on the
  held-out validation split after BN recalibration (``ctx.score``); the original
  rewards the finetune's running train accuracy. Both are charged to the budget;
- the action → bit map picks one of the space's bit choices by equal bins of [0, 1]
  (identical to the original on consecutive bits; also fits {2, 3, 4, 8});
- the agent steps over the searchable layers only (the spaces fix the first and last
  layer at W8A8, which the original's loop would force anyway); the state's "previous
  action" is the previous step's bits over the largest choice and the step-kind flag is
  1 for weight bits, 0 for activation bits on every layer (the original builds its
  state in place and, from the second layer on, flags the activation step instead);
- every transition is stored with its own next state (the original reconstructs them
  from a sequential memory with a dummy entry per episode);
- the KL calibration uses the standard histogram KL (TensorRT's), where the original
  uses a J-divergence on cumulative histograms;
- an episode whose short finetune diverges (NaN or infinite loss) is scored 0% top-1, the
  worst reward, logged, kept in the history with ``diverged: true`` and never offered as
  a candidate; the search goes on (the original has no such case: it fails). Seen on
  ``mbv3-cifar`` at ``bitops<=0.2`` in the reference run's first try, where the trial
  ended ``diverged`` with no candidate.

Resumable: the agent (networks, optimisers, replay buffer, baseline, RNG), the episode
counter, the FP top-1 and the history are checkpointed after every episode through the
context, each episode's finetune and score are seeded by (task seed, episode), and the
best ``top_k`` distinct policies so far are offered after every episode.
"""

from methods.haq.method import HAQ, HAQ_QUANT, HAQConfig

__all__ = ["HAQ", "HAQ_QUANT", "HAQConfig"]
