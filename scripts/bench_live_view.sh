#!/usr/bin/env bash
# The live view's cost: the default `python -m benchmark run --methods uniform,random`
# with the live view (A) against `--quiet` (B), each in a fresh folder inside a tmux
# terminal (160x30, so the view is on), interleaved A, B per round. Prints each run's wall
# time and the 1-minute load average; run it with the FP caches warm.
# Usage: scripts/bench_live_view.sh [rounds]   (needs tmux)
set -u
rounds=${1:-2}
for r in $(seq 1 "$rounds"); do
  for side in A B; do
    d=$(mktemp -d)
    flag=""
    [ "$side" = B ] && flag="--quiet"
    tmux new -d -s mpqbench-live -x 160 -y 30 \
      "cd $d && /usr/bin/time -f '%e' -o $d/wall python -m benchmark run --methods uniform,random $flag; tmux wait-for -S mpqbench-live-done"
    tmux wait-for mpqbench-live-done
    echo "round $r $side wall $(cat "$d/wall") s load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
