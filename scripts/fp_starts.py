"""The FP starting points a results folder's runs used, kept beside them (``<out>/fp-starts/``).

An FP start of the ``fmnist`` preset takes 14 min (2 threads) to 27 min (1 thread) to
build, and its weights depend on the build's thread count (``scripts/fp_threads.py``), so
a run resumed on another machine must start from the same file, not from a rebuild.
``scripts/reference.py`` and ``scripts/claims.py`` copy the cache's FP starts of their
dataset into ``<out>/fp-starts/`` (each ``.pt`` with its ``.pt.json``: its key and SHA-256)
and copy them back into an empty cache before they run. The cache checks each file's
SHA-256 when it loads it, and rebuilds one that does not match.

    python scripts/fp_starts.py restore results/reference   # into $MPQBENCH_CACHE
    python scripts/fp_starts.py keep results/reference --dataset fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

KINDS = ("fp-", "supernet-fp-")
"""The cache's file name prefixes of an FP start (a fixed space's, an elastic one's)."""


def _pairs(folder: Path) -> list[Path]:
    """The FP start files (``.pt``) in ``folder`` that have their ``.pt.json``."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.glob("*.pt")
        if p.name.startswith(KINDS) and p.with_suffix(".pt.json").exists()
    )


def _copy(path: Path, folder: Path) -> bool:
    """Copy ``path`` and its ``.pt.json`` into ``folder`` unless it holds them."""
    target = folder / path.name
    if target.exists() and target.with_suffix(".pt.json").exists():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path.with_suffix(".pt.json"), target.with_suffix(".pt.json"))
    shutil.copyfile(path, target)
    return True


def _sha256(path: Path) -> str | None:
    return json.loads(path.with_suffix(".pt.json").read_text()).get("sha256")


def restore(kept: Path, cache: Path | None = None) -> list[str]:
    """Copy the FP starts kept in ``kept`` into the cache where it lacks them; their names.
    Raises ``ValueError`` where the cache holds another build under the same key."""
    from benchmark.arena.cache import default_cache_dir

    cache = cache or default_cache_dir()
    for path in _pairs(kept):
        there = cache / path.name
        if there.exists() and there.with_suffix(".pt.json").exists():
            if _sha256(there) != _sha256(path):
                raise ValueError(
                    f"the cache holds another build of {path.name} than {kept}: remove "
                    f"{there} or point $MPQBENCH_CACHE at another folder"
                )
    return [p.name for p in _pairs(kept) if _copy(p, cache)]


def keep_file(path: Path, kept: Path) -> bool:
    """Copy one FP start (``.pt`` and ``.pt.json``) into ``kept`` unless it holds it (or
    there is no such file)."""
    return path.exists() and path.with_suffix(".pt.json").exists() and _copy(path, kept)


def keep(kept: Path, dataset: str, cache: Path | None = None) -> list[str]:
    """Copy the cache's FP starts of ``dataset`` into ``kept`` where it lacks them."""
    from benchmark.arena.cache import default_cache_dir

    cache = cache or default_cache_dir()
    copied = []
    for path in _pairs(cache):
        config = json.loads(path.with_suffix(".pt.json").read_text()).get("config", {})
        if config.get("dataset") == dataset and _copy(path, kept):
            copied.append(path.name)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("restore", "keep"))
    parser.add_argument("out", type=Path, help="a results folder (its fp-starts/ is used)")
    parser.add_argument("--dataset", default="fashion-mnist", help="keep: the FP starts' data")
    args = parser.parse_args(argv)
    kept = args.out / "fp-starts"
    names = restore(kept) if args.action == "restore" else keep(kept, args.dataset)
    print(f"{args.action}: {len(names)} file(s)" + "".join(f"\n  {n}" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
