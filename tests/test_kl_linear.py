"""The KL-calibrated linear quantizer (HAQ's): the KL search against a direct computation,
the clip rule by bits, the grids, the gradients, the registry and the typed config."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmark.arena import KLLinearConfig, QConv2d, QuantConfig, list_quantizers
from benchmark.arena.quant import create_quantizer, kl_clip
from benchmark.arena.quant.kl_linear import MAX_BINS, MIN_BINS


def kl_clip_direct(values: np.ndarray, bits: int, signed: bool) -> float:
    """The same criterion, one candidate at a time, written out plainly."""
    values = values.ravel().astype(np.float64)
    top = values.max()
    groups = 2 ** (bits - 1) if signed else 2**bits
    n_bins = min(max(int(math.sqrt(values.size)), MIN_BINS), MAX_BINS)
    hist = np.histogram(values, bins=n_bins, range=(0.0, top))[0].astype(np.float64)
    best, best_clip = math.inf, top
    for kept in range(groups, n_bins + 1):
        p = hist[:kept].copy()
        p[-1] += hist[kept:].sum()
        q = np.zeros(kept)
        edges = [(k * kept) // groups for k in range(groups + 1)]
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            nonempty = p[lo:hi] > 0
            if nonempty.any():
                q[lo:hi][nonempty] = hist[lo:hi].sum() / nonempty.sum()
        if (q[p > 0] <= 0).any():
            continue  # P has mass where Q has none: infinite divergence
        pn, qn = p / p.sum(), q / q.sum()
        mask = pn > 0
        divergence = float((pn[mask] * np.log(pn[mask] / qn[mask])).sum())
        if divergence < best - 1e-12:
            best, best_clip = divergence, kept * top / n_bins
    return best_clip


@pytest.mark.parametrize(
    ("shape", "bits", "signed"),
    [((4000,), 2, True), ((4000,), 3, True), ((20000,), 4, True), ((9000,), 2, False),
     ((9000,), 4, False), ((300,), 3, True)],
)  # fmt: skip
def test_kl_search_matches_a_direct_computation(shape, bits: int, signed: bool) -> None:
    rng = np.random.default_rng(bits * 10 + signed)
    x = rng.laplace(0, 0.05, shape) if signed else np.maximum(rng.normal(0.5, 1.0, shape), 0)
    mags = np.abs(x) if signed else x
    got = kl_clip(torch.tensor(mags, dtype=torch.float32), bits, signed)
    want = kl_clip_direct(mags.astype(np.float32), bits, signed)
    assert got == pytest.approx(want, rel=1e-5)


def test_clip_rule_by_bits_and_its_cap() -> None:
    torch.manual_seed(0)
    w = torch.distributions.Laplace(0.0, 0.05).sample((64, 32, 3, 3))
    q = create_quantizer(KLLinearConfig(), signed=True, bit_choices=(2, 3, 4, 5, 8))
    top = float(w.abs().max())
    clips = {b: (q(w, b), q.clip_value(b))[1] for b in (2, 3, 4, 5, 8)}
    assert clips[5] == clips[8] == pytest.approx(top)  # max |w| from 5 bits
    assert clips[2] < clips[3] < clips[4] < top  # KL below: tighter at fewer bits
    # the KL clip quantizes a heavy-tailed tensor better than max |w| at low bits
    for b in (2, 3):
        s_kl, s_max = clips[b] / (2 ** (b - 1) - 1), top / (2 ** (b - 1) - 1)
        err_kl = ((torch.round(w.clamp(-clips[b], clips[b]) / s_kl) * s_kl - w) ** 2).mean()
        err_max = ((torch.round(w / s_max) * s_max - w) ** 2).mean()
        assert err_kl < err_max
    capped = create_quantizer(KLLinearConfig(learn_clip=True, clip_init=6.0), signed=False)
    capped(torch.linspace(0, 50, 1000), 8)
    assert capped.clip_value(8) == 6.0


def test_grids_and_gradients() -> None:
    torch.manual_seed(1)
    w = torch.randn(16, 8, 3, 3, requires_grad=True)
    wq = create_quantizer(KLLinearConfig(), signed=True, bit_choices=(2, 3, 4))
    out = wq(w, 3)
    c = wq.clip_value(3)
    values = torch.unique(out.detach())
    assert len(values) <= 7 and float(values.abs().max()) <= c * (1 + 1e-6)  # ±3 steps of c/3
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through, clipped or not
    assert not wq.clip.requires_grad

    auto = create_quantizer(KLLinearConfig(learn_clip=True, clip_init=6.0), bit_choices=(2, 4))
    auto(torch.linspace(-1, 3, 400), 4)
    assert auto.signed is True  # decided on the first input: it had negatives
    act = create_quantizer(KLLinearConfig(learn_clip=True, clip_init=6.0), signed=False)
    x = torch.cat([torch.linspace(0.01, 3, 400), torch.full((100,), 9.0)]).requires_grad_()
    y = act(x, 4)
    c = act.clip_value(4)
    assert len(torch.unique(y.detach())) <= 16 and float(y.detach().max()) <= c * (1 + 1e-6)
    y.sum().backward()
    above = x.detach() > c
    assert 0 < int(above.sum()) < len(x)
    assert float(act.clip.grad[0]) == float(above.sum())  # PACT: dy/dc = 1 where x > c
    assert torch.equal(x.grad[above], torch.zeros(int(above.sum())))  # clipped: no gradient
    assert torch.equal(x.grad[~above], torch.ones(int((~above).sum())))


def test_weights_recalibrate_for_new_bits_learned_clips_do_not() -> None:
    torch.manual_seed(2)
    w = torch.distributions.Laplace(0.0, 0.05).sample((4000,))
    q = create_quantizer(KLLinearConfig(), signed=True, bit_choices=(2, 4))
    q(w, 2)
    at_two = q.clip_value(2)
    q(w, 4)  # one shared slot: recalibrated for 4 bits
    assert q.clip_value(4) > at_two and int(q.calibrated_bits[0]) == 4
    learned = create_quantizer(KLLinearConfig(learn_clip=True), signed=True, bit_choices=(2, 4))
    learned(w, 2)
    kept = learned.clip_value(2)
    learned(w, 4)
    assert learned.clip_value(4) == kept  # a learned clip is not reset


def test_registered_with_a_typed_config_that_round_trips() -> None:
    assert "kl_linear" in list_quantizers()
    quant = QuantConfig(weight=KLLinearConfig(), act=KLLinearConfig(learn_clip=True, clip_init=6.0))
    data = json.loads(json.dumps(quant.to_dict()))
    assert data["act"] == {"kind": "kl_linear", "kl_below_bits": 5, "learn_clip": True,
                           "clip_init": 6.0}  # fmt: skip
    assert QuantConfig.from_dict(data) == quant
    layer = QConv2d(3, 4, 3, quant=quant)
    layer.w_bits = layer.a_bits = 4
    assert layer(torch.rand(2, 3, 8, 8)).shape == (2, 4, 6, 6)
    for bad, error in (
        ({"kl_below_bits": 0}, ValueError),
        ({"kl_below_bits": 4.5}, TypeError),
        ({"learn_clip": 1}, TypeError),
        ({"clip_init": -1.0}, ValueError),
        ({"clip_init": math.nan}, TypeError),
    ):
        with pytest.raises(error):
            KLLinearConfig(**bad)
