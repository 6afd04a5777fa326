"""HAWQ-V3's BitOPs of torchvision ResNet-18 at 224×224, by mpqbench's cost model.

HAWQ-V3's model zoo reports FP 1858 G, W8A8 116 G and W4A4 34 G (BitOPs = MACs·b_w·b_a).
This script computes the same three with :func:`benchmark.arena.model_cost` on the
torchvision model built without weights (no download), and W4A4 twice: every layer at 4
bits, and with the first conv and the classifier kept at 8 bits (HAWQ-V3's convention for
its W4A4 models). Run: ``python scripts/cost_resnet18.py`` (CPU, ~2 s).
"""

from __future__ import annotations

import torchvision

from benchmark.arena import LayerBits, model_cost


def main() -> None:
    model = torchvision.models.resnet18(weights=None)
    shape = (3, 224, 224)
    layers = [name for name, _ in model.named_modules() if name and hasattr(_, "weight")]
    counted = [n for n in layers if n == "fc" or "conv" in n or "downsample.0" in n]

    def giga(policy: dict[str, LayerBits]) -> float:
        return model_cost(model, policy, shape).bitops / 1e9

    fp = giga({n: LayerBits(32, 32) for n in counted})
    w8 = giga({n: LayerBits(8, 8) for n in counted})
    w4 = giga({n: LayerBits(4, 4) for n in counted})
    w4_ends = giga(
        {n: LayerBits(8, 8) if n in ("conv1", "fc") else LayerBits(4, 4) for n in counted}
    )
    print(f"{'':36s} {'mpqbench':>9s} {'HAWQ-V3':>8s}")
    print(f"{'FP (32×32)':36s} {fp:9.2f} {1858:8d}")
    print(f"{'W8A8':36s} {w8:9.2f} {116:8d}")
    print(f"{'W4A4, every layer':36s} {w4:9.2f} {34:8d}")
    print(f"{'W4A4, first conv and fc at 8 bits':36s} {w4_ends:9.2f} {34:8d}")


if __name__ == "__main__":
    main()
