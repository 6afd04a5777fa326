"""The mixed-bit hooks of quantized layers (DNAS's super-net): ``QuantLayer.set_bit_mixture``
(shared weight, one convolution), ``set_branch_mixture`` ((w, a) branches, own weights) and
``clear_bit_mixture``."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from benchmark.arena import BitMixture, QuantConfig, get_space
from benchmark.arena.policy import LayerBits
from benchmark.arena.quant import QConv2d, QLinear, QuantLayer, quant_layers

W_BITS = (2, 4, 8, 32)
A_BITS = (3, 8, 32)
CONFIGS = [QuantConfig(), QuantConfig(per_bit_weight=True, per_bit_act=True)]
IDS = ["shared", "per-bit"]


def conv_layer(quant: QuantConfig) -> QConv2d:
    torch.manual_seed(0)
    layer = QConv2d(4, 6, 3, padding=1, stride=2, bias=True, quant=quant, act_signed=False)
    initialise(layer, torch.rand(2, 4, 9, 9))
    return layer


def linear_layer(quant: QuantConfig) -> QLinear:
    torch.manual_seed(0)
    layer = QLinear(5, 3, quant=quant, act_signed=True)
    initialise(layer, torch.randn(4, 5))
    return layer


def initialise(layer: QuantLayer, x: Tensor) -> None:
    """Run every bit-width once, so quantizer state (LSQ steps) is set before comparing."""
    for w, a in itertools.product(W_BITS, A_BITS):
        layer.set_bits(LayerBits(w, a))
        layer(x)


def op(layer: QuantLayer, x: Tensor, weight: Tensor) -> Tensor:
    """The layer's own convolution / matrix product on already quantized tensors, no bias."""
    if isinstance(layer, QConv2d):
        return layer._conv_forward(x, weight, None)
    return F.linear(x, weight)


def one_hot(n: int, k: int) -> Tensor:
    return F.one_hot(torch.tensor(k), n).float()


def explicit_sum(layer: QuantLayer, x: Tensor, w_probs: Tensor, a_probs: Tensor) -> Tensor:
    """``Σ_ij p_w,i·p_a,j·op(Q_aj(x), Q_wi(W))``: one convolution per (w, a) pair."""
    total = 0
    for (i, w), (j, a) in itertools.product(enumerate(W_BITS), enumerate(A_BITS)):
        branch = op(layer, layer.act_quantizer(x, a), layer.weight_quantizer(layer.weight, w))
        total = total + w_probs[i] * a_probs[j] * branch
    bias = layer.bias.view(1, -1, *[1] * (total.dim() - 2))  # added once, outside the mixture
    return total + bias


@pytest.mark.parametrize("make", [conv_layer, linear_layer], ids=["conv", "linear"])
@pytest.mark.parametrize("quant", CONFIGS, ids=IDS)
def test_one_hot_equals_the_plain_layer_exactly(make, quant: QuantConfig) -> None:
    layer = make(quant)
    x = torch.rand(2, 4, 9, 9) if isinstance(layer, QConv2d) else torch.randn(4, 5)
    for (i, w), (j, a) in itertools.product(enumerate(W_BITS), enumerate(A_BITS)):
        layer.clear_bit_mixture()
        layer.set_bits(LayerBits(w, a))
        layer.zero_grad()
        plain = layer(x)
        plain.square().sum().backward()
        plain_grad = layer.weight.grad.clone()

        layer.set_bits(LayerBits(32, 32))  # ignored while a mixture is set
        layer.set_bit_mixture(W_BITS, one_hot(len(W_BITS), i), A_BITS, one_hot(len(A_BITS), j))
        layer.zero_grad()
        mixed = layer(x)
        mixed.square().sum().backward()
        # exact: the other branches contribute exact zeros (0·Q), and q·1 + 0 = q
        assert torch.equal(mixed, plain), (w, a)
        assert torch.equal(layer.weight.grad, plain_grad), (w, a)


@pytest.mark.parametrize("make", [conv_layer, linear_layer], ids=["conv", "linear"])
@pytest.mark.parametrize("quant", CONFIGS, ids=IDS)
def test_mixture_equals_the_explicit_sum_over_convs(make, quant: QuantConfig) -> None:
    layer = make(quant)
    x = torch.rand(2, 4, 9, 9) if isinstance(layer, QConv2d) else torch.randn(4, 5)
    torch.manual_seed(3)
    w_logits = torch.randn(len(W_BITS), requires_grad=True)
    a_logits = torch.randn(len(A_BITS), requires_grad=True)
    upstream = None

    grads = []
    for use_hook in (True, False):
        w_probs, a_probs = w_logits.softmax(0), a_logits.softmax(0)
        layer.zero_grad()
        w_logits.grad = a_logits.grad = None
        if use_hook:
            layer.set_bit_mixture(W_BITS, w_probs, A_BITS, a_probs)
            out = layer(x)
            layer.clear_bit_mixture()
        else:
            out = explicit_sum(layer, x, w_probs, a_probs)
        upstream = torch.randn_like(out) if upstream is None else upstream
        (out * upstream).sum().backward()
        grads.append(
            (out.detach(), w_logits.grad.clone(), a_logits.grad.clone(), layer.weight.grad.clone())
        )
    (out_h, gw_h, ga_h, gW_h), (out_e, gw_e, ga_e, gW_e) = grads
    torch.testing.assert_close(out_h, out_e, rtol=1e-5, atol=1e-5)
    # gradients reach the probabilities (through the softmax, to the logits) and the weight
    assert float(gw_h.abs().sum()) > 0 and float(ga_h.abs().sum()) > 0
    torch.testing.assert_close(gw_h, gw_e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ga_h, ga_e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gW_h, gW_e, rtol=1e-4, atol=1e-5)
    # the quantizers' state is trained through the mixture too
    assert layer.weight_quantizer.step.grad is not None


def test_gradient_reaches_probability_leaves_and_clear_restores() -> None:
    layer = conv_layer(QuantConfig())
    x = torch.rand(2, 4, 9, 9)
    layer.set_bits(LayerBits(4, 8))
    before = layer(x).detach()
    w_probs = torch.tensor([0.1, 0.6, 0.2, 0.1], requires_grad=True)
    a_probs = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64, requires_grad=True)
    layer.set_bit_mixture(W_BITS, w_probs, A_BITS, a_probs)
    assert isinstance(layer.bit_mixture, BitMixture)
    out = layer(x)
    assert out.dtype == x.dtype  # float64 weights do not change the layer's dtype
    out.sum().backward()
    assert w_probs.grad is not None and bool((w_probs.grad != 0).all())
    assert a_probs.grad is not None and bool((a_probs.grad != 0).all())
    # ∂out/∂p_w,i = Σ_j p_a,j·op(Q_aj(x), Q_wi(W)) summed: check one entry by hand
    with torch.no_grad():
        wq = layer.weight_quantizer(layer.weight, W_BITS[1])
        xq = sum(float(a_probs[j]) * layer.act_quantizer(x, a) for j, a in enumerate(A_BITS))
        expected = float(F.conv2d(xq, wq, None, stride=2, padding=1).sum())
    assert float(w_probs.grad[1]) == pytest.approx(expected, rel=1e-4)
    layer.clear_bit_mixture()
    assert layer.bit_mixture is None and layer.bits == LayerBits(4, 8)
    assert torch.equal(layer(x), before)
    assert not any("mixture" in k for k in layer.state_dict())  # not saved with the model


def test_bad_mixtures_are_rejected() -> None:
    layer = QLinear(3, 2)
    p2, p3 = torch.ones(2) / 2, torch.ones(3) / 3
    with pytest.raises(ValueError, match="w_bits"):
        layer.set_bit_mixture([2, 4, 8], p2, [8], torch.ones(1))
    with pytest.raises(ValueError, match="a_bits"):
        layer.set_bit_mixture([2, 4], p2, [4, 8], torch.ones(1, 2))
    with pytest.raises(ValueError, match="distinct"):
        layer.set_bit_mixture([4, 4], p2, [8], torch.ones(1))
    with pytest.raises(ValueError, match="floating"):
        layer.set_bit_mixture([2, 4], torch.tensor([0, 1]), [8], torch.ones(1))
    with pytest.raises(ValueError, match="5-bit"):  # no quantizer state for 5 bits
        layer.set_bit_mixture([2, 5, 8], p3, [8], torch.ones(1))
    assert layer.bit_mixture is None  # a rejected mixture is not set


def test_mixture_on_the_mbv3_supernet_layers() -> None:
    """The hook works on the supernet's dynamic (sliced) convs too."""
    space = get_space("mbv3-cifar")
    torch.manual_seed(0)
    supernet = space.build_supernet().eval()
    arch = space.smallest_arch
    space.set_active(supernet, arch, "w4a3")
    x = torch.randn(2, 3, 32, 32)
    plain = supernet(x)
    searchable = set(space.searchable_layers(arch))
    layers = {n: m for n, m in quant_layers(supernet).items() if n in searchable}
    bits = (2, 3, 4)
    for layer in layers.values():
        layer.set_bit_mixture(bits, one_hot(3, 2), bits, one_hot(3, 1))
    assert torch.equal(supernet(x), plain)
    w_logits = torch.zeros(3, requires_grad=True)
    for layer in layers.values():
        layer.set_bit_mixture(bits, w_logits.softmax(0), bits, one_hot(3, 1))
    supernet(x).sum().backward()
    assert w_logits.grad is not None and float(w_logits.grad.abs().sum()) > 0


# --- branch mixtures: (w, a) branches with their own weights -----------------------------
PAIRS = [(2, 3), (4, 3), (8, 32), (32, 8), (4, 8)]


def branch_weights(layer: QuantLayer, n: int) -> list[Tensor]:
    torch.manual_seed(7)
    return [
        (layer.weight.detach() + 0.05 * torch.randn_like(layer.weight)).requires_grad_()
        for _ in range(n)
    ]


def explicit_branches(layer: QuantLayer, x: Tensor, probs: Tensor, weights) -> Tensor:
    """``Σ_k m_k·op(Q_ak(x), Q_wk(W_k))``: one convolution per branch, bias added once."""
    total = 0
    for k, (w, a) in enumerate(PAIRS):
        own = layer.weight if weights is None else weights[k]
        branch = op(layer, layer.act_quantizer(x, a), layer.weight_quantizer(own, w))
        total = total + probs[k] * branch
    return total + layer.bias.view(1, -1, *[1] * (total.dim() - 2))


@pytest.mark.parametrize("make", [conv_layer, linear_layer], ids=["conv", "linear"])
@pytest.mark.parametrize("own", [False, True], ids=["layer-weight", "own-weights"])
def test_branch_mixture_equals_one_op_per_branch(make, own: bool) -> None:
    layer = make(QuantConfig(per_bit_weight=True, per_bit_act=True))
    x = torch.rand(2, 4, 9, 9) if isinstance(layer, QConv2d) else torch.randn(4, 5)
    weights = branch_weights(layer, len(PAIRS)) if own else None
    logits = torch.randn(len(PAIRS), generator=torch.Generator().manual_seed(2)).requires_grad_()
    upstream = None
    grads = []
    for use_hook in (True, False):
        probs = logits.softmax(0)
        for t in (logits, layer.weight, *(weights or [])):
            t.grad = None
        if use_hook:
            layer.set_branch_mixture(PAIRS, probs, weights)
            assert layer.branch_mixture is not None and layer.bit_mixture is None
            out = layer(x)
            layer.clear_bit_mixture()
        else:
            out = explicit_branches(layer, x, probs, weights)
        upstream = torch.randn_like(out) if upstream is None else upstream
        (out * upstream).sum().backward()
        leaves = (logits, layer.weight, *(weights or []))
        grads.append((out.detach(), [None if t.grad is None else t.grad.clone() for t in leaves]))
    (out_h, g_h), (out_e, g_e) = grads
    torch.testing.assert_close(out_h, out_e, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_h, g_e, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert float(g_h[0].abs().sum()) > 0  # the mixing weights learn
    if own:  # the layer's own weight takes no part; each branch weight gets its gradient
        assert g_h[1] is None and all(float(g.abs().sum()) > 0 for g in g_h[2:])


@pytest.mark.parametrize("make", [conv_layer, linear_layer], ids=["conv", "linear"])
def test_one_hot_branch_mixture_equals_the_plain_layer(make) -> None:
    """Up to float rounding: the bias is added after the convolution, not inside it."""
    layer = make(QuantConfig(per_bit_weight=True, per_bit_act=True))
    x = torch.rand(2, 4, 9, 9) if isinstance(layer, QConv2d) else torch.randn(4, 5)
    for k, (w, a) in enumerate(PAIRS):
        layer.clear_bit_mixture()
        layer.set_bits(LayerBits(w, a))
        plain = layer(x)
        layer.set_branch_mixture(PAIRS, one_hot(len(PAIRS), k))
        torch.testing.assert_close(layer(x), plain, rtol=1e-6, atol=1e-6)
    layer.clear_bit_mixture()
    assert layer.branch_mixture is None and not any("mixture" in k for k in layer.state_dict())


def test_bad_branch_mixtures_are_rejected() -> None:
    layer = QLinear(3, 2)
    p2 = torch.ones(2) / 2
    with pytest.raises(ValueError, match="distinct"):
        layer.set_branch_mixture([(2, 2), (2, 2)], p2)
    with pytest.raises(ValueError, match="1-D tensor of 2"):
        layer.set_branch_mixture([(2, 2), (4, 4)], torch.ones(3))
    with pytest.raises(ValueError, match="2 weight tensors"):
        layer.set_branch_mixture([(2, 2), (4, 4)], p2, [layer.weight])
    with pytest.raises(ValueError, match="shape"):
        layer.set_branch_mixture([(2, 2), (4, 4)], p2, [layer.weight, torch.ones(3, 3)])
    with pytest.raises(ValueError, match="5-bit"):
        layer.set_branch_mixture([(2, 2), (5, 4)], p2)
    assert layer.branch_mixture is None
    layer.set_bit_mixture([2, 4], p2, [8], torch.ones(1))
    layer.set_branch_mixture([(2, 2), (4, 4)], p2)  # replaces the bit mixture
    assert layer.bit_mixture is None and layer.branch_mixture is not None
    supernet = get_space("mbv3-cifar").build_supernet()  # dynamic layers: their own forward
    dynamic = quant_layers(supernet)["blocks.1.pw_expand"]
    with pytest.raises(TypeError, match="runs no branch mixture"):
        dynamic.set_branch_mixture([(2, 2), (4, 4)], p2)
