"""Shared search spaces; importing this package registers the built-in ones."""

from benchmark.spaces import mbv3_cifar as _mbv3_cifar  # noqa: F401  (registers "mbv3-cifar")
from benchmark.spaces import resnet20 as _resnet20  # noqa: F401  (registers "resnet20")
from benchmark.spaces.base import SearchSpace, SpaceError, get_space, list_spaces, register_space

__all__ = ["SearchSpace", "SpaceError", "get_space", "list_spaces", "register_space"]
