"""LSQ quantizer (as docs/methods/oqat.md states it), the quantizer registry and quantized
modules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.arena.policy import FP_BITS, LayerBits, PolicyError
from benchmark.arena.quant import (
    LSQQuantizer,
    QConv2d,
    QLinear,
    QuantConfig,
    apply_policy,
    copy_quant_state,
    create_quantizer,
    current_policy,
    list_quantizers,
    quant_layers,
    quantize_model,
    register_quantizer,
)
from benchmark.arena.quant import quantizer as quant_registry

BITS = (2, 3, 4, 8)


def grid(bits: int, signed: bool) -> tuple[int, int]:
    """The LSQ integer range, written from the spec (not from the library)."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def naive_lsq(x: Tensor, step: Tensor, qn: int, qp: int) -> Tensor:
    """LSQ written the plain way: autograd does the work, the round is a detach-trick STE.

    The step's gradient scale ``g = 1/sqrt(numel·Qp)`` uses the same trick as the LSQ paper's
    ``grad_scale``: forward value ``s``, backward gradient ``g·ds``.
    """
    g = 1.0 / math.sqrt(x.numel() * qp)
    s = step.abs()
    s = s * g + (s - s * g).detach()
    v = (x / s).clamp(qn, qp)
    v = v + (v.round() - v).detach()
    return v * s


def reference_step_grad(x: Tensor, s: float, grad: Tensor, qn: int, qp: int) -> float:
    """Hand-written LSQ step gradient: Σ grad·(round(v)−v) inside, Qn/Qp outside, times g."""
    v = x.double() / s
    term = torch.where(v < qn, float(qn), torch.where(v > qp, float(qp), v.round() - v))
    return float((grad.double() * term).sum()) / math.sqrt(x.numel() * qp)


def fresh(signed: bool | None, **kwargs) -> LSQQuantizer:
    return LSQQuantizer(signed=signed, **kwargs)


# --------------------------------------------------------------------------- forward grid


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_values_on_grid_and_all_levels_reachable(bits: int, signed: bool) -> None:
    qn, qp = grid(bits, signed)
    q = fresh(signed)
    q(torch.randn(1000), bits)  # initialise the step
    s = q.step_size(bits)
    # a wide input: well beyond both ends of the range, denser than the grid
    x = torch.linspace((qn - 5) * s if signed else -5 * s, (qp + 5) * s, 8 * (qp - qn + 10))
    out = q(x, bits)
    k = out / s
    assert torch.allclose(k, k.round(), atol=1e-4), "outputs are not integer multiples of s"
    levels = set(k.round().long().tolist())
    assert levels == set(range(qn, qp + 1))
    assert len(levels) == 2**bits
    # clipping: everything beyond the range lands on the end levels
    assert float(out.min().detach()) == pytest.approx(qn * s)
    assert float(out.max().detach()) == pytest.approx(qp * s)
    # monotone (a quantizer never reorders values)
    assert bool((out[1:] >= out[:-1]).all())


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_forward_matches_round_of_clamp(bits: int, signed: bool) -> None:
    qn, qp = grid(bits, signed)
    q = fresh(signed)
    x = torch.randn(4, 3, 5, 5) * 2
    out = q(x, bits)
    s = q.step_size(bits)
    expected = torch.clamp(x / s, qn, qp).round() * s
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("signed", [True, False])
def test_negative_step_uses_its_magnitude(signed: bool) -> None:
    x = torch.randn(200) * 4  # wide enough to clip at both ends
    pos, neg = fresh(signed), fresh(signed)
    pos(x[:20] / 4, 4), neg(x[:20] / 4, 4)
    with torch.no_grad():
        neg.step.neg_()
    assert float(neg.step.detach()) < 0
    torch.testing.assert_close(neg(x, 4), pos(x, 4))
    assert neg.step_size(4) == pytest.approx(pos.step_size(4))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_ste_gradient_wrt_x(bits: int, signed: bool) -> None:
    qn, qp = grid(bits, signed)
    q = fresh(signed)
    q(torch.randn(500), bits)
    s = q.step_size(bits)
    # points strictly inside and strictly outside the range (none on a boundary)
    inside_pts = torch.linspace(qn + 0.01, qp - 0.01, 50) * s
    outside_pts = torch.cat(
        [torch.linspace(qn - 9, qn - 0.3, 10), torch.linspace(qp + 0.3, qp + 9, 10)]
    )
    x = torch.cat([inside_pts, outside_pts * s]).requires_grad_()
    upstream = torch.randn_like(x)
    q(x, bits).backward(upstream)
    expected = torch.cat([upstream[:50], torch.zeros(20)])
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_step_gradient_matches_lsq_formula(bits: int, signed: bool) -> None:
    qn, qp = grid(bits, signed)
    q = fresh(signed)
    x = torch.randn(6, 40) * 1.5
    q(x, bits)
    with torch.no_grad():  # a step that clips a good share of the input on both sides
        q.step.fill_(1.5 / qp)
    upstream = torch.randn_like(x)
    q(x, bits).backward(upstream)
    s = q.step_size(bits)
    v = x / s
    assert bool((v > qp).any()) and (not signed or bool((v < qn).any()))
    expected = reference_step_grad(x, s, upstream, qn, qp)
    assert float(q.step.grad) == pytest.approx(expected, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("per_bit", [False, True])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_matches_naive_autograd_implementation(bits: int, signed: bool, per_bit: bool) -> None:
    qn, qp = grid(bits, signed)
    q = fresh(signed, per_bit=per_bit)
    x0 = torch.randn(3, 8, 7) * 2
    q(x0, bits)
    slot = q.slot(bits)
    step_ref = q.step.detach()[slot : slot + 1].clone().mul_(0.7).requires_grad_()
    with torch.no_grad():
        q.step[slot] = float(step_ref)
    x_lib = x0.clone().requires_grad_()
    x_ref = x0.clone().requires_grad_()
    upstream = torch.randn_like(x0)

    out_lib = q(x_lib, bits)
    out_ref = naive_lsq(x_ref, step_ref, qn, qp)
    (out_lib * upstream).sum().backward()
    (out_ref * upstream).sum().backward()

    torch.testing.assert_close(out_lib, out_ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(x_lib.grad != 0, x_ref.grad != 0)  # same inside/outside decisions
    torch.testing.assert_close(x_lib.grad, x_ref.grad)
    torch.testing.assert_close(q.step.grad[slot : slot + 1], step_ref.grad, rtol=1e-4, atol=1e-7)
    if per_bit:  # the other bit-widths' steps get no gradient
        others = [i for i in range(q.num_slots) if i != slot]
        assert float(q.step.grad[others].abs().sum()) == 0.0


def test_step_gradient_scale_depends_on_numel() -> None:
    """Same values, twice the tensor: the step's gradient grows by 2/sqrt(2) = sqrt(2)."""
    x = torch.randn(300)
    grads = []
    for data in (x, torch.cat([x, x])):
        q = fresh(True)
        q(x, 4)  # same initialisation
        q(data, 4).sum().backward()
        grads.append(float(q.step.grad))
    assert grads[1] / grads[0] == pytest.approx(math.sqrt(2), rel=1e-4)


# --------------------------------------------------------------------------- init


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_init_on_first_use_only(bits: int, signed: bool) -> None:
    _, qp = grid(bits, signed)
    q = fresh(signed)
    assert not bool(q.initialized.any())
    x = torch.randn(2, 16, 9, 9) * 0.3 + 0.1
    q(x, bits)
    expected = 2 * float(x.abs().mean()) / math.sqrt(qp)
    assert q.step_size(bits) == pytest.approx(expected, rel=1e-5)
    q(x * 50, bits)  # a second, very different input does not re-initialise
    assert q.step_size(bits) == pytest.approx(expected, rel=1e-5)


def test_init_does_not_record_autograd_history() -> None:
    q = fresh(True)
    x = torch.randn(100, requires_grad=True)
    q(x, 4).sum().backward()
    assert q.step.is_leaf and q.step.grad is not None


def test_full_precision_is_identity() -> None:
    q = fresh(None)
    x = torch.randn(5, 7, requires_grad=True)
    out = q(x, FP_BITS)
    assert torch.equal(out, x)
    upstream = torch.randn_like(x)
    out.backward(upstream)
    assert torch.equal(x.grad, upstream)
    assert q.step.grad is None
    assert not bool(q.initialized.any())  # FP calls never initialise the step
    assert q.signed is None  # nor decide the sign


def test_per_bit_keeps_separate_steps() -> None:
    q = fresh(True, per_bit=True)
    assert q.step.numel() == len(BITS)
    x = torch.randn(400)
    q(x, 4)
    assert q.initialized.tolist() == [False, False, True, False]
    q(x, 2)
    assert q.initialized.tolist() == [True, False, True, False]
    mean = float(x.abs().mean())
    assert q.step_size(4) == pytest.approx(2 * mean / math.sqrt(7), rel=1e-5)
    assert q.step_size(2) == pytest.approx(2 * mean / math.sqrt(1), rel=1e-5)
    with torch.no_grad():
        q.step[q.slot(2)] = 0.123
    assert q.step_size(4) == pytest.approx(2 * mean / math.sqrt(7), rel=1e-5)


def test_shared_step_across_bits() -> None:
    q = fresh(True, per_bit=False)
    assert q.step.numel() == 1
    x = torch.randn(400)
    q(x, 4)
    s4 = q.step_size(4)
    q(x * 10, 2)  # a different bit-width uses (and does not re-initialise) the same step
    assert q.step_size(2) == s4
    assert {q.slot(b) for b in BITS} == {0}
    out = q(x, 2)
    k = out / s4
    assert set(k.round().long().tolist()) <= {-2, -1, 0, 1}
    with torch.no_grad():
        q.step.fill_(0.5)
    assert q.step_size(2) == q.step_size(8) == 0.5


def test_signed_none_decides_from_first_input() -> None:
    neg = fresh(None)
    neg(torch.tensor([-1.0, 0.5, 2.0]), 4)
    assert neg.signed is True
    assert neg.grid(4) == (-8, 7)

    pos = fresh(None)
    pos(torch.rand(50) + 0.01, 4)
    assert pos.signed is False
    assert pos.grid(4) == (0, 15)
    # the decision sticks: later negatives are clipped at 0 by the unsigned grid
    assert float(pos(torch.tensor([-3.0, -1.0]), 4).detach().abs().max()) == 0.0

    # the decision is state: it travels with state_dict
    copy = fresh(None)
    copy.load_state_dict(neg.state_dict())
    assert copy.signed is True


@pytest.mark.parametrize("bad", [1, 5, 6, 16])
def test_unknown_bits_raise(bad: int) -> None:
    q = fresh(True)
    with pytest.raises(ValueError, match=f"{bad}-bit"):
        q(torch.randn(10), bad)
    narrow = fresh(True, bit_choices=(4,))
    with pytest.raises(ValueError):
        narrow(torch.randn(10), 2)
    assert torch.equal(narrow(torch.ones(3), 32), torch.ones(3))


# --------------------------------------------------------------------------- registry


def test_registry_and_create() -> None:
    assert "lsq" in list_quantizers()
    q = create_quantizer("lsq", signed=False, bit_choices=(2, 4), per_bit=True)
    assert isinstance(q, LSQQuantizer)
    assert q.signed is False and q.bit_choices == (2, 4) and q.step.numel() == 2


def test_unknown_quantizer_is_a_clear_error() -> None:
    with pytest.raises(ValueError) as info:
        create_quantizer("pactt")
    message = str(info.value)
    assert "pactt" in message and "lsq" in message and "\n" not in message
    with pytest.raises(ValueError, match="pactt"):
        QConv2d(3, 4, 3, quant=QuantConfig(weight="pactt"))


def test_register_custom_quantizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant_registry, "_QUANTIZERS", dict(quant_registry._QUANTIZERS))

    @dataclass(frozen=True)
    class SignConfig(quant_registry.QuantizerConfig):
        kind: ClassVar[str] = "sign-test"

    @register_quantizer(SignConfig)
    class SignQuantizer(quant_registry.Quantizer):
        def quantize(self, x: Tensor, bits: int) -> Tensor:
            return torch.sign(x)

    assert "sign-test" in list_quantizers()
    layer = QLinear(4, 2, bias=False, quant=QuantConfig(weight="sign-test", act="lsq"))
    assert isinstance(layer.weight_quantizer, SignQuantizer)
    assert layer.weight_quantizer.signed is True  # weights are always signed
    layer.set_bits(LayerBits(2, 32))
    x = torch.randn(3, 4)
    torch.testing.assert_close(layer(x), x @ torch.sign(layer.weight).T)


def test_quant_config_round_trip() -> None:
    config = QuantConfig(per_bit_weight=True, bit_choices=(2, 4))
    data = config.to_dict()
    assert data["bit_choices"] == [2, 4]
    assert QuantConfig.from_dict(data) == config
    q = config.make_weight_quantizer()
    assert q.per_bit and q.signed is True and q.bit_choices == (2, 4)
    a = config.make_act_quantizer(None)
    assert not a.per_bit and a.signed is None


# --------------------------------------------------------------------------- modules


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 1, "padding": 1, "bias": False},
        {"stride": 2, "padding": 0, "bias": True},
        {"stride": 1, "padding": 2, "dilation": 2, "bias": True},
        {"stride": 1, "padding": 1, "groups": 4, "bias": False},
    ],
)
def test_qconv2d_full_precision_equals_conv2d(kwargs: dict) -> None:
    ref = nn.Conv2d(8, 12, 3, **kwargs)
    layer = QConv2d(8, 12, 3, **kwargs)
    layer.load_state_dict(ref.state_dict(), strict=False)
    assert layer.w_bits == layer.a_bits == FP_BITS
    x = torch.randn(2, 8, 11, 11, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out, expected = layer(x), ref(x2)
    assert torch.equal(out, expected)
    out.sum().backward(), expected.sum().backward()
    assert torch.equal(x.grad, x2.grad)
    assert torch.equal(layer.weight.grad, ref.weight.grad)


def test_qlinear_full_precision_equals_linear() -> None:
    layer = QLinear(16, 5)
    x = torch.randn(7, 16)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    no_bias = QLinear(16, 5, bias=False)
    assert no_bias.bias is None
    assert torch.equal(no_bias(x), F.linear(x, no_bias.weight))


def test_quantized_layer_uses_both_quantizers() -> None:
    layer = QConv2d(4, 6, 3, padding=1, act_signed=False)
    layer.set_bits(LayerBits(3, 4))
    x = torch.rand(2, 4, 8, 8)
    out = layer(x)
    w_q = layer.weight_quantizer(layer.weight, 3)
    x_q = layer.act_quantizer(x, 4)
    torch.testing.assert_close(out, F.conv2d(x_q, w_q, layer.bias, padding=1))
    assert not torch.allclose(out, F.conv2d(x, layer.weight, layer.bias, padding=1), atol=1e-3)
    # weights on the signed 3-bit grid, inputs on the unsigned 4-bit grid
    sw, sa = layer.weight_quantizer.step_size(3), layer.act_quantizer.step_size(4)
    assert set((w_q / sw).round().long().unique().tolist()) <= set(range(-4, 4))
    assert set((x_q / sa).round().long().unique().tolist()) <= set(range(0, 16))
    assert "w_bits=3" in repr(layer) and "a_bits=4" in repr(layer)


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.pw(F.relu(self.dw(self.stem(x)))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_apply_policy_and_current_policy() -> None:
    model = quantize_model(SmallNet())
    names = list(quant_layers(model))
    assert names == ["stem.0", "dw", "pw", "head"]
    assert current_policy(model) == {n: LayerBits(32, 32) for n in names}
    apply_policy(model, {"dw": LayerBits(4, 8), "head": LayerBits(8, 2)})
    assert model.dw.bits == LayerBits(4, 8) and model.head.bits == LayerBits(8, 2)
    assert model.pw.bits == LayerBits(32, 32)
    with pytest.raises(PolicyError, match="stem.1"):
        apply_policy(model, {"stem.1": LayerBits(4, 4)})  # the ReLU is not a quantized layer
    with pytest.raises(PolicyError, match="nope"):
        apply_policy(model, {"nope": LayerBits(4, 4)})
    apply_policy(model, {"nope": LayerBits(4, 4), "pw": LayerBits(2, 2)}, strict=False)
    assert model.pw.bits == LayerBits(2, 2)


def test_quantize_small_model_keeps_outputs_and_weights() -> None:
    model = SmallNet().eval()
    x = torch.randn(3, 3, 12, 12)
    expected = model(x)
    weights = {n: p for n, p in model.named_parameters()}
    quantize_model(model)
    assert isinstance(model.dw, QConv2d) and model.dw.groups == 8 and model.dw.bias is None
    assert isinstance(model.head, QLinear)
    for name, p in model.named_parameters():
        if "_quantizer." not in name:
            assert p is weights[name]  # the same tensors, not copies
    assert torch.equal(model(x), expected)
    apply_policy(model, {n: LayerBits(4, 4) for n in quant_layers(model)})
    out4 = model(x)
    assert out4.shape == expected.shape and bool(torch.isfinite(out4).all())
    assert not torch.allclose(out4, expected, atol=1e-4)


def test_quantize_model_include_filter_and_idempotence() -> None:
    model = quantize_model(SmallNet(), include=lambda name, m: isinstance(m, nn.Conv2d))
    assert set(quant_layers(model)) == {"stem.0", "dw", "pw"}
    assert type(model.head) is nn.Linear
    quantize_model(model)  # already quantized layers stay as they are
    assert set(quant_layers(model)) == {"stem.0", "dw", "pw", "head"}


def test_quantize_torchvision_resnet18() -> None:
    model = torchvision.models.resnet18(num_classes=10).eval()  # random init, no download
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    n_layers = sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())
    quantize_model(model)
    layers = quant_layers(model)
    assert len(layers) == n_layers == 21
    assert "layer2.0.downsample.0" in layers and "fc" in layers
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())
    assert torch.equal(model(x), expected)
    apply_policy(model, {n: LayerBits(8, 8) for n in layers})
    out8 = model(x)
    assert not torch.equal(out8, expected)
    assert torch.allclose(out8.softmax(1), expected.softmax(1), atol=0.1)


def test_copy_quant_state() -> None:
    src, dst = quantize_model(SmallNet()), quantize_model(SmallNet())
    apply_policy(src, {n: LayerBits(4, 4) for n in quant_layers(src)})
    src(torch.randn(2, 3, 8, 8))
    copy_quant_state(src, dst)
    for name, layer in quant_layers(src).items():
        other = quant_layers(dst)[name]
        assert torch.equal(other.weight_quantizer.step, layer.weight_quantizer.step)
        assert torch.equal(other.act_quantizer.step, layer.act_quantizer.step)
        assert other.act_quantizer.signed == layer.act_quantizer.signed
        assert bool(other.weight_quantizer.initialized.all())
