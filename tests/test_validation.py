"""benchmark.harness.validation: the checks accept what is valid (the rejections are in
test_bad_input.py), and valid CLI input gets through validation to the executor."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import benchmark.harness.executors
from benchmark.arena.protocol import Constraint
from benchmark.arena.spaces import get_space
from benchmark.cli import main
from benchmark.harness.validation import (
    RAY_CLIENT_PORT,
    RAY_DEFAULT_PORT,
    InputError,
    check_address,
    check_constraint_reachable,
    check_method_options,
    check_run_id,
    check_writable_dir,
    parse_address,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("auto", None),
        ("local", None),
        ("10.0.0.5", ("10.0.0.5", RAY_DEFAULT_PORT)),
        ("head:6380", ("head", 6380)),
        ("ray://head", ("head", RAY_CLIENT_PORT)),
        ("ray://head:10002", ("head", 10002)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int] | None) -> None:
    assert parse_address(address) == expected


def test_check_address_accepts_a_listening_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        check_address(f"127.0.0.1:{server.getsockname()[1]}")


def test_cheapest_candidate_is_the_boundary() -> None:
    space = get_space("resnet20")
    ratio = space.cheapest_cost().bitops / space.reference().bitops_w8a8
    check_constraint_reachable(Constraint.parse(f"bitops<={ratio:.6f}"), space)
    with pytest.raises(InputError, match="cannot be met"):
        check_constraint_reachable(Constraint.parse(f"bitops<={ratio * 0.99:.6f}"), space)
    mbv3 = get_space("mbv3-cifar")  # the smallest subnet is below the reference's W2A2
    smallest = mbv3.cheapest_cost().bitops
    reference_w2a2 = mbv3.cost(mbv3.uniform_policy(2)).bitops
    assert smallest < reference_w2a2


def test_checks_accept_valid_input(tmp_path: Path) -> None:
    assert check_run_id("20260101-120000-42") == "20260101-120000-42"
    assert check_run_id("sweep_1.b") == "sweep_1.b"
    target = tmp_path / "new" / "deeper"
    assert check_writable_dir(target, "--out") == target.resolve()
    assert not (tmp_path / "new").exists()  # nothing created
    options = check_method_options({"random": {"num_samples": 3}}, ["random", "uniform"])
    assert options == {"random": {"num_samples": 3}}


def test_valid_run_reaches_the_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(
        benchmark.harness.executors, "run_serial", lambda specs, *a, **k: calls.append(1)
    )
    argv = ["run", "--methods", "uniform,random", "--space", "resnet20,mbv3-cifar"]
    argv += ["--constraint", "bitops<=0.1,size<=0.3", "--seeds", "0,1", "--out", str(tmp_path)]
    argv += ["--executor", "serial", "--run-id", "valid", "--no-leaderboard"]
    argv += ["--method-options", '{"random": {"num_samples": 2}}', "--cpus-per-trial", "1"]
    assert main(argv) == 1  # no rows: the executor was a stub
    assert calls == [1]
    assert (tmp_path / "runs" / "valid" / "metadata.json").is_file()
