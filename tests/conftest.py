"""Shared fixtures: 2 CPU threads, a private checkpoint cache, a Ray token, one pretrained
ResNet-20."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor

torch.set_num_threads(2)

# Ray's token authentication, explicitly and before anything imports Ray: Ray reads the
# mode once per process, so an in-process client that first saw it unset would stay in
# "disabled" mode and could not talk to the token-mode instances later tests start (a
# default `ray.init()` turns token mode on by itself; a Ray client alone does not).
os.environ["RAY_AUTH_MODE"] = "token"


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$MPQBENCH_CACHE`` points at a per-session folder: no test writes to ``~/.cache``."""
    path = tmp_path_factory.mktemp("mpqbench-cache")
    old = os.environ.get("MPQBENCH_CACHE")
    os.environ["MPQBENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MPQBENCH_CACHE", None)
    else:
        os.environ["MPQBENCH_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def ray_token() -> Iterator[str]:
    """``$RAY_AUTH_TOKEN``: the token of every Ray instance the tests start (Ray's token
    authentication stays on), so that no test writes ``~/.ray/auth_token``."""
    old = os.environ.get("RAY_AUTH_TOKEN")
    token = old or secrets.token_hex(16)
    os.environ["RAY_AUTH_TOKEN"] = token
    yield token
    if old is None:
        os.environ.pop("RAY_AUTH_TOKEN", None)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@dataclass(frozen=True)
class Pretrained:
    """ResNet-20 pretrained on digits with the smoke preset (shared by the whole session)."""

    space: object
    splits: object
    preset: object
    state: dict[str, Tensor]
    info: dict
    cache_dir: Path


@pytest.fixture(scope="session")
def digits_splits():
    from benchmark.arena.data import load_splits
    from benchmark.arena.presets import load_preset

    preset = load_preset("smoke")
    return load_splits("digits", val_fraction=preset.data.val_fraction, seed=0)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory: pytest.TempPathFactory, digits_splits) -> Pretrained:
    """FP ResNet-20 on digits (smoke preset, ~20 s on 2 cores), trained once per session.

    It has a cache folder of its own, so that other tests' checkpoints never mix with it.
    """
    from benchmark.arena.presets import load_preset
    from benchmark.arena.recipes.pretrain import pretrain_fp
    from benchmark.arena.spaces import get_space

    folder = tmp_path_factory.mktemp("fp-resnet20")
    preset = load_preset("smoke")
    space = get_space("resnet20")
    state, info = pretrain_fp(space, digits_splits, preset, seed=0, cache_dir=folder)
    return Pretrained(space, digits_splits, preset, state, info, folder)


PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray per test session (2 CPUs, loopback only, Ray's token authentication);
    workers can import the test plugins."""
    import ray

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from benchmark.harness.ray_session import local_init_options

    ray.init(num_cpus=2, log_to_driver=False, **local_init_options())
    yield
    ray.shutdown()


MICRO_FP_SUPERNET = """
[supernet]
epochs = 1
batch_size = 32
lr = 0.1
max_steps = 3
"""
"""A 3-step FP supernet: the one-shot methods' end-to-end tests need a start, not a good one."""


@pytest.fixture
def micro_preset(tmp_path: Path) -> Callable[..., Path]:
    """``make(name, extra=None)``: a preset file from ``tests/tiny.toml`` on a 320-image
    train subset with a 3-step FP supernet, named ``name``; ``extra`` maps a method to lines
    added to tiny.toml's ``[methods.<method>]`` table (e.g. ``{"qfa": "key = true\\n"}``).
    The search's wall-clock cap is raised to 900 s: the sample budget is the rule, the
    clock only a safety net on a loaded machine."""

    def make(name: str, extra: dict[str, str] | None = None) -> Path:
        text = (Path(__file__).parent / "tiny.toml").read_text()
        text = text.replace('name = "tiny"', f'name = "{name}"')
        text = text.replace("[data]\n", "[data]\ntrain_subset = 320\n")
        text = text.replace("max_search_seconds = 60.0", "max_search_seconds = 900.0")
        for method, keys in (extra or {}).items():
            table = f"[methods.{method}]\n"
            assert table in text, f"tests/tiny.toml has no {table.strip()}"
            text = text.replace(table, table + keys)
        path = tmp_path / f"{name}.toml"
        path.write_text(text + MICRO_FP_SUPERNET)
        return path

    return make
