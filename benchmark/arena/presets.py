"""Presets: the frozen recipes as data (``benchmark/presets/<name>.toml``).

A preset fixes the dataset default, the data split, the FP pretraining and QAT
finetune recipes, BN recalibration and the search budget. Comparisons differ
only in the method, never in these.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any


class PresetError(ValueError):
    """Unknown preset or malformed preset file."""


@dataclass(frozen=True)
class Recipe:
    """One SGD training recipe (epochs over the train split; lr per 1 batch; wd per step)."""

    epochs: float
    batch_size: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    max_steps: int | None = None


@dataclass(frozen=True)
class DataConfig:
    val_fraction: float = 0.1
    train_subset: int | None = None
    augment: bool = True
    eval_batch_size: int = 256


@dataclass(frozen=True)
class RecalibrationConfig:
    """BN (and activation-range) recalibration: ``batches`` × ``batch_size`` train images."""

    batches: int = 4
    batch_size: int = 64


@dataclass(frozen=True)
class BudgetConfig:
    """Default search budget: wall seconds on the trial's device and training samples."""

    max_search_seconds: float = 120.0
    max_search_samples: int = 200_000
    # a trial (search + every candidate's finetune and evaluation) still running after
    # this many wall seconds is stopped and recorded as ``timeout``
    max_trial_seconds: float = 3600.0


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    dataset: str
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: Recipe = field(default_factory=lambda: Recipe(epochs=1, batch_size=64, lr=0.1))
    finetune: Recipe = field(default_factory=lambda: Recipe(epochs=1, batch_size=64, lr=0.01))
    supernet: Recipe | None = None  # FP supernet pretraining (elastic spaces); None: pretrain
    recalibration: RecalibrationConfig = field(default_factory=RecalibrationConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        sections = {
            "data": DataConfig,
            "pretrain": Recipe,
            "finetune": Recipe,
            "supernet": Recipe,
            "recalibration": RecalibrationConfig,
            "budget": BudgetConfig,
        }
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {"extra": {}}
        for key, value in data.items():
            if key in sections:
                try:
                    kwargs[key] = sections[key](**value)
                except TypeError as err:
                    raise PresetError(f"preset section [{key}]: {err}") from None
            elif key in known:
                kwargs[key] = value
            else:
                kwargs["extra"][key] = value
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise PresetError(f"preset is missing a field: {err}") from None


def list_presets() -> list[str]:
    files = resources.files("benchmark").joinpath("presets").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load_preset(name: str) -> Preset:
    """A built-in preset by name, or a user's preset from a ``.toml`` file path.

    Unknown names raise :class:`PresetError` listing the valid ones.
    """
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise PresetError(f"preset file {name} does not exist")
        try:
            return Preset.from_dict(tomllib.loads(path.read_text()))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise PresetError(f"preset file {name} is not valid TOML ({err})") from None
        except OSError as err:
            raise PresetError(f"cannot read preset file {name} ({err.strerror})") from None
    if name not in list_presets():
        raise PresetError(f"unknown preset {name!r}; choose one of {', '.join(list_presets())}")
    text = resources.files("benchmark").joinpath("presets", f"{name}.toml").read_text()
    return Preset.from_dict(tomllib.loads(text))
