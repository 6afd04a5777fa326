"""Checks of a run's inputs before anything starts or is written.

Each check is cheap (no training, no data loading, no Ray; the last, of a cluster's
auth mode, asks its GCS for a key from a short-lived process), touches nothing on disk and
raises :class:`InputError` with one line that says what is wrong and what to do. The CLI
runs them all before it creates the run folder; they are also usable from Python.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmark.arena.cost import CostReport, Reference
from benchmark.arena.policy import short_text
from benchmark.arena.presets import Preset
from benchmark.arena.protocol import Constraint
from benchmark.arena.spaces.base import SearchSpace

RAY_DEFAULT_PORT = 6379
"""Port of a Ray head's GCS when ``--address`` names only a host."""

RAY_CLIENT_PORT = 10001
"""Port of a Ray client server (``ray://HOST``) when none is given."""

CONNECT_TIMEOUT_S = 2.0
"""How long :func:`check_address` waits for a TCP connection (seconds)."""

_CHEAPEST: dict[str, tuple[CostReport, Reference]] = {}
"""Cheapest candidate's cost and the W8A8 reference, per space configuration (JSON)."""

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class InputError(ValueError):
    """A run input that cannot work; the message is one actionable line."""


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a plain folder name (letters, digits, ``._+-``, at most 128)."""
    if not _RUN_ID.match(run_id) or run_id.endswith("."):
        raise InputError(
            f"--run-id {run_id!r} is not a plain folder name: use letters, digits, '.', '_', "
            "'+' or '-' (no '/', no leading dot), e.g. --run-id cifar-sweep-1"
        )
    return run_id


def check_writable_dir(path: str | Path, option: str) -> Path:
    """``path`` resolved, after checking that it is (or can be created as) a writable folder.

    Nothing is created: the nearest existing ancestor must be a folder this process can write
    to. (As root, permission bits do not stop writes; a file in the way still does.)
    """
    try:
        target = Path(path).expanduser().resolve()
        existing = target
        while not existing.exists():
            existing = existing.parent
        is_dir = existing.is_dir()
        writable = os.access(existing, os.W_OK | os.X_OK)
    except (OSError, ValueError, RuntimeError) as err:  # too long, NUL byte, symlink loop
        raise InputError(
            f"{option} {short_text(path)} is not a usable path ({short_text(err)}): "
            "pass another folder"
        ) from None
    if not is_dir:
        raise InputError(
            f"{option} {target} cannot be created: {existing} is a file, not a folder; "
            "pass another folder"
        )
    if not writable:
        raise InputError(
            f"{option} {target} is not writable ({existing} denies write access): pass a folder "
            "you can write to"
        )
    return target


def check_method_options(options: object, methods: Sequence[str]) -> dict[str, dict]:
    """``--method-options`` (already JSON-decoded): ``{"<method in --methods>": {...}}``."""
    if not isinstance(options, Mapping):
        raise InputError(
            f"--method-options must be a JSON object like "
            f'{{"random": {{"num_samples": 8}}}}, got {short_text(options)}'
        )
    for name, value in options.items():
        if name not in methods:
            raise InputError(
                f"--method-options names method {name!r}, which is not in --methods "
                f"({', '.join(methods)}): fix the name or add the method"
            )
        if not isinstance(value, Mapping):
            raise InputError(
                f"--method-options for {name!r} must be a JSON object of config keys, "
                f"got {short_text(value)}"
            )
    return {str(k): dict(v) for k, v in options.items()}


def check_constraint_reachable(constraint: Constraint, space: SearchSpace) -> None:
    """Reject a limit below the cheapest candidate of ``space`` (no method could meet it).

    Profiles two models of the space (its smallest and its reference architecture, ~0.1 s
    each on an idle CPU) the first time a space configuration is checked in this process.
    """
    key = json.dumps(space.config(), sort_keys=True, default=str)
    if key not in _CHEAPEST:
        _CHEAPEST[key] = (space.cheapest_cost(), space.reference())
    cheapest = constraint.measure(*_CHEAPEST[key])
    if constraint.limit >= cheapest * (1 - 1e-9):
        return
    low = min(space.bit_choices)
    if constraint.relative:
        reach = f"{cheapest:.4g}× W8A8"
        fix = f"{constraint.metric}<={_round_up(cheapest)}"
    elif constraint.metric == "bitops":
        reach = f"{cheapest / 1e9:.4g}G BitOPs"
        fix = f"bitops<={_round_up(cheapest / 1e9)}G"
    else:
        reach = f"{cheapest / 8e3:.4g} KB"
        fix = f"size<={_round_up(cheapest / 8e3)}KB"
    raise InputError(
        f"constraint {constraint.text} cannot be met on {space.name}: its cheapest candidate "
        f"(smallest architecture, W{low}A{low}, fixed layers at {space.fixed_bits} bits) "
        f"needs {reach}; use a limit of at least that, e.g. {fix}"
    )


def check_methods_reachable(
    configs: Mapping[str, Any],
    spaces: Sequence[SearchSpace],
    constraints: Sequence[Constraint],
) -> None:
    """Ask each method whether its config (by spec, as :func:`check_method_inputs`
    prepared it) can meet each constraint on each space (``Method.unreachable``).

    Raises:
        InputError: the first method's line, naming the method, the space and the limit.
    """
    from benchmark.arena.limit import TaskLimit
    from methods import get_method

    for spec, config in configs.items():
        cls = get_method(spec)
        for space in spaces:
            for constraint in constraints:
                reason = cls.unreachable(config, TaskLimit(constraint, space))
                if reason:
                    raise InputError(
                        f"method {cls.name} cannot meet {constraint.text} on {space.name}: "
                        f"{' '.join(reason.split())}"
                    )


def check_resources(
    cpus_per_trial: float,
    gpus_per_trial: float,
    *,
    executor: str,
    address: str | None,
) -> None:
    """Trial resources this machine can give (a cluster, ``address``, is left to Ray)."""
    if address or os.environ.get("RAY_ADDRESS"):
        return
    import torch

    gpus = torch.cuda.device_count()
    if gpus_per_trial > gpus:
        raise InputError(
            f"--gpus-per-trial {gpus_per_trial:g} is more than this machine has ({gpus} GPU"
            f"{'' if gpus == 1 else 's'} visible to torch): use --gpus-per-trial "
            f"{min(gpus, 1)} or --address of a Ray cluster with GPUs"
        )
    cpus = os.cpu_count() or 1
    if executor == "ray" and cpus_per_trial > cpus:
        raise InputError(
            f"--cpus-per-trial {cpus_per_trial:g} is more than this machine has ({cpus} CPUs): "
            f"Ray could never start a trial; use --cpus-per-trial {cpus} or less"
        )


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Ray ``--address``; ``None`` for ``auto`` / ``local`` (Ray's)."""
    text = address.strip()
    if text.lower() in ("auto", "local"):
        return None
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if scheme not in ("", "ray"):
        raise InputError(
            f"cannot read --address {short_text(address)}: use auto, HOST:PORT or ray://HOST:PORT"
        )
    try:
        parts = urlsplit(f"//{rest}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or parts.path not in ("", "/") or parts.query or parts.username:
        raise InputError(
            f"cannot read --address {short_text(address)}: use auto, HOST:PORT or ray://HOST:PORT"
        )
    return host, port or (RAY_CLIENT_PORT if scheme == "ray" else RAY_DEFAULT_PORT)


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to the Ray head at ``address`` opens within ``timeout`` seconds."""
    target = parse_address(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except (OSError, UnicodeError) as err:  # refused, timeout, unknown host, bad IDNA name
        reason = "timed out" if isinstance(err, TimeoutError) else short_text(err)
        raise InputError(
            f"cannot reach a Ray cluster at --address {short_text(address)} ({reason}): start it "
            "with `ray start --head`, check host and port, or drop --address to run locally"
        ) from None


def check_cluster_auth(address: str) -> None:
    """The Ray cluster at ``address`` (``HOST:PORT``; ``auto`` and ``ray://`` are left to
    Ray) accepts this machine's credentials: a token cluster needs ``$RAY_AUTH_TOKEN`` or
    a token file (:mod:`benchmark.harness.ray_session`). Call after :func:`check_address`."""
    from benchmark.harness.ray_session import ClusterAuthError
    from benchmark.harness.ray_session import check_cluster_auth as probe

    target = parse_address(address)
    if target is None or address.strip().lower().startswith("ray://"):
        return
    try:
        probe(f"{target[0]}:{target[1]}")
    except ClusterAuthError as err:
        raise InputError(str(err)) from None


def _round_up(value: float) -> str:
    """``value`` rounded up to 3 significant digits, as short text (0.0727 -> 0.0728)."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    step = 10 ** (math.floor(math.log10(value)) - 2)
    return f"{math.ceil(value / step - 1e-9) * step:.3g}"


def resolve_methods(
    specs: Sequence[str], options: Mapping | None
) -> tuple[list[str], dict[str, dict]]:
    """Load every ``--methods`` entry and key ``--method-options`` by it.

    File specs (``./my_method.py:MyMethod``) become absolute, so that Ray workers with
    another working directory find them. A method given twice (``uniform,uniform`` or a
    name and a spec of one class), or two classes sharing one name, is refused. Options
    may be keyed by a method's registered name or by its spec as given; each is checked
    against the method's config keys (``label``, the variant's name in results, is the
    harness's). Returns ``(specs, options by spec)``.
    """
    from benchmark.harness.spec import config_overrides
    from methods import check_options, get_method, split_spec

    resolved: list[str] = []
    classes: dict[str, type] = {}
    given: dict[str, str] = {}  # a spec as given → as resolved
    for spec in specs:
        cls = get_method(spec)
        target = spec
        if ":" in spec:
            module, attr = split_spec(spec)
            if module.endswith(".py") or "/" in module:
                target = f"{Path(module).expanduser().resolve()}:{attr}"
        for other, other_cls in classes.items():
            if other_cls is cls or other_cls.name == cls.name:
                raise InputError(
                    f"method {cls.name!r} is given twice in --methods ({given_name(other, given)}"
                    f", {spec}): list each method once"
                )
        classes[target], given[spec] = cls, target
        resolved.append(target)
    if options is None:
        return resolved, {}
    check_method_options(options, [*given, *resolved, *(c.name for c in classes.values())])
    by_spec: dict[str, dict] = {}
    for key, value in options.items():
        target = given.get(key) or next((s for s in resolved if key in (s, classes[s].name)), None)
        if target in by_spec:
            raise InputError(
                f"--method-options gives options for method {classes[target].name!r} twice "
                f"(once as {key!r}): give them once"
            )
        label = value.get("label")
        if "label" in value and (not isinstance(label, str) or not _LABEL.match(label)):
            raise InputError(
                f"--method-options label for {key!r} must be short text (letters, digits, "
                f"'.', '_', '-', '='; up to 40), got {short_text(label)}"
            )
        check_options(classes[target], config_overrides(value), key)
        by_spec[target] = dict(value)
    return resolved, by_spec


_LABEL = re.compile(r"^[A-Za-z0-9._=-]{1,40}$")


def check_method_inputs(
    specs: Sequence[str],
    options_by_spec: Mapping[str, dict],
    spaces: Sequence[SearchSpace],
    preset: Preset,
    preset_file: str | None = None,
) -> tuple[dict[str, dict], dict[str, Any]]:
    """Each method's config (its defaults < ``preset``'s ``[methods.<name>]`` < the
    options) validated once, then checked against the run's spaces by the method itself
    (``Method.prepare_config``: e.g. HAQ's cost table file against each space), after
    :func:`resolve_methods`. Returns the options by spec as the trials get them (what the
    preparation changed, e.g. a path made absolute, is written back into them, the
    ``label`` option kept; a method given no options is checked with none) and the
    prepared config of every spec (for :func:`check_methods_reachable`). A preset read
    from ``preset_file`` is named by that file in the errors.

    Raises:
        InputError: the method's one line, naming the method.
    """
    from benchmark.harness.spec import LABEL_OPTION, config_overrides
    from methods import get_method

    prepared: dict[str, dict] = {}
    configs: dict[str, Any] = {}
    for spec in specs:
        cls = get_method(spec)
        given = options_by_spec.get(spec)
        options = config_overrides(given or {})
        try:
            config = cls.configure(preset, options)
            checked = cls.prepare_config(config, list(spaces))
        except (ValueError, TypeError) as err:
            text = " ".join(str(err).split()) or type(err).__name__
            if preset_file and text.startswith(f"preset {preset.name}:"):
                text = f"preset file {preset_file}:" + text.removeprefix(f"preset {preset.name}:")
            where = (
                "" if text.startswith(("--method-options", "preset ")) else f"method {cls.name}: "
            )
            raise InputError(f"{where}{text}") from None
        configs[spec] = checked
        moved = {
            f.name: getattr(checked, f.name)
            for f in (dataclasses.fields(checked) if checked is not None else ())
            if getattr(checked, f.name) != getattr(config, f.name)
        }
        if given is not None or moved:
            label = {k: v for k, v in (given or {}).items() if k == LABEL_OPTION}
            prepared[spec] = {**options, **moved, **label}
    return prepared, configs


def given_name(resolved: str, given: Mapping[str, str]) -> str:
    """The spec as the user wrote it for a resolved spec."""
    return next((g for g, r in given.items() if r == resolved), resolved)
