"""Typed quantizer configs: one frozen dataclass per kind, registered by config type, dict
round trips, and the layer-level :class:`QuantConfig` that holds them."""

from __future__ import annotations

import json
import math
from dataclasses import FrozenInstanceError, dataclass
from typing import ClassVar

import pytest
import torch
from torch import Tensor

from benchmark.arena import LSQConfig, QuantConfig, QuantizerConfig, list_quantizers
from benchmark.arena.policy import LayerBits
from benchmark.arena.quant import (
    LSQQuantizer,
    QConv2d,
    QLinear,
    as_quantizer_config,
    create_quantizer,
    register_quantizer,
)
from benchmark.arena.quant import quantizer as quant_registry


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant_registry, "_QUANTIZERS", dict(quant_registry._QUANTIZERS))


# --------------------------------------------------------------------------- LSQConfig


def test_lsq_config_dict_form_and_round_trip() -> None:
    assert LSQConfig().to_dict() == {"kind": "lsq", "grad_scale": True}
    for config in (LSQConfig(), LSQConfig(grad_scale=False)):
        data = config.to_dict()
        assert QuantizerConfig.from_dict(data) == config  # dispatch on "kind"
        assert LSQConfig.from_dict(data) == config
        assert QuantizerConfig.from_dict(json.loads(json.dumps(data))) == config
    assert LSQConfig.from_dict({}) == LSQConfig()  # the subclass knows its kind


def test_lsq_config_is_frozen_and_typed() -> None:
    config = LSQConfig()
    with pytest.raises(FrozenInstanceError):
        config.grad_scale = False  # type: ignore[misc]
    with pytest.raises(TypeError, match="grad_scale"):
        LSQConfig(grad_scale="yes")  # type: ignore[arg-type]
    assert hash(LSQConfig()) == hash(LSQConfig())


def test_from_dict_errors_are_one_line() -> None:
    cases = [
        ({"kind": "pactt"}, "pactt"),
        ({"grad_scale": True}, "kind"),
        ({"kind": "lsq", "gradscale": False}, "gradscale"),
    ]
    for data, word in cases:
        with pytest.raises(ValueError) as info:
            QuantizerConfig.from_dict(data)
        assert word in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="grad_scale"):  # the message lists the options
        QuantizerConfig.from_dict({"kind": "lsq", "gradscale": False})


def test_as_quantizer_config_accepts_config_kind_and_dict() -> None:
    config = LSQConfig(grad_scale=False)
    assert as_quantizer_config(config) is config
    assert as_quantizer_config("lsq") == LSQConfig()
    assert as_quantizer_config({"kind": "lsq", "grad_scale": False}) == config
    with pytest.raises(TypeError):
        as_quantizer_config(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- QuantConfig


def test_quant_config_holds_typed_configs() -> None:
    default = QuantConfig()
    assert default.weight == LSQConfig() and default.act == LSQConfig()
    assert isinstance(default.weight, LSQConfig)
    # the string shorthand and the dict form are stored as the typed config
    assert QuantConfig(weight="lsq", act="lsq") == default
    assert QuantConfig(act={"kind": "lsq", "grad_scale": False}).act == LSQConfig(False)


def test_quant_config_round_trip_exactly() -> None:
    configs = [
        QuantConfig(),
        QuantConfig(per_bit_weight=True, per_bit_act=True),
        QuantConfig(act_grid="unsigned"),
        QuantConfig(weight=LSQConfig(grad_scale=False), bit_choices=(4, 2), per_bit_act=True),
    ]
    for config in configs:
        data = config.to_dict()
        assert QuantConfig.from_dict(data) == config
        text = json.dumps(data)
        assert QuantConfig.from_dict(json.loads(text)) == config
        assert json.dumps(QuantConfig.from_dict(json.loads(text)).to_dict()) == text
    assert QuantConfig().to_dict() == {
        "weight": {"kind": "lsq", "grad_scale": True},
        "act": {"kind": "lsq", "grad_scale": True},
        "per_bit_weight": False,
        "per_bit_act": False,
        "bit_choices": [2, 3, 4, 8],
        "act_grid": "layer",
    }
    assert QuantConfig.from_dict({}) == QuantConfig()


def test_quant_config_normalises_bits_and_rejects_bad_input() -> None:
    assert QuantConfig(bit_choices=(8, 2, 2, 32)).bit_choices == (2, 8)
    assert QuantConfig(bit_choices=(4, 2)) == QuantConfig(bit_choices=(2, 4))
    assert QuantConfig(bit_choices=(2, 3, 4)).with_bits((8, 32)).bit_choices == (2, 3, 4, 8)
    with pytest.raises(ValueError, match="bit_choices"):
        QuantConfig(bit_choices=(32,))
    with pytest.raises(ValueError, match="weight_kwargs"):  # the old untyped form is gone
        QuantConfig.from_dict({"weight": "lsq", "weight_kwargs": {}})
    with pytest.raises(ValueError, match="pactt"):
        QuantConfig(weight="pactt")


def test_quantizers_get_their_config() -> None:
    config = QuantConfig(weight=LSQConfig(grad_scale=False), per_bit_act=True)
    layer = QConv2d(3, 4, 3, quant=config)
    assert layer.weight_quantizer.config == LSQConfig(grad_scale=False)
    assert layer.act_quantizer.config == LSQConfig()
    assert not layer.weight_quantizer.per_bit and layer.act_quantizer.per_bit
    assert LSQQuantizer().config == LSQConfig()
    with pytest.raises(TypeError, match="LSQConfig"):
        LSQQuantizer(config=QuantizerConfig())


# --------------------------------------------------------------------------- LSQ options


def _step_grad(config: LSQConfig | None, x: Tensor, upstream: Tensor) -> float:
    q = LSQQuantizer(signed=True) if config is None else create_quantizer(config, signed=True)
    q(x, 4)
    with torch.no_grad():
        q.step.fill_(0.2)
    q(x, 4).backward(upstream)
    return float(q.step.grad)


def test_grad_scale_option_and_default_is_unchanged() -> None:
    torch.manual_seed(0)
    x, upstream = torch.randn(5, 40), torch.randn(5, 40)
    plain = _step_grad(None, x, upstream)
    assert _step_grad(LSQConfig(), x, upstream) == plain  # the default: bit-identical
    unscaled = _step_grad(LSQConfig(grad_scale=False), x, upstream)
    assert unscaled == pytest.approx(plain * math.sqrt(x.numel() * 7), rel=1e-5)


def test_default_layer_is_bit_identical_to_explicit_lsq() -> None:
    torch.manual_seed(1)
    a = QLinear(6, 3)
    b = QLinear(6, 3, quant=QuantConfig(weight=LSQConfig(), act=LSQConfig(grad_scale=True)))
    b.load_state_dict(a.state_dict())
    for layer in (a, b):
        layer.set_bits(LayerBits(3, 4))
    x = torch.randn(8, 6)
    out_a, out_b = a(x), b(x)
    assert torch.equal(out_a, out_b)
    out_a.sum().backward(), out_b.sum().backward()
    assert torch.equal(a.weight.grad, b.weight.grad)
    assert torch.equal(a.weight_quantizer.step.grad, b.weight_quantizer.step.grad)


# --------------------------------------------------------------------------- a new kind


@dataclass(frozen=True)
class _RoundConfig(QuantizerConfig):
    """A toy kind with one option: a fixed step (same unit as x)."""

    kind: ClassVar[str] = "round-test"
    step: float = 0.5
    levels: tuple[int, ...] = (1, 2)


def test_adding_a_kind_is_a_dataclass_a_class_and_one_registration(isolated_registry) -> None:
    @register_quantizer(_RoundConfig)
    class RoundQuantizer(quant_registry.Quantizer):
        def quantize(self, x: Tensor, bits: int) -> Tensor:
            return torch.round(x / self.config.step) * self.config.step

    assert "round-test" in list_quantizers() and "lsq" in list_quantizers()
    assert RoundQuantizer.config_type is _RoundConfig
    config = QuantConfig(act=_RoundConfig(step=0.25))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["act"] == {"kind": "round-test", "step": 0.25, "levels": [1, 2]}
    assert QuantConfig.from_dict(data) == config  # the tuple comes back as a tuple
    layer = QLinear(4, 2, bias=False, quant=config)
    assert isinstance(layer.act_quantizer, RoundQuantizer)
    layer.set_bits(LayerBits(32, 4))
    x = torch.randn(3, 4)
    torch.testing.assert_close(layer(x), (torch.round(x * 4) / 4) @ layer.weight.T)
    assert isinstance(create_quantizer("round-test"), RoundQuantizer)


def test_registration_errors(isolated_registry) -> None:
    with pytest.raises(TypeError, match="config dataclass"):
        register_quantizer("sign-test")  # type: ignore[arg-type]

    @dataclass(frozen=True)
    class NoKind(QuantizerConfig):
        pass

    with pytest.raises(ValueError, match="kind"):
        register_quantizer(NoKind)

    @dataclass(frozen=True)
    class SecondLSQ(QuantizerConfig):
        kind: ClassVar[str] = "lsq"

    class OtherLSQ(LSQQuantizer):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_quantizer(SecondLSQ)(OtherLSQ)

    @dataclass(frozen=True)
    class Unregistered(QuantizerConfig):
        kind: ClassVar[str] = "nowhere"

    with pytest.raises(ValueError, match="not registered"):
        create_quantizer(Unregistered())
