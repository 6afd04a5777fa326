"""The harness: runs trials and measures them. One trial (set-up, search under the budget,
the evaluation tracks), the runner (serial or Ray Tune), the run store and its records,
input validation, the trial watchdog, and one run's orchestration (:mod:`.run`).

Only the harness and the CLI reach methods, through the registry in ``methods``.
"""
