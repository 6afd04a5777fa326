"""The default run on a loaded machine: with two CPU-burning processes competing for the
two cores, ``python -m benchmark run --methods uniform,random`` ends with every trial ``ok``
(the smoke preset's wall-clock limits are a safety net, the sample budget the rule). On
``resnet20``, the smaller space, from an empty cache: the FP start is trained under the
load too, in a fraction of the default space's time (the point is the limits, not the
space). ``uniform`` trains one bit-width (W3A3) where its default trains three, and
``random`` retrains its best candidate where its default retrains two: the search is what a
limit can cut, and the other finetunes only lengthened the test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

BURN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


@pytest.mark.slow
def test_the_default_run_ends_ok_with_two_busy_processes(tmp_path: Path, cache_dir: Path) -> None:
    burners = [subprocess.Popen([sys.executable, "-c", BURN.format(seconds=900)]) for _ in range(2)]
    try:
        env = {**os.environ, "MPQBENCH_CACHE": str(tmp_path / "cache")}  # an empty cache
        options = '{"uniform": {"bits": [3]}, "random": {"top_k": 1}}'
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmark", "run", "--methods", "uniform,random",
             "--space", "resnet20", "--method-options", options],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    (records,) = (tmp_path / "results" / "runs").glob("*/records.parquet")
    rows = pd.read_parquet(records)
    assert set(rows["status"]) == {"ok"}
    spent = rows.groupby("method")["samples_processed"].max().to_dict()
    print(f"default run with 2 busy processes: {wall:.0f} s, samples per method {spent}")
