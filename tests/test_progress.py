"""Live progress (issue 19): the throttle at the source, the view on a fake event stream
(terminal and not), and real runs of the tiny preset sending an event for every stage
through both executors."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest
from rich.console import Console

from benchmark.arena import reporting
from benchmark.cli import main
from benchmark.cli.live import RunView
from benchmark.harness.trial_events import (
    STAGE_FP,
    BackgroundSender,
    describe,
    eta_seconds,
    trial_progress,
)

HERE = Path(__file__).parent
TINY = str(HERE / "tiny.toml")
STAMP = re.compile(r"^\d\d:\d\d:\d\d ")  # a plain line's wall-clock time
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but a newline

TRAINED = '''
from benchmark.arena import Candidate, Context, SearchResult
from benchmark.arena import Method


class Trained(Method):
    """Trains W3A3 for the finetune recipe's steps, scores it, hands its weights over."""

    name = "trained"
    searches = "bits"

    def search(self, ctx: Context) -> SearchResult:
        policy = ctx.space.uniform_policy(3, 3, ctx.space.reference_arch)
        model = ctx.subnet(None, policy)
        stats = ctx.train(model, desc="search train")
        ctx.report(loss=stats.final_loss, val_top1=ctx.score(model))
        return SearchResult([Candidate(policy, label="w3", weights=model.state_dict())])
'''


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the throttle -------------------------------------------------------------------------
def test_a_thousand_steps_in_a_tight_loop_give_a_bounded_number_of_events() -> None:
    sent: list[dict] = []
    reporter = reporting.Reporter(sent.append, interval=0.5, burst=0.1)
    t0 = time.monotonic()
    with reporting.reporting(reporter):
        reporter.stage("search")
        with reporting.phase("train", total=1000, milestones=True):
            for step in range(1, 1001):
                reporting.advance(step, 1000, loss=1.0 / step)
    took = time.monotonic() - t0
    # the stage, then the phase's start and last step unless within 0.1 s of the one before
    # (the flush sends the last), and at most one per 0.5 s between
    assert 2 <= len(sent) <= 3 + took / 0.5
    assert sent[0]["kind"] == "stage" and sent[-1]["done"] == 1000
    assert sent[-1]["metrics"]["loss"] == pytest.approx(1e-3)
    assert took < 0.5  # ~1 µs a step: nothing a training step would notice


def test_stage_changes_always_pass_and_held_back_steps_follow() -> None:
    clock, sent = FakeClock(), []
    reporter = reporting.Reporter(sent.append, interval=0.5, burst=0.1, clock=clock)
    reporter.stage("search")
    with reporting.reporting(reporter):
        for step in range(1, 201):  # 200 steps in 2 s: one event per 0.5 s
            clock.now += 0.01
            reporting.advance(step, 400)
        assert 4 <= len(sent) <= 5  # the stage, then every 0.5 s
        reporting.metrics(val_top1=50.0)  # held back (0 s since the last)
        reporter.stage("retrain finetune 1/2")  # always, after what was held back
        assert sent[-2]["metrics"] == {"val_top1": 50.0}
        with reporting.phase("finetune", total=3, milestones=True):
            reporting.advance(3, 3)  # held back (within 0.1 s), kept when the phase closes
        reporter.stage("retrain finetune 2/2")
    assert sent[-2]["phase"] == "finetune" and sent[-2]["done"] == 3
    assert [e["stage"] for e in sent[-3:]] == ["retrain finetune 1/2"] * 2 + [
        "retrain finetune 2/2"
    ]
    count = len(sent)
    reporting.advance(5, 10)  # outside a trial: nothing, no error
    with reporting.phase("evaluate"):
        reporting.metrics(x=1)
    assert len(sent) == count


def test_an_evaluation_does_not_show_the_last_training_loss() -> None:
    clock, sent = FakeClock(), []
    reporter = reporting.Reporter(sent.append, interval=0.0, burst=0.0, clock=clock)
    reporter.stage("search")
    with reporting.reporting(reporter):
        with reporting.phase("train", total=2, milestones=True):
            reporting.advance(2, 2, loss=0.75)
        reporting.metrics(critic_loss=3.0, episode=1)
        assert reporter.snapshot()["metrics"] == {"loss": 0.75, "critic_loss": 3.0, "episode": 1}
        with reporting.phase("evaluate", total=100, unit="images"):
            clock.now += 1
            reporting.advance(50)
            assert reporter.snapshot()["metrics"] == {"episode": 1}  # no stale loss
        reporting.metrics(val_top1=71.5)  # what ctx.score reports when it is done
    assert sent[-1]["metrics"] == {"episode": 1, "val_top1": 71.5}


def test_background_sender_keeps_every_stage_and_the_newest_snapshot() -> None:
    delivered: list[list[dict]] = []
    sender = BackgroundSender(delivered.append, spacing=0.05)
    for i in range(50):
        sender({"kind": "progress", "stage": "search", "done": i})
    sender({"kind": "stage", "stage": "retrain finetune 1/1"})
    sender({"kind": "log", "text": "a line"})
    sender({"kind": "progress", "stage": "retrain finetune 1/1", "done": 3})
    sender.close()
    events = [e for batch in delivered for e in batch]
    assert len(delivered) <= 3 and events[-1]["done"] == 3
    assert [e["kind"] for e in events[-3:]] == ["stage", "log", "progress"]


def test_trial_log_file_holds_the_progress_and_log_lines(tmp_path: Path) -> None:
    import logging

    with trial_progress(tmp_path, None) as reporter:
        reporter.stage("search")
        logging.getLogger("mpqbench.method").info("a method's line")
        with reporting.phase("finetune", total=2, milestones=True):
            reporting.advance(2, 2, loss=0.5)
    text = (tmp_path / "log.txt").read_text()
    assert "search\n" in text and "mpqbench.method: a method's line" in text
    assert "search · finetune · 2/2 steps · loss 0.5" in text


# --- the view on a fake stream ------------------------------------------------------------
def _event(stage: str, **fields) -> dict:
    return {"kind": "progress", "stage": stage, "stage_seconds": 5.0, "metrics": {}, **fields}


def _feed(view: RunView, clock: FakeClock) -> None:
    trials = [("a", "uniform on mbv3-cifar/digits bitops<=0.3 seed 0"), ("b", "random on x")]
    view("", {"kind": "run", "line": "run r: 3 trial(s) → /tmp/r"})
    view("", {"kind": "queued", "trials": [*trials, ("c", "ompq on x")]})
    view("a", {"kind": "start", "label": trials[0][1]})
    view("b", {"kind": "start", "label": trials[1][1]})
    view("a", {**_event("FP pretraining"), "kind": "stage"})
    for i in range(1, 201):  # 200 s of steps, one event a second
        clock.now += 1.0
        view("a", _event("FP pretraining", phase="pretrain", done=i, total=400, unit="steps",
                         phase_seconds=float(i), metrics={"loss": 1.0}))  # fmt: skip
    view("a", {**_event("search"), "kind": "stage"})
    budget = {"samples": 500, "max_samples": 2000, "seconds": 10.0, "max_seconds": 600.0}
    view("a", _event("search", stage_seconds=10.0, budget=budget, metrics={"val_top1": 71.5}))
    view("b", {"kind": "log", "text": "mpqbench.train: finetune step 1/3"})
    view("b", {"kind": "end", "line": "[2/3] random on x: failed — boom", "ok": False,
               "seconds": 100.0})  # fmt: skip


def test_plain_view_one_line_per_stage_and_a_progress_line_a_minute() -> None:
    clock, out = FakeClock(), io.StringIO()
    view = RunView(out, live=False, clock=clock, stamp=lambda: "12:34:56")
    with view:
        _feed(view, clock)
    text = out.getvalue()
    assert not CONTROL.search(text)
    assert all(line.startswith("12:34:56 ") for line in text.splitlines())  # wall time
    lines = [line.removeprefix("12:34:56 ") for line in text.splitlines()]
    assert lines[0] == "run r: 3 trial(s) → /tmp/r"
    mine = [line for line in lines if line.startswith("[1/3]")]
    assert mine[0] == "[1/3] uniform on mbv3-cifar/digits bitops<=0.3 seed 0: running"
    fp = [line for line in mine if "FP pretraining" in line]
    assert 1 + 200 // 60 <= len(fp) <= 2 + 200 // 60  # the stage, then once a minute
    assert "pretrain · 60/400 steps · loss 1 · ETA 5m40s" in fp[1]  # 340 steps at 1 s each
    assert mine[-1].endswith(": search")  # the stage's progress: in a minute
    assert "[2/3] random on x: failed — boom" in lines
    assert not any("finetune step" in line for line in lines)  # not --verbose
    assert view.counts() == (1, 1, 1)


def test_quiet_and_verbose_views() -> None:
    clock, quiet, verbose = FakeClock(), io.StringIO(), io.StringIO()
    for out, flags in ((quiet, {"quiet": True}), (verbose, {"verbose": True})):
        view = RunView(out, clock=clock, stamp=lambda: "12:34:56", **flags)
        _feed(view, clock)
        view.line("run r: 6 rows, 0 not ok, 0 trial(s) without rows; results in /tmp/r")
    assert quiet.getvalue().splitlines() == [
        "12:34:56 run r: 6 rows, 0 not ok, 0 trial(s) without rows; results in /tmp/r"
    ]
    assert "mpqbench.train: finetune step 1/3" in verbose.getvalue()


def test_terminal_view_lines_footer_and_eta() -> None:
    clock = FakeClock()
    view = RunView(io.StringIO(), live=True, clock=clock)
    _feed(view, clock)
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(view)
    screen = console.export_text()
    row = next(line for line in screen.splitlines() if line.startswith("uniform "))
    for cell in ("mbv3-cifar/digits bitops<=0.3 seed 0", "search", "500/2,000", "val_top1 71.5"):
        assert cell in row
    assert "≤30s" in row  # 500 samples in 10 s: 1,500 more in 30 s (before the 590 s left)
    # one finished (100 s); one running for 200 s, its search 30 s from its end; one queued
    # (100 s); two at once at most: (30 + 100) / 2
    assert "1 done (1 not ok) · 1 running · 1 queued · elapsed 3m20s · ETA 1m05s" in screen
    assert "random" not in row and not any(ln.startswith("random") for ln in screen.splitlines())


def test_terminal_view_prints_finished_trials_above_the_live_lines() -> None:
    out = io.StringIO()
    with RunView(out, live=True) as view:
        _feed(view, FakeClock())
    text = out.getvalue()
    assert "[2/3] random on x: failed — boom" in text and "\x1b[" in text  # colours, redraws


def test_eta_from_the_phase_rate_and_from_the_budget() -> None:
    assert eta_seconds(_event("s", done=10, total=40, phase_seconds=5.0)) == pytest.approx(15.0)
    budget = {"samples": 100, "max_samples": 1000, "seconds": 50.0, "max_seconds": 60.0}
    assert eta_seconds(_event("s", budget=budget)) == pytest.approx(10.0)  # the clock first
    assert eta_seconds(_event("s")) is None
    scoring = _event("s", budget=budget, phase="evaluate", done=1, total=2, unit="images")
    assert eta_seconds({**scoring, "phase_seconds": 1.0}) == pytest.approx(10.0)  # the search's
    training = {**scoring, "phase_seconds": 1.0, "unit": "steps"}
    assert eta_seconds(training) == pytest.approx(1.0)  # a training phase's own
    assert describe({"stage": "search"}) == "search"


# --- real runs ----------------------------------------------------------------------------
def _run(tmp_path: Path, cache_dir: Path, *extra: str) -> Path:
    method = tmp_path / "trained.py"
    method.write_text(TRAINED)
    argv = ["run", "--methods", f"{method}:Trained", "--space", "resnet20", "--preset", TINY]
    argv += ["--out", str(tmp_path), "--run-id", "p", "--cache-dir", str(cache_dir)]
    argv += ["--constraint", "bitops<=0.2", "--no-leaderboard", *extra]
    assert main(argv) == 0
    return tmp_path / "runs" / "p"


STAGES = (STAGE_FP, "search", "retrain finetune 1/1", "inherit evaluation 1/1")


def _check_run(run_dir: Path, stderr: str, *, unthrottled: bool = False) -> None:
    assert not CONTROL.search(stderr)
    ours = [line for line in stderr.splitlines() if "[1/1] " in line]
    assert ours and all(STAMP.match(line) for line in ours)  # plain lines: wall time first
    lines = [STAMP.sub("", line) for line in stderr.splitlines()]
    stage_lines = [line.split(": ", 1)[1] for line in lines if line.startswith("[1/1]")]
    for stage in STAGES:
        assert any(line.startswith(stage) for line in stage_lines), (stage, stage_lines)
    (log,) = run_dir.glob("trials/*/log.txt")
    text = log.read_text()
    for stage in STAGES:
        assert re.search(rf"^\S+ \S+ {re.escape(stage)}( ·|$)", text, re.M), stage
    # a phase's step lines pass a throttle (0.5 s between events): which of them reach the
    # log depends on the machine's speed, so they are checked with the throttle off
    for what in ("search train · ", "evaluate · ", "finetune · 3/3 steps") if unthrottled else ():
        assert what in text, what
    assert "samples" in text and "val_top1" in text and "loss" in text
    assert json.loads((run_dir / "trials" / log.parent.name / "rows.json").read_text())


def test_serial_run_reports_every_stage(
    tmp_path: Path, cache_dir: Path, capsys, monkeypatch
) -> None:
    import functools

    from benchmark.harness import trial
    from benchmark.harness import trial_events as harness_progress

    unthrottled = functools.partial(harness_progress.trial_progress, interval=0.0, burst=0.0)
    monkeypatch.setattr(trial, "trial_progress", unthrottled)
    run_dir = _run(tmp_path, cache_dir, "--executor", "serial")
    _check_run(run_dir, capsys.readouterr().err, unthrottled=True)


def test_ray_run_reports_every_stage(tmp_path: Path, cache_dir: Path, ray_session, capsys) -> None:
    run_dir = _run(tmp_path, cache_dir, "--executor", "ray")
    _check_run(run_dir, capsys.readouterr().err)


def test_the_finetune_counter_counts_the_feasible_candidates() -> None:
    """Candidates over the limit are never trained: ``retrain finetune k/n`` counts the
    feasible ones, so it ends at n/n."""
    from types import SimpleNamespace

    from benchmark.harness.evaluation import _feasible_place

    over = {"W8A8", "W6A6"}
    ctx = SimpleNamespace(candidate_feasible=lambda c: c.label not in over)
    result = SimpleNamespace(
        candidates=[SimpleNamespace(label=x) for x in ("W8A8", "W4A4", "W6A6", "W3A3")]
    )
    assert [_feasible_place(i, result, ctx) for i in (1, 3)] == [(1, 2), (2, 2)]
    assert _feasible_place(0, None, ctx) == (1, 1)


def test_the_run_eta_is_never_a_bare_question_mark_or_zero_while_trials_run() -> None:
    clock = FakeClock()
    view = RunView(io.StringIO(), live=False, clock=clock, stamp=lambda: "")
    view("run", {"kind": "queued", "trials": [("a", "uniform on x"), ("b", "random on x")]})
    view("a", {"kind": "start", "label": "uniform on x"})
    assert view.footer().endswith("ETA after the first trial ends")
    clock.now += 10.0
    view("a", {"kind": "end", "line": "[1/2] uniform on x: ok", "ok": True, "seconds": 10.0})
    view("b", {"kind": "start", "label": "random on x"})
    clock.now += 30.0  # b runs three times as long as a did, in no phase with an ETA
    footer = view.footer()
    assert "ETA 0s" not in footer and "ETA ?" not in footer
    assert footer.endswith("past the mean trial's time")
