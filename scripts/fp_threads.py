"""Does an FP start's weights depend on torch's thread count? Build each space's FP start
twice at each thread count (fresh caches) and print a hash of its weights.

    python scripts/fp_threads.py                       # tiny preset, 1 and 2 threads
    python scripts/fp_threads.py --preset smoke --threads 2

On this project's 2-core machine (tiny preset, both spaces), two builds at one count give
one hash and 1 and 2 threads give two: so the reference (``scripts/reference.py``) builds
every FP start at a fixed count.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile

import torch

from benchmark.arena.data import load_preset_splits
from benchmark.arena.presets import load_preset
from benchmark.arena.recipes.pretrain import fp_starting_point
from benchmark.arena.spaces import get_space


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """The first 12 hex digits of the SHA-256 of every tensor's bytes, by name."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--spaces", default="resnet20,mbv3-cifar")
    parser.add_argument("--threads", default="1,2", help="comma list")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    preset = load_preset(args.preset)
    splits = load_preset_splits(preset, 0)
    for name in args.spaces.split(","):
        space = get_space(name, num_classes=splits.num_classes)
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            hashes = []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as cache:
                    state, _ = fp_starting_point(space, splits, preset, seed=0, cache_dir=cache)
                hashes.append(weights_hash(state))
            print(f"{name:<12} {threads} thread(s): {' '.join(hashes)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
