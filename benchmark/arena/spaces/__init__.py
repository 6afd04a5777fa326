"""Shared search spaces; importing this package registers the built-in ones."""

from benchmark.arena.spaces import resnet20 as _resnet20  # noqa: F401  (registers "resnet20")
from benchmark.arena.spaces.base import (
    ElasticSearchSpace,
    SearchSpace,
    SpaceError,
    get_space,
    list_spaces,
    register_space,
)
from benchmark.arena.spaces.fixed import FixedConvention, FixedSpec
from benchmark.arena.spaces.mbv3 import space as _mbv3  # noqa: F401  (registers "mbv3-cifar")

__all__ = [
    "ElasticSearchSpace",
    "FixedConvention",
    "FixedSpec",
    "SearchSpace",
    "SpaceError",
    "get_space",
    "list_spaces",
    "register_space",
]
