"""A trial's plain-data description (it travels to Ray workers) and its outbox."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.arena.files import atomic_write_text, config_hash
from benchmark.arena.protocol import Task
from benchmark.harness.records import OutboxError, read_outbox_file


@dataclass(frozen=True)
class TrialSpec:
    """Everything a worker needs to run one trial (plain data: it travels to Ray workers)."""

    run_id: str
    method: str
    task: dict[str, Any]
    run_dir: str
    method_options: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    download: bool = False
    cache_dir: str | None = None
    max_search_seconds: float | None = None
    max_search_samples: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    max_trial_seconds: float | None = None  # None: the preset's
    preset_hash: str = ""  # the run's recipe (Preset.recipe_hash); "": not checked
    shared_folders: dict[str, str] = field(default_factory=dict)  # {flag: folder} a trial
    # must see as the driver wrote it (a cluster run: benchmark.harness.shared_storage)

    @property
    def key(self) -> str:
        """Identifies the trial inside a run (resume skips finished keys): method, task,
        options and the recipe's content hash."""
        options = json.dumps(self.method_options, sort_keys=True)
        recipe = f"|recipe={self.preset_hash}" if self.preset_hash else ""
        return f"{self.method}|{Task(**self.task).key}|{options}{recipe}"

    @property
    def trial_dir(self) -> Path:
        """``<run>/trials/<method>-<hash of key>``: the method's workdir and the outbox."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.method)
        return Path(self.run_dir) / "trials" / f"{slug}-{config_hash({'k': self.key})}"

    @property
    def outbox(self) -> Path:
        """Where the worker leaves the trial's finished rows (read back on retry/resume)."""
        return self.trial_dir / "rows.json"


def write_outbox(spec: TrialSpec, rows: list[dict[str, Any]]) -> None:
    """Store a finished trial's rows next to its workdir (atomic)."""
    atomic_write_text(spec.outbox, json.dumps(rows, default=str))


def read_outbox(spec: TrialSpec) -> list[dict[str, Any]] | None:
    """The rows a worker left for ``spec``, or ``None`` (none, or unreadable)."""
    try:
        return checked_outbox(spec)
    except OutboxError:
        return None


def checked_outbox(spec: TrialSpec) -> list[dict[str, Any]] | None:
    """The rows in ``spec``'s outbox, ``None`` when there is none.

    Raises:
        OutboxError: the file is unreadable, not JSON, not a list of result rows, or
            holds another trial's rows.
    """
    rows = read_outbox_file(spec.outbox)
    if rows is not None and any(row.get("trial_key") != spec.key for row in rows):
        raise OutboxError(f"trial outbox {spec.outbox} holds rows of another trial")
    return rows


LABEL_OPTION = "label"
"""The option that names a variant in results; the harness's, not passed to the method."""


def config_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    """``--method-options`` for one method, less the harness's :data:`LABEL_OPTION`: the
    keys that override its config (over the preset's ``[methods.<name>]`` values)."""
    return {k: v for k, v in options.items() if k != LABEL_OPTION}


def config_json(config: Any) -> str:
    """A method's config as rows record it (``method_config``): JSON of its fields, sorted;
    ``"{}"`` for a method without one."""
    if config is None:
        return "{}"
    return json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)


MAX_VARIANT_TEXT = 40
"""Longest option text in a variant name; longer ones are named by a hash."""


def variant_name(name: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """How results name a method run with ``options``: ``name`` when every option is at its
    default, ``name[label]`` for a ``label`` option, else ``name[k=v,...]`` (sorted, short:
    a hash of the options past :data:`MAX_VARIANT_TEXT` characters). Stable across runs."""
    if LABEL_OPTION in options:
        return f"{name}[{options[LABEL_OPTION]}]"
    changed = {k: v for k, v in options.items() if k not in defaults or defaults[k] != v}
    if not changed:
        return name
    text = ",".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
        for k, v in sorted(changed.items())
    )
    if len(text) > MAX_VARIANT_TEXT:
        text = config_hash(changed)[:8]
    return f"{name}[{text}]"
