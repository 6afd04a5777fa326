"""The arena: everything a method may use. This module is the method API.

A method imports from here and from nowhere else in ``benchmark``::

    from benchmark.arena import Candidate, Context, LayerBits, Method, SearchResult

What is here, by job (units: bits, MACs per 32×32 image, BitOPs per image, seconds,
top-1 in percent):

- the contract: :class:`Method` (the base class: ``name``, ``searches``, ``search``),
  :class:`Context` (data, FP checkpoint, budget meter, seeded RNGs, logger,
  checkpoints, ``report``), :class:`Candidate`, :class:`SearchResult`, :class:`Task`,
  :class:`Constraint`, :class:`Budget` / :class:`BudgetMeter`, and the status exceptions
  :class:`BudgetExceeded`, :class:`DivergedError`, :class:`TrialTimeout`;
- policies: :class:`LayerBits`, ``Policy`` (layer name → bits), ``FP_BITS``, helpers;
- the cost model: :func:`model_cost`, :func:`profile_layers`, :class:`CostReport`;
- cost targets to optimise against: the task's limit (``ctx.limit``, a :class:`TaskLimit`:
  the absolute limit in BitOPs per image or weight bits, the W8A8 reference, the fixed
  layers' share, per-layer coefficients, ``check`` / ``slack`` of a policy), a space's per-layer
  :class:`CostTable` (``space.cost_table(arch)``: lookups, totals, fixed layers' share,
  numpy coefficients for LP / ILP) and the differentiable :func:`expected_cost` under
  per-layer bit probabilities (torch); a user's measured per-layer cost table (latency,
  energy) read from CSV or JSON and checked against a space: :class:`CostFile`,
  :func:`load_cost_file`, :func:`cost_file_from_table`, :class:`CostFileError`;
- data: :class:`DataSplits`, :func:`make_loader`, :func:`fixed_batch`;
- quantizers and quantized layers: :class:`QuantConfig` (which quantizers a layer uses,
  state sharing, bits; ``to_dict`` / ``from_dict``), one typed config per quantizer kind
  (:class:`QuantizerConfig`; :class:`LSQConfig`; :class:`KLLinearConfig`, HAQ's calibrated
  linear quantizer; :class:`DoReFaConfig` and :class:`PACTConfig`, DNAS's;
  :class:`LSQFullConfig`, LSQ on a supernet's full weight then sliced;
  :class:`BatchQuantConfig`, QFA's BatchQuant), :class:`Quantizer`,
  :func:`register_quantizer` (config type → quantizer class), :func:`list_quantizers`,
  :class:`QConv2d`, :class:`QLinear`, :class:`QuantLayer` (``set_bit_mixture`` for a
  weighted mixture of bit-widths, :class:`BitMixture`; ``set_branch_mixture`` for a
  weighted sum of (w, a) branches with their own weights, :class:`BranchMixture`),
  :func:`apply_policy`, :func:`quantize_model`, :func:`scale_quant_ranges` (the named
  layers' quantizer ranges × a factor: OQAT's bit inheritance), :func:`reset_quant_ranges`
  (re-initialised on first use: OQAT's ``inherit_steps="reinit"``), :func:`symmetric_minmax`
  (per-channel min/max quantization as a measurement: HAWQ-V3's Ω);
  ``QuantConfig(act_grid="unsigned")`` puts every quantized input on the unsigned grid;
- search spaces: :class:`SearchSpace`, :class:`ElasticSearchSpace`, :func:`get_space`;
  each declares where its layers' features are (``space.feature_taps``, a list of
  :class:`FeatureTap`) and its layers' shapes (``space.profiles``, :class:`LayerProfile`),
  and states the bits of its never-searched layers per role (:class:`FixedConvention`:
  ``space.fixed_roles``, ``space.fixed_policy``; another one with ``space.with_fixed``
  or ``Candidate(fixed=...)``) and builds layers with ``space.layer_quant(quant)``;
  :func:`fit_fixed` keeps a method's own convention (e.g. an FP stem) when the task's
  limit allows it and falls back to the space's otherwise (:class:`FixedFit`,
  :data:`FIT_MODES`);
- the toolkit on the context (every image charged to the budget): ``ctx.train``
  (the shared loop, extra :class:`Phase` s for alternating updates), ``ctx.finetune``,
  ``ctx.score`` (recalibrate + validation top-1), ``ctx.subnet`` / ``ctx.fp_supernet``
  (models with inherited weights), ``ctx.hessian_probe`` (per-layer Hessian-vector
  products, :class:`HessianProbe`), ``ctx.split``, ``ctx.offer`` (the answer so far);
- Hessian traces by Hutchinson's estimator: :func:`hutchinson_trace` (any ``hvp``),
  :func:`hutchinson_traces` (every target of a probe, round by round),
  :class:`TraceEstimate`, :func:`relative_standard_error` (the stopping test),
  :func:`twice_differentiable` (double backward through hard activations and depthwise
  convolutions);
- presets: :class:`Preset` and :class:`Recipe` (validated pydantic dataclasses), and a
  method's one typed config: a :func:`method_config` class (``<Method>Config``) as the
  method's ``config_class``, its defaults overridden by the preset's ``[methods.<name>]``
  section and then by ``--method-options`` (:meth:`Method.configure`), read as
  ``self.config`` (:func:`parse_section`, :class:`PresetError`);
- a generic evolutionary search over an elastic space's architectures: :func:`evolve`
  (:class:`EvolutionResult`, :class:`Scored`), with the method's own score and constraint;
- the frozen recipes: :func:`train`, :func:`evaluate`, :func:`recalibrate`,
  :func:`recalibrate_and_evaluate`, :func:`finetune_qat`, :func:`sandwich_step` with a
  :class:`SandwichSampler`, :func:`soft_cross_entropy`.

Inside the arena, modules import each other's submodules, never this package.
"""

from benchmark.arena.context import Context
from benchmark.arena.cost import (
    CostReport,
    LayerCost,
    LayerProfile,
    Reference,
    model_cost,
    profile_layers,
)
from benchmark.arena.cost_file import CostFile, CostFileError, cost_file_from_table, load_cost_file
from benchmark.arena.cost_table import CostTable, expected_cost
from benchmark.arena.data import DataError, DataSplits, fixed_batch, make_loader
from benchmark.arena.evolution import EvolutionResult, Scored, evolve
from benchmark.arena.hessian import (
    HessianProbe,
    TraceEstimate,
    hutchinson_trace,
    hutchinson_traces,
    relative_standard_error,
    twice_differentiable,
)
from benchmark.arena.limit import TaskLimit
from benchmark.arena.method import SEARCHES, Method
from benchmark.arena.policy import (
    FP_BITS,
    LayerBits,
    Policy,
    PolicyError,
    policy_from_dict,
    policy_to_dict,
    uniform_policy,
)
from benchmark.arena.presets import (
    Preset,
    PresetError,
    Recipe,
    method_config,
    parse_section,
    preset_schema,
)
from benchmark.arena.protocol import (
    Budget,
    BudgetExceeded,
    BudgetMeter,
    Candidate,
    Constraint,
    DivergedError,
    ProtocolError,
    SearchResult,
    Task,
    TrialTimeout,
    jsonable_arch,
)
from benchmark.arena.quant import (
    BatchQuantConfig,
    BitMixture,
    BranchMixture,
    DoReFaConfig,
    KLLinearConfig,
    LSQConfig,
    LSQFullConfig,
    PACTConfig,
    QConv2d,
    QLinear,
    QuantConfig,
    Quantizer,
    QuantizerConfig,
    QuantLayer,
    apply_policy,
    create_quantizer,
    list_quantizers,
    quant_layers,
    quantize_model,
    register_quantizer,
    reset_quant_ranges,
    scale_quant_ranges,
)
from benchmark.arena.quant.minmax import symmetric_minmax
from benchmark.arena.recipes.finetune import finetune_qat
from benchmark.arena.recipes.loop import Phase, StepLoss, TrainStats, train
from benchmark.arena.recipes.scoring import evaluate, recalibrate, recalibrate_and_evaluate
from benchmark.arena.recipes.supernet import SandwichSampler, sandwich_step, soft_cross_entropy
from benchmark.arena.spaces import (
    ElasticSearchSpace,
    FixedConvention,
    SearchSpace,
    SpaceError,
    get_space,
    list_spaces,
    register_space,
)
from benchmark.arena.spaces.fit import FIT_MODES, FixedFit, fit_fixed
from benchmark.arena.spaces.taps import FeatureTap

__all__ = [
    "FIT_MODES",
    "FP_BITS",
    "BatchQuantConfig",
    "BitMixture",
    "BranchMixture",
    "Budget",
    "BudgetExceeded",
    "BudgetMeter",
    "Candidate",
    "Constraint",
    "Context",
    "CostFile",
    "CostFileError",
    "CostReport",
    "CostTable",
    "DataError",
    "DataSplits",
    "DivergedError",
    "DoReFaConfig",
    "EvolutionResult",
    "ElasticSearchSpace",
    "FeatureTap",
    "FixedConvention",
    "FixedFit",
    "HessianProbe",
    "KLLinearConfig",
    "LSQConfig",
    "LSQFullConfig",
    "LayerBits",
    "LayerCost",
    "LayerProfile",
    "Method",
    "PACTConfig",
    "Phase",
    "Policy",
    "PolicyError",
    "Preset",
    "PresetError",
    "ProtocolError",
    "QConv2d",
    "QLinear",
    "QuantConfig",
    "QuantLayer",
    "Quantizer",
    "QuantizerConfig",
    "Recipe",
    "SandwichSampler",
    "Scored",
    "Reference",
    "SEARCHES",
    "SearchResult",
    "SearchSpace",
    "SpaceError",
    "StepLoss",
    "Task",
    "TaskLimit",
    "TrainStats",
    "TraceEstimate",
    "TrialTimeout",
    "apply_policy",
    "cost_file_from_table",
    "create_quantizer",
    "evaluate",
    "evolve",
    "expected_cost",
    "finetune_qat",
    "fit_fixed",
    "fixed_batch",
    "get_space",
    "hutchinson_trace",
    "hutchinson_traces",
    "jsonable_arch",
    "list_quantizers",
    "list_spaces",
    "load_cost_file",
    "make_loader",
    "model_cost",
    "method_config",
    "parse_section",
    "policy_from_dict",
    "policy_to_dict",
    "preset_schema",
    "profile_layers",
    "quant_layers",
    "quantize_model",
    "recalibrate",
    "recalibrate_and_evaluate",
    "register_quantizer",
    "register_space",
    "relative_standard_error",
    "sandwich_step",
    "reset_quant_ranges",
    "scale_quant_ranges",
    "symmetric_minmax",
    "soft_cross_entropy",
    "train",
    "twice_differentiable",
    "uniform_policy",
]
