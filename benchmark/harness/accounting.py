"""What a trial's time is charged as: the share of a device it holds.

Device-hours are device time: wall hours × the trial's share of its device. On a GPU the
share is the GPU fraction the trial holds (``--gpus-per-trial``: two trials at 0.5 side by
side on one GPU are charged one GPU's time between them, not two); on a CPU it is the CPUs
the trial holds (``--cpus-per-trial``), so CPU device-hours are CPU-core-hours. Rows keep
the wall hours and the process's CPU seconds beside them: CPU seconds barely move when
other work shares the machine, so they are the figure to compare across machines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.harness.spec import TrialSpec


@dataclass(frozen=True)
class DeviceShare:
    """The device a trial runs on and the part of it the trial holds.

    Attributes:
        device: the device's name as rows record it (``NVIDIA H200``, ``cpu (2 threads)``).
        cpus: CPUs reserved for the trial (Ray's ``num_cpus``; fractions allowed).
        gpus: GPUs reserved for the trial (a fraction of one GPU, or more); 0 on a CPU.
        on_gpu: whether the trial computes on a GPU.
    """

    device: str
    cpus: float
    gpus: float
    on_gpu: bool

    @property
    def share(self) -> float:
        """Device units held: the GPU fraction on a GPU, else the CPUs."""
        return self.gpus if self.on_gpu else self.cpus

    def device_hours(self, wall_seconds: float) -> float:
        """Device-hours of ``wall_seconds`` of wall time: wall hours × :attr:`share`."""
        return wall_seconds / 3600 * self.share

    def row_fields(self) -> dict[str, Any]:
        """The columns of a result row that state the share."""
        return {
            "device": self.device,
            "trial_cpus": float(self.cpus),
            "trial_gpus": float(self.gpus),
            "device_share": float(self.share),
        }


def trial_device(spec: TrialSpec) -> tuple[torch.device, DeviceShare]:
    """Where ``spec`` computes (its GPU when it asked for one and CUDA is there, else the
    CPU with ``int(spec.cpus)`` threads) and the share of that device it is charged for."""
    if spec.gpus > 0 and torch.cuda.is_available():
        share = DeviceShare(torch.cuda.get_device_name(0), spec.cpus, spec.gpus, on_gpu=True)
        return torch.device("cuda"), share
    threads = max(1, int(spec.cpus))
    name = f"cpu ({threads} thread{'s' if threads > 1 else ''})"
    return torch.device("cpu"), DeviceShare(name, spec.cpus, 0.0, on_gpu=False)


def current_node() -> str:
    """The Ray node id (hex) this process runs on; ``""`` when it is not connected to Ray
    (the serial executor, or unknown)."""
    import sys

    ray = sys.modules.get("ray")  # imported by every Ray worker; never imported here
    if ray is None or not ray.is_initialized():
        return ""
    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - a Ray without a runtime context: unknown
        return ""


def fp_start_fields(info: dict[str, Any]) -> dict[str, Any]:
    """The ``fp_*`` columns of a trial from the info of its shared FP start (what
    :func:`~benchmark.arena.recipes.pretrain.fp_starting_point` returns).

    Its device-hours are the build's wall hours × the share of the trial that built it;
    NaN for a start cached before builds were recorded (its samples are still known).
    """
    seconds, share = info.get("build_seconds"), info.get("device_share")
    hours = float("nan")
    if isinstance(seconds, int | float) and isinstance(share, int | float):
        hours = float(seconds) / 3600 * float(share)
    return {
        "fp_samples": int(info.get("samples", -1)),
        "fp_device_hours": hours,
        "fp_device": str(info.get("device", "")),
        "fp_built_at": str(info.get("built_at", "")),
        "fp_source": "cache" if info.get("cached") else "built",
    }
