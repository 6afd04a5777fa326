"""Top-1 evaluation, BN recalibration, and the two together: how every subnet is scored.

Accuracies are top-1 in percent (0-100); ``images`` counts images passed forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmark.arena import reporting
from benchmark.arena.data import make_loader
from benchmark.arena.presets import RecalibrationConfig


def _batches(loader: DataLoader, steps: int) -> Iterable[tuple[Tensor, Tensor]]:
    done = 0
    while done < steps:
        for batch in loader:
            yield batch
            done += 1
            if done >= steps:
                return


@torch.inference_mode()
def evaluate(
    model: nn.Module, dataset: Dataset, *, device: torch.device | str = "cpu", batch_size: int = 256
) -> float:
    """Top-1 accuracy in percent on ``dataset`` (eval mode, under ``torch.inference_mode``:
    no autograd bookkeeping at all; the model's own tensors stay ordinary ones, so it
    trains on afterwards)."""
    device = torch.device(device)
    model.to(device).eval()
    correct = total = 0
    with reporting.phase("evaluate", total=len(dataset), unit="images"):
        for x, y in make_loader(dataset, batch_size, shuffle=False):
            pred = model(x.to(device)).argmax(1)
            correct += int((pred == y.to(device)).sum())
            total += y.shape[0]
            reporting.advance(total)
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def recalibrate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batches: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> int:
    """Reset and re-estimate BN statistics (and calibrating quantizers) on train images.

    BN running stats become the plain average over ``batches`` batches; modules with
    ``start_calibration()``/``end_calibration()`` (e.g. BatchQuant ranges) are told too.
    Returns the number of images used.
    """
    device = torch.device(device)
    model.to(device)
    was_training = model.training
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = plain mean over batches
    calibrating = [m for m in model.modules() if hasattr(m, "start_calibration")]
    for m in calibrating:
        m.start_calibration()
    model.train()
    used = 0
    loader = make_loader(dataset, batch_size, shuffle=True, seed=seed)
    with reporting.phase("recalibrate", total=batches, unit="batches"):
        for done, (x, _) in enumerate(_batches(loader, batches), 1):
            model(x.to(device))
            used += x.shape[0]
            reporting.advance(done)
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    for m in calibrating:
        m.end_calibration()
    model.train(was_training)
    return used


def recalibrate_and_evaluate(
    model: nn.Module,
    train_set: Dataset,
    eval_sets: Mapping[str, Dataset],
    recalibration: RecalibrationConfig,
    *,
    eval_batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[dict[str, float], int]:
    """How every subnet is scored: BN (and calibrating quantizers') statistics re-estimated on
    ``recalibration.batches`` batches of ``train_set`` images, then top-1 (percent) on each
    of ``eval_sets`` (e.g. ``{"val": ..., "test": ...}``).

    Returns ``(top-1 per eval set, images forwarded)``: recalibration plus evaluation images.
    """
    used = recalibrate(
        model,
        train_set,
        batches=recalibration.batches,
        batch_size=recalibration.batch_size,
        device=device,
        seed=seed,
    )
    scores = {}
    for name, dataset in eval_sets.items():
        scores[name] = evaluate(model, dataset, device=device, batch_size=eval_batch_size)
        used += len(dataset)
    return scores, used
