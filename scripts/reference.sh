#!/usr/bin/env bash
# The reference run on Fashion-MNIST (results/reference/), in pieces that resume:
# every registered method and the fidelity issues' variants, both spaces, bitops<=0.2 and
# bitops<=0.3, the fmnist preset, 3 seeds, on this machine's CPUs. It prints the projected
# wall time before it starts and commits nothing. `--help` says the rest; the plan, the
# limits and how they were chosen are in scripts/reference.py's header.
#
#   bash scripts/reference.sh --list      # the pieces, their state, the projection
#   bash scripts/reference.sh             # every piece not started
#   bash scripts/reference.sh --resume    # finish the interrupted pieces, then the rest
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/reference.py "$@"
