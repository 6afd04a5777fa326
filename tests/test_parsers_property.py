"""Property-based tests of the input parsers: arbitrary text or JSON never escapes as an
unexpected exception, and the CLI answers arbitrary argv with exit 0 or 2 and no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import benchmark.harness.executors
from benchmark.arena.policy import PolicyError, load_policy_file, policy_from_dict
from benchmark.arena.protocol import Constraint, ProtocolError
from benchmark.arena.spaces import get_space
from benchmark.cli import main

FAST = settings(max_examples=30, deadline=None)

# --------------------------------------------------------------------------- constraints
near_constraints = st.builds(
    "{}{}{}{}{}".format,
    st.sampled_from(["bitops", "size", "BitOPs", "SIZE", "latency", "ſize", "", " bitops"]),
    st.sampled_from(["<=", "<", ">=", "=", " <= ", ""]),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.integers(-(10**30), 10**30).map(str),
        st.sampled_from(["0", ".5", "5.", "1e-3", "1e999", "0.0", "1_0", "١"]),
    ),
    st.sampled_from(["", "x", "k", "G", "KB", "kib", "bits", "q", "\u212a", " "]),
    st.sampled_from(["", " ", "\n", "x"]),
)


@FAST
@given(st.one_of(st.text(), near_constraints))
def test_constraint_parse_returns_or_raises_protocol_error(text: str) -> None:
    try:
        constraint = Constraint.parse(text)
    except ProtocolError as err:
        assert len(str(err).splitlines()) == 1
        return
    assert constraint.metric in ("bitops", "size")
    assert constraint.limit > 0 and constraint.limit < float("inf")
    assert Constraint.parse(constraint.text).text == constraint.text  # canonical is stable


# --------------------------------------------------------------------------- policies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
layer_names = st.sampled_from(["conv1", "fc", "layer1.0.conv1", "layer3.2.conv2", "nope", ""])
bits = st.one_of(st.sampled_from([2, 3, 4, 8, 32]), st.integers(-5, 70), json_values)
entries = st.one_of(
    st.fixed_dictionaries({"w_bits": bits, "a_bits": bits}),
    st.fixed_dictionaries({"w_bits": bits}),
    st.tuples(bits, bits).map(list),
    json_values,
)
policy_like = st.one_of(st.dictionaries(layer_names, entries, max_size=6), json_values)


@pytest.fixture(scope="module")
def resnet20():
    return get_space("resnet20")


@FAST
@given(data=policy_like, raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_policy_parsers_raise_only_policy_errors(resnet20, data: object, raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.json"
        if raw is None:
            path.write_text(json.dumps(data))
        else:
            path.write_bytes(raw)
        try:
            policy = load_policy_file(path)
            resnet20.full_policy(policy)
        except PolicyError as err:
            assert len(str(err).splitlines()) == 1
    with contextlib.suppress(PolicyError):
        policy_from_dict(data)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CLI
COST_TOKENS = [
    "--space", "--policy", "--arch", "--fixed-bits", "--num-classes", "--json",
    "resnet20", "mbv3-cifar", "w4a4", "w2a8", "w5a5", "8", "32", "0", "-1", "{}", "[1]",
]  # fmt: skip
RUN_TOKENS = [
    "--space", "--dataset", "--preset", "--constraint", "--seeds", "--data-dir", "--out",
    "--run-id", "--executor", "--address", "--cpus-per-trial", "--gpus-per-trial",
    "--max-search-seconds", "--max-search-samples", "--method-options", "--resume",
    "--download", "--no-leaderboard", "resnet20", "digits", "cifar10", "smoke", "serial",
    "bitops<=0.5", "bitops<=0.01", "0,1", "-1", "0", "1", "nan", "{}", "auto", "--",
]  # fmt: skip


def _argv(tokens: list[str]) -> st.SearchStrategy[list[str]]:
    token = st.one_of(st.sampled_from(tokens), st.text(max_size=12))
    return st.lists(token, max_size=8)


def _call(argv: list[str]) -> tuple[int, str]:
    """``main(argv)``'s exit code and stdout, after checking what it wrote to stderr."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's --help / -h: printed, then exit 0
            assert exc.code == 0, (argv, err.getvalue())
            code = 0
    assert "Traceback" not in err.getvalue() + out.getvalue(), argv
    if code == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err.getvalue())
    return code, out.getvalue()


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, and executors that fail the test if a trial starts."""

    def started(*args: object, **kwargs: object) -> None:
        pytest.fail("arbitrary argv reached the executor")

    monkeypatch.setattr(benchmark.harness.executors, "run_serial", started)
    monkeypatch.setattr(benchmark.harness.executors, "run_ray", started)
    monkeypatch.chdir(tmp_path)
    return tmp_path


SANDBOXED = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SANDBOXED
@given(_argv(COST_TOKENS))
def test_cli_cost_answers_0_or_2(sandbox: Path, tokens: list[str]) -> None:
    code, _ = _call(["cost", *tokens])
    assert code in (0, 2)
    assert not os.listdir(sandbox)


@SANDBOXED
@given(_argv(RUN_TOKENS))
def test_cli_run_with_an_unknown_method_answers_2(sandbox: Path, tokens: list[str]) -> None:
    # the last --methods wins, and "nope" is never a method: validation must fail somewhere
    code, out = _call(["run", *tokens, "--methods", "nope"])
    assert code == 2 or (code == 0 and out.startswith("usage:")), tokens  # or a -h token
    assert not os.listdir(sandbox)
