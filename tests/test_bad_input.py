"""Bad input to the CLI: exit code 2, one ``error:`` line saying what is wrong and what to do,
no traceback, nothing written, no training started (every case fails in validation)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import benchmark.harness.executors
from benchmark.arena.presets import load_preset
from benchmark.cli import main
from benchmark.harness.records import rows_to_frame

GPUS_TOO_MANY = str(torch.cuda.device_count() + 1)
CPUS_TOO_MANY = str((os.cpu_count() or 1) + 1)

UNKNOWN_LAYER = {"nolayer": {"w_bits": 4, "a_bits": 4}}
TINY = str(Path(__file__).parent / "tiny.toml")
TINY_TEXT = Path(TINY).read_text()


def _preset(old: str, new: str) -> str:
    """tests/tiny.toml with one line changed (the change must apply)."""
    assert old in TINY_TEXT, old
    return TINY_TEXT.replace(old, new, 1)


RESNET20_LAYERS = ["conv1", *(f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in (0, 1, 2)
                              for c in (1, 2)), "fc"]  # fmt: skip


def _latency_csv(
    space: str = "resnet20", drop: str = "", change: tuple[str, str] = ("", "")
) -> str:
    """A complete made-up latency table of resnet20 (every layer at every (w, a) over
    {2, 3, 4, 8}), less the row starting with ``drop``, with one text change."""
    rows = [f"# space={space} unit=us", "layer,w_bits,a_bits,cost"]
    for name in RESNET20_LAYERS:
        for w in (2, 3, 4, 8):
            for a in (2, 3, 4, 8):
                row = f"{name},{w},{a},{w * a}"
                if not (drop and row.startswith(drop)):
                    rows.append(row)
    return "\n".join(rows).replace(*change, 1) + "\n"


def _haq(table: str, *extra: str, **options: object) -> list[str]:
    options = {"cost_table": f"{{in}}/{table}", **options} if table else options
    return ["run", "--methods", "haq", "--space", "resnet20", *extra,
            "--method-options", json.dumps({"haq": options})]  # fmt: skip


def _dnas(**options: object) -> list[str]:
    return ["run", "--methods", "dnas", "--space", "resnet20",
            "--method-options", json.dumps({"dnas": options})]  # fmt: skip


SETTINGS = {  # what a run stores for --resume (tests/tiny.toml, uniform, resnet20)
    "methods": ["uniform"], "space": ["resnet20"], "dataset": ["digits"], "data_dir": None,
    "download": False, "preset": TINY, "constraint": ["bitops<=0.3"], "seeds": [0],
    "cache_dir": None, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0,
    "max_search_seconds": None, "max_search_samples": None, "max_trial_seconds": None,
    "method_options": None,
}  # fmt: skip


def _metadata(**changes: object) -> str:
    meta = {
        "run_id": "r", "settings": dict(SETTINGS), "trials": [],
        "preset_hash": load_preset(TINY).recipe_hash,
    }  # fmt: skip
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        elif key == "seeds":
            meta["settings"]["seeds"] = value
        else:
            meta[key] = value
    return json.dumps(meta)


FOREIGN_RECORDS = rows_to_frame(
    [{"run_id": "other", "trial_key": "k", "method": "uniform", "space": "resnet20",
      "dataset": "digits", "preset": "tiny", "seed": 0, "constraint": "bitops<=0.3"}]
).to_parquet(index=False)  # fmt: skip
FILES: dict[str, str | bytes] = {  # name -> content, created under tmp_path/in for every case
    "unknown_layer.json": json.dumps(UNKNOWN_LAYER),
    "bits5.json": json.dumps({"layer1.0.conv1": {"w_bits": 5, "a_bits": 4}}),
    "list.json": json.dumps([["layer1.0.conv1", 4, 4]]),
    "no_w_bits.json": json.dumps({"layer1.0.conv1": {"a_bits": 4}}),
    "string_bits.json": json.dumps({"layer1.0.conv1": {"w_bits": "4", "a_bits": 4}}),
    "triple.json": json.dumps({"layer1.0.conv1": [4, 4, 4]}),
    "partial.json": json.dumps({"layer1.0.conv1": {"w_bits": 4, "a_bits": 4}}),
    "fixed_at_4.json": json.dumps({"conv1": {"w_bits": 4, "a_bits": 4}}),
    "deep.toml": 'name = "deep"\nx = ' + "[" * 5000 + "]" * 5000 + "\n",
    "bad_section.toml": _preset("[methods.haq]\nepisodes = 4", "[methods.haq]\nepisodes = -3"),
    "twice_key.json": '{"layer1.0.conv1": {"w_bits": 4, "a_bits": 4}, "layer1.0.conv1": {}}',
    "not_json.json": "w_bits: 4, a_bits: 4",
    "a_file": "not a folder",
    "cifar_empty/.keep": "",
    "cifar_incomplete/cifar-10-batches-py/data_batch_1": "junk",
    **{f"cifar_corrupt/cifar-10-batches-py/{name}": "junk" for name in (
        "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
        "test_batch", "batches.meta",
    )},
    "unreadable_run/records.parquet": "PAR1 not parquet at all",
    # presets that do not match the schema
    "typo_section.toml": TINY_TEXT.replace("[finetune]", "[finetun]"),
    "epochs_text.toml": _preset("epochs = 1", 'epochs = "two"'),
    "batch_zero.toml": _preset("batch_size = 64", "batch_size = 0"),
    "val_fraction.toml": _preset("val_fraction = 0.1", "val_fraction = 1.5"),
    # in the schema, but on digits' 1,438 training images: no validation image, or too few
    "val_empty.toml": _preset("val_fraction = 0.1", "val_fraction = 0.0001"),
    "subset_too_big.toml": _preset("val_fraction = 0.1", "val_fraction = 0.1\ntrain_subset = 5000"),
    "val_nearly_all.toml": _preset("val_fraction = 0.1", "val_fraction = 0.999"),  # 1 to train
    "budget_negative.toml": _preset("max_search_samples = 20000", "max_search_samples = -5"),
    "lr_nan.toml": _preset("lr = 0.01", "lr = nan"),
    "max_steps_negative.toml": _preset("max_steps = 3", "max_steps = -3"),
    "pretrain_negative.toml": _preset("epochs = 2", "epochs = -2"),
    "trial_seconds_huge.toml": _preset("max_trial_seconds = 600.0", "max_trial_seconds = 1e300"),
    "unknown_key.toml": _preset("lr = 0.01", "lr = 0.01\nlearning_rate = 0.1"),
    "method_section_unknown.toml": TINY_TEXT + "\n[methods.nosuch]\nx = 1\n",
    "method_section_unwanted.toml": TINY_TEXT + "\n[methods.uniform]\nx = 1\n",
    # damaged run state (--resume r --out {in}/<name>)
    "meta_junk/runs/r/metadata.json": "[1,2",
    "meta_list/runs/r/metadata.json": "[1, 2]",
    "meta_no_settings/runs/r/metadata.json": _metadata(settings=None),
    "meta_seeds_text/runs/r/metadata.json": _metadata(seeds="0"),
    "meta_seeds_range/runs/r/metadata.json": _metadata(seeds=[-1, 2**40]),
    "recipe_changed/runs/r/metadata.json": _metadata(preset_hash="0123456789abcdef"),
    "records_empty/runs/r/metadata.json": _metadata(),
    "records_empty/runs/r/records.parquet": "",
    "records_empty/runs/r/trials/uniform-0/rows.json": json.dumps(
        [{"trial_key": "k", "status": "ok"}]
    ),
    "records_junk/runs/r/metadata.json": _metadata(),
    "records_junk/runs/r/records.parquet": "PAR1 garbage",
    "records_foreign/runs/r/metadata.json": _metadata(),
    "records_foreign/runs/r/records.parquet": FOREIGN_RECORDS,
    "outbox_junk/runs/r/metadata.json": _metadata(),
    "outbox_junk/runs/r/trials/uniform-0/rows.json": "{not json",
    "binary.toml": b"\x89PNG\r\n\x1a\n\xff\xfe",
    # HAQ cost tables (--method-options '{"haq": {"cost_table": ...}}')
    "lat_ok.csv": _latency_csv(),
    "lat_unknown_layer.csv": _latency_csv() + "layer4.0.conv1,2,2,0.1\n",
    "lat_missing_pair.csv": _latency_csv(drop="layer3.2.conv2,8,4,"),
    "lat_negative.csv": _latency_csv(change=("layer2.1.conv1,3,3,9", "layer2.1.conv1,3,3,-1")),
    "lat_text.csv": _latency_csv(change=("layer2.1.conv1,3,3,9", "layer2.1.conv1,3,3,fast")),
    "lat_mbv3.csv": _latency_csv(space="mbv3-cifar"),
    "lat_no_space.json": json.dumps({"costs": {"conv1": {"w8a8": 1.0}}}),
    "haq_episodes_zero.toml": _preset("[methods.haq]\nepisodes = 4", "[methods.haq]\nepisodes = 0"),
    "dnas_tau_negative.toml": _preset("[methods.dnas]\nepochs = 1", "[methods.dnas]\ntau0 = -1.0"),
    "raising_method.py": "raise ValueError('this module is broken')\n",
    "syntax_method.py": "class Broken(:\n",
    "exiting_method.py": "import sys\nsys.exit(0)\n",
    "wrong_searches.py": (
        "from benchmark.arena import Method\n\n\nclass Wrong(Method):\n"
        "    name = 'wrong'\n    searches = 'everything'\n\n"
        "    def search(self, ctx):\n        return None\n"
    ),
}  # fmt: skip

RUN = ["run", "--methods", "uniform"]
CASES: list[tuple[str, list[str], str | tuple[str, ...]]] = [
    # --- names (each lists the valid ones)
    ("unknown-method", ["run", "--methods", "nope"], ("unknown method 'nope'", "uniform")),
    ("unknown-method-path", ["run", "--methods", "no_such_module:Cls"], "cannot import"),
    (
        "unknown-space",
        [*RUN, "--space", "nope"],
        ("unknown space 'nope'", "mbv3-cifar, resnet20"),
    ),
    (
        "unknown-dataset",
        [*RUN, "--dataset", "nope"],
        ("unknown dataset 'nope'", "cifar10, cifar100, digits"),
    ),
    (
        "unknown-preset",
        [*RUN, "--preset", "nope"],
        ("unknown preset 'nope'", "paper, small, smoke"),
    ),
    ("missing-preset-file", [*RUN, "--preset", "{in}/none.toml"], "does not exist"),
    ("binary-preset-file", [*RUN, "--preset", "{in}/binary.toml"], "not valid TOML"),
    ("unknown-executor", [*RUN, "--executor", "dask"], "invalid choice"),
    ("unknown-subcommand", ["bogus"], "invalid choice: 'bogus'"),
    ("unknown-option", [*RUN, "--frobnicate"], "unrecognized arguments"),
    ("no-methods-still-checked", ["run", "--preset", "nope"], "unknown preset 'nope'"),
    # --- outside methods and their options
    (
        "method-module-raises",
        ["run", "--methods", "{in}/raising_method.py:M"],
        ("raising_method.py", "cannot import", "ValueError: this module is broken"),
    ),
    (
        "method-module-syntax-error",
        ["run", "--methods", "{in}/syntax_method.py:M"],
        ("syntax_method.py", "cannot import", "SyntaxError"),
    ),
    (
        "method-module-exits",
        ["run", "--methods", "{in}/exiting_method.py:M"],
        ("exiting_method.py", "exited while importing"),
    ),
    ("method-file-missing", ["run", "--methods", "{in}/none.py:M"], "does not exist"),
    ("method-abstract", ["run", "--methods", "methods.base:Method"], "is abstract"),
    (
        "method-searches-everything",
        ["run", "--methods", "{in}/wrong_searches.py:Wrong"],
        "searches must be one of",
    ),
    ("method-spec-no-module", ["run", "--methods", ":Foo"], "cannot read method spec"),
    ("method-spec-relative", ["run", "--methods", ".mod:X"], "not an importable module"),
    ("method-spec-no-class", ["run", "--methods", "methods.uniform:"], "cannot read method spec"),
    ("method-class-missing", ["run", "--methods", "methods.uniform:Nope"], "has no 'Nope'"),
    ("method-twice", ["run", "--methods", "uniform,uniform"], "given twice"),
    (
        "method-alias-twice",
        ["run", "--methods", "uniform,methods.uniform:Uniform"],
        ("given twice", "list each method once"),
    ),
    (
        "method-option-typo",
        ["run", "--methods", "random", "--method-options", '{"random": {"num_sample": 3}}'],
        ("has no option 'num_sample'", "num_samples, top_k"),
    ),
    (
        "method-option-out-of-range",
        ["run", "--methods", "random", "--method-options", '{"random": {"num_samples": 0}}'],
        ("--method-options for random: num_samples = 0 is out of range", "whole number ≥ 1"),
    ),
    (
        "method-option-wrong-type",
        ["run", "--methods", "ompq", "--method-options", '{"ompq": {"a_bits": "4"}}'],
        ("--method-options for ompq: a_bits = '4' is wrong", "whole number"),
    ),
    (
        "method-options-across-keys",
        ["run", "--methods", "oqat", "--method-options", '{"oqat": {"bits": [4, 3]}}'],
        "bits [4, 3] need 2 stage lengths",
    ),
    (
        "method-options-twice",
        [
            "run",
            "--methods",
            "uniform",
            "--method-options",
            '{"uniform": {"bits": [4]}, "methods.uniform:Uniform": {"bits": [2]}}',
        ],
        "not in --methods",
    ),
    (
        "method-label-not-text",
        ["run", "--methods", "uniform", "--method-options", '{"uniform": {"label": 3}}'],
        "label for 'uniform' must be short text",
    ),
    # validation gaps that ended in tracebacks or duplicated work
    ("cpus-per-trial-tiny", [*RUN, "--cpus-per-trial", "1e-9"], "at least 0.01 CPUs"),
    ("gpus-per-trial-tiny", [*RUN, "--gpus-per-trial", "0.001"], "0 or at least 0.01 GPUs"),
    ("space-twice", [*RUN, "--space", "resnet20,resnet20"], "'resnet20' is given twice"),
    ("dataset-twice", [*RUN, "--dataset", "digits,digits"], "'digits' is given twice"),
    (
        "data-dir-unknown-user",
        [*RUN, "--dataset", "fashion-mnist", "--data-dir", "~nouser-mpqbench/x"],
        "--data-dir ~nouser-mpqbench/x",
    ),
    (
        "cost-arch-on-a-fixed-space",
        ["cost", "--space", "resnet20", "--arch", '{"kernels": [3]}'],
        "resnet20 has one architecture",
    ),
    ("preset-nested-too-deep", [*RUN, "--preset", "{in}/deep.toml"], "nests too deeply"),
    (
        "preset-file-section-named-by-its-path",
        ["run", "--methods", "uniform", "--preset", "{in}/bad_section.toml"],
        ("preset file", "bad_section.toml: [methods.haq] episodes = -3"),
    ),
    (
        "cost-policy-key-twice",
        ["cost", "--space", "resnet20", "--policy", "{in}/twice_key.json"],
        "'layer1.0.conv1' appears twice",
    ),
    # built-in methods' options: refused before anything starts, not in every trial
    *[
        (
            f"builtin-option-{i}",
            ["run", "--methods", m, "--method-options", json.dumps({m: o})],
            expected,
        )
        for i, (m, o, expected) in enumerate(
            [
                ("uniform", {"bits": []}, "bits is wrong: tuple should have at least 1 item"),
                ("uniform", {"bits": [4, 4, "8"]}, "bits[2] = '8' is wrong"),
                ("uniform", {"bits": [4, 4]}, "bits lists [4] more than once"),
                ("random", {"num_samples": -1}, "num_samples = -1 is out of range"),
                ("random", {"num_samples": 2.5}, "num_samples = 2.5 is wrong"),
                ("ompq", {"betas": "x"}, "betas = 'x' is wrong"),
                ("ompq", {"solver": "gurobi"}, "solver = 'gurobi' is wrong"),
                ("hawq", {"bits": "foo"}, "bits = 'foo' is wrong"),
                ("hawq", {"ratios": [2.0]}, "ratios[0] = 2.0 is out of range"),
            ]
        )
    ],  # fmt: skip
    (
        "method-options-duplicate-key",
        [
            "run",
            "--methods",
            "uniform",
            "--method-options",
            '{"uniform": {"bits": [4], "bits": [3]}}',
        ],
        ("not valid JSON", "'bits' appears twice"),
    ),  # fmt: skip
    (
        "method-options-duplicate-method",
        [
            "run",
            "--methods",
            "uniform",
            "--method-options",
            '{"uniform": {"bits": [4]}, "uniform": {"bits": [3]}}',
        ],
        "'uniform' appears twice",
    ),  # fmt: skip
    # --- HAQ: its cost table checked against the space, its options and preset section
    (
        "haq-table-wrong-space",
        _haq("lat_ok.csv")[:4] + ["mbv3-cifar"] + _haq("lat_ok.csv")[5:],
        ("method haq: cost table", "is for space 'resnet20', not 'mbv3-cifar'"),
    ),
    (
        "haq-table-for-another-space",
        _haq("lat_mbv3.csv"),
        "is for space 'mbv3-cifar', not 'resnet20'",
    ),
    (
        "haq-table-unknown-layer",
        _haq("lat_unknown_layer.csv"),
        ("lat_unknown_layer.csv line 323", "unknown layer 'layer4.0.conv1' for resnet20"),
    ),
    (
        "haq-table-missing-pair",
        _haq("lat_missing_pair.csv"),
        ("no cost for layer3.2.conv2 at W8A4", "each (w_bits, a_bits) over {2, 3, 4, 8}"),
    ),
    ("haq-table-negative", _haq("lat_negative.csv"), ("line 152", "cost -1 is negative")),
    ("haq-table-not-a-number", _haq("lat_text.csv"), ("line 152", "cost 'fast' is not a number")),
    ("haq-table-no-space", _haq("lat_no_space.json"), "does not say which space it is for"),
    ("haq-table-missing-file", _haq("none.csv"), ("none.csv does not exist", "check the path")),
    ("haq-table-ratio-alone", _haq("", table_ratio=0.5), "table_ratio needs a cost_table"),
    (
        "haq-top-k-zero",
        _haq("lat_ok.csv", top_k=0),
        "top_k = 0 is out of range; accepted: a whole number ≥ 1",
    ),
    (
        "haq-preset-episodes-zero",
        ["run", "--methods", "haq", "--preset", "{in}/haq_episodes_zero.toml"],
        ("[methods.haq] episodes = 0", "a whole number ≥ 1"),
    ),
    # --- DNAS: its options (checked before the run) and preset section
    ("dnas-weights-typo", _dnas(weights="seperate"), "weights = 'seperate' is wrong"),
    (
        "dnas-beta-negative",
        _dnas(beta=-1),
        "beta = -1 is out of range; accepted: a number > 0 or one of 'auto'",
    ),
    (
        "dnas-gamma-text",
        _dnas(gamma="high"),
        ("gamma = 'high' is wrong", "accepted: a number ≥ 0 or one of 'auto'"),
    ),
    (
        "dnas-samples-one",
        _dnas(samples=1),
        "samples = 1 is out of range; accepted: a whole number ≥ 2",
    ),
    (
        "dnas-bits-not-allowed",
        _dnas(bits=[2, 5]),
        ("method dnas:", "bits [2, 5] are not all allowed on resnet20"),
    ),
    (
        "dnas-preset-tau-negative",
        ["run", "--methods", "dnas", "--preset", "{in}/dnas_tau_negative.toml"],
        "[methods.dnas] tau0",
    ),
    # --- constraints: malformed and impossible
    ("constraint-not-a-number", [*RUN, "--constraint", "bitops<=abc"], "cannot read constraint"),
    ("constraint-wrong-operator", [*RUN, "--constraint", "bitops<0.5"], "cannot read constraint"),
    (
        "constraint-unknown-metric",
        [*RUN, "--constraint", "latency<=1"],
        "unknown constraint metric 'latency'",
    ),
    ("constraint-unknown-unit", [*RUN, "--constraint", "bitops<=3q"], "unknown unit 'q'"),
    ("constraint-zero", [*RUN, "--constraint", "bitops<=0"], "positive"),
    ("constraint-ratio-too-big", [*RUN, "--constraint", "bitops<=20"], "add a unit"),
    ("constraint-non-ascii", [*RUN, "--constraint", "ſize<=0.5"], "cannot read constraint"),
    (
        "constraint-impossible-ratio",
        [*RUN, "--space", "resnet20", "--constraint", "bitops<=0.001"],
        ("cannot be met on resnet20", "bitops<=0.0728"),
    ),
    (
        "constraint-impossible-absolute",
        [*RUN, "--space", "resnet20", "--constraint", "size<=1KB"],
        ("cannot be met on resnet20", "KB"),
    ),
    (
        "constraint-impossible-default-space",
        [*RUN, "--constraint", "bitops<=0.5,bitops<=0.05"],
        "bitops<=0.05 cannot be met on mbv3-cifar",
    ),
    (  # reachable on the space, not by plain OMPQ (8-bit activations): refused before
        "method-cannot-meet-the-limit",
        ["run", "--methods", "ompq", "--space", "resnet20", "--constraint", "bitops<=0.2"],
        ("method ompq cannot meet bitops<=0.2 on resnet20", "W2A8", '"a_bits": 2'),
    ),
    (
        "hawq-paper-bits-cannot-meet-the-limit",
        ["run", "--methods", "hawq", "--space", "resnet20", "--constraint", "bitops<=0.2"],
        ("method hawq cannot meet bitops<=0.2 on resnet20", "W4A4", '"bits": "space"'),
    ),
    (
        "dnas-bits-cannot-meet-the-limit",
        [
            "run",
            "--methods",
            "dnas",
            "--space",
            "resnet20",
            "--constraint",
            "bitops<=0.1",
            "--method-options",
            '{"dnas": {"bits": [3, 8]}}',
        ],
        ("method dnas cannot meet bitops<=0.1 on resnet20", "W3A3", '"bits": [2, 3, 8]'),
    ),  # fmt: skip
    # --- data
    ("cifar-without-data-dir", [*RUN, "--dataset", "cifar10"], "--data-dir"),
    (
        "cifar-missing-dir",
        [*RUN, "--dataset", "cifar10", "--data-dir", "{in}/nowhere"],
        "no such directory",
    ),
    (
        "cifar-no-dataset-folder",
        [*RUN, "--dataset", "cifar10", "--data-dir", "{in}/cifar_empty"],
        "no cifar-10-batches-py folder",
    ),
    (
        "cifar-incomplete",
        [*RUN, "--dataset", "cifar10", "--data-dir", "{in}/cifar_incomplete"],
        ("incomplete", "missing data_batch_2"),
    ),
    (
        "cifar-corrupt",
        [*RUN, "--dataset", "cifar10", "--data-dir", "{in}/cifar_corrupt"],
        ("fail the MD5 checksum", "re-download"),
    ),
    (
        "cifar100-in-cifar10-dir",
        [*RUN, "--dataset", "cifar100", "--data-dir", "{in}/cifar_corrupt"],
        "no cifar-100-python folder",
    ),
    # --- resources and cluster
    ("gpus-above-machine", [*RUN, "--gpus-per-trial", GPUS_TOO_MANY], "more than this machine"),
    ("gpus-negative", [*RUN, "--gpus-per-trial", "-1"], "at least 0"),
    ("cpus-zero", [*RUN, "--cpus-per-trial", "0"], "above 0"),
    ("cpus-nan", [*RUN, "--cpus-per-trial", "nan"], "finite"),
    ("cpus-above-machine", [*RUN, "--cpus-per-trial", CPUS_TOO_MANY], "more than this machine"),
    ("address-unreachable", [*RUN, "--address", "127.0.0.1:1"], "cannot reach a Ray cluster"),
    ("address-bad-port", [*RUN, "--address", "127.0.0.1:99999"], "cannot read --address"),
    ("address-bad-scheme", [*RUN, "--address", "http://127.0.0.1:1"], "cannot read --address"),
    # --- output folders and run ids
    ("out-under-a-file", [*RUN, "--out", "{in}/a_file/out"], "is a file, not a folder"),
    ("out-is-a-file", [*RUN, "--out", "{in}/a_file"], "is a file, not a folder"),
    ("cache-under-a-file", [*RUN, "--cache-dir", "{in}/a_file/cache"], "--cache-dir"),
    ("run-id-with-slash", [*RUN, "--run-id", "../escape"], "not a plain folder name"),
    ("resume-unknown-run", ["run", "--resume", "nope"], "no run 'nope' to resume"),
    ("out-empty", [*RUN, "--out", ""], "empty path"),
    # --- presets checked against their schema (the key and what it accepts)
    (
        "preset-unknown-section",
        [*RUN, "--preset", "{in}/typo_section.toml"],
        ("unknown section [finetun]", "did you mean [finetune]"),
    ),
    (
        "preset-unknown-key",
        [*RUN, "--preset", "{in}/unknown_key.toml"],
        ("unknown key [finetune] learning_rate", "lr"),
    ),
    (
        "preset-epochs-text",
        [*RUN, "--preset", "{in}/epochs_text.toml"],
        ("[finetune] epochs = 'two'", "a number > 0"),
    ),
    (
        "preset-batch-size-zero",
        [*RUN, "--preset", "{in}/batch_zero.toml"],
        ("[pretrain] batch_size = 0", "a whole number ≥ 1"),
    ),
    (
        "preset-val-fraction",
        [*RUN, "--preset", "{in}/val_fraction.toml"],
        ("[data] val_fraction = 1.5", "> 0 and < 1"),
    ),
    (
        "preset-val-fraction-empties-a-split",
        [*RUN, "--preset", "{in}/val_empty.toml"],
        ("val_empty.toml on digits", "val_fraction=0.0001 of 1438", "empty"),
    ),
    (
        "preset-val-fraction-leaves-one-training-image",
        [*RUN, "--preset", "{in}/val_nearly_all.toml"],
        ("val_nearly_all.toml on digits", "1437 for validation and 1 for training", "10 classes"),
    ),
    (
        "preset-train-subset-over-the-pool",
        [*RUN, "--preset", "{in}/subset_too_big.toml"],
        ("subset_too_big.toml on digits", "train_subset=5000", "lower train_subset"),
    ),
    (
        "preset-budget-negative",
        [*RUN, "--preset", "{in}/budget_negative.toml"],
        ("[budget] max_search_samples = -5", "≥ 1"),
    ),
    ("preset-lr-nan", [*RUN, "--preset", "{in}/lr_nan.toml"], ("[finetune] lr = nan", "finite")),
    (
        "preset-max-steps-negative",
        [*RUN, "--preset", "{in}/max_steps_negative.toml"],
        ("[finetune] max_steps = -3", "≥ 1, or leave it out"),
    ),
    (
        "preset-pretrain-epochs-negative",
        [*RUN, "--preset", "{in}/pretrain_negative.toml"],
        ("[pretrain] epochs = -2", "a number > 0"),
    ),
    (
        "preset-trial-seconds-huge",
        [*RUN, "--preset", "{in}/trial_seconds_huge.toml"],
        ("[budget] max_trial_seconds", "≤ 31,622,400"),
    ),
    (
        "preset-method-section-unknown",
        [*RUN, "--preset", "{in}/method_section_unknown.toml"],
        ("[methods.nosuch] names no method", "uniform"),
    ),
    (
        "preset-method-section-unwanted",
        [*RUN, "--preset", "{in}/method_section_unwanted.toml"],
        ("unknown key [methods.uniform] x", "known: bits"),
    ),
    # --- resume: the run's own settings, its recipe, its files intact
    (
        "resume-with-task-flags",
        ["run", "--resume", "r", "--seeds", "1", "--space", "resnet20"],
        ("leave out --space, --seeds"),
    ),
    (
        "resume-with-constraint",
        ["run", "--resume", "r", "--constraint", "bitops<=0.5"],
        "leave out --constraint",
    ),
    (
        "resume-recipe-changed",
        ["run", "--resume", "r", "--out", "{in}/recipe_changed"],
        ("the recipe changed", "restore the preset file or start a new run"),
    ),
    (
        "resume-metadata-junk",
        ["run", "--resume", "r", "--out", "{in}/meta_junk"],
        ("metadata.json is unreadable", "start a new run"),
    ),
    (
        "resume-metadata-list",
        ["run", "--resume", "r", "--out", "{in}/meta_list"],
        "metadata.json is not a JSON object",
    ),
    (
        "resume-metadata-no-settings",
        ["run", "--resume", "r", "--out", "{in}/meta_no_settings"],
        "metadata.json has no 'settings' key",
    ),
    (
        "resume-metadata-wrong-shape",
        ["run", "--resume", "r", "--out", "{in}/meta_seeds_text"],
        ("metadata.json: settings seeds = '0'", "list"),
    ),
    (
        "resume-metadata-seeds-out-of-range",
        ["run", "--resume", "r", "--out", "{in}/meta_seeds_range"],
        ("metadata.json: settings seeds", "-1", "greater than or equal to 0"),
    ),
    (
        "resume-records-empty",
        ["run", "--resume", "r", "--out", "{in}/records_empty"],
        ("records.parquet is damaged (an empty file)", "1 trial outbox(es)", "rebuilds"),
    ),
    (
        "resume-records-garbage",
        ["run", "--resume", "r", "--out", "{in}/records_junk"],
        ("records.parquet is damaged", "no trial outbox holds rows"),
    ),
    (
        "resume-records-foreign",
        ["run", "--resume", "r", "--out", "{in}/records_foreign"],
        "holds rows of run other, not of r",
    ),
    (
        "resume-outbox-junk",
        ["run", "--resume", "r", "--out", "{in}/outbox_junk"],
        ("rows.json is not JSON", "delete it, and --resume reruns that trial"),
    ),
    # --- seeds, budgets, method options
    ("seeds-not-integers", [*RUN, "--seeds", "a,b"], "seeds must be integers"),
    ("seeds-float", [*RUN, "--seeds", "1.5"], "seeds must be integers"),
    ("seeds-negative", [*RUN, "--seeds", "-1"], "between 0 and"),
    ("seeds-repeated", [*RUN, "--seeds", "0,1,0"], "given twice"),
    ("seeds-empty", [*RUN, "--seeds", ","], "seeds must be integers"),
    ("seeds-non-ascii-digit", [*RUN, "--seeds", "\u0663"], "seeds must be integers"),
    (
        "constraint-twice",
        [*RUN, "--constraint", "bitops<=0.3,bitops<=0.3"],
        ("'bitops<=0.3' is given twice", "list each once"),
    ),
    (
        "constraint-twice-spelled-apart",
        [*RUN, "--constraint", "bitops<=0.3,bitops<=0.30"],
        ("given twice in --constraint (bitops<=0.3, bitops<=0.30)"),
    ),
    ("constraint-overflows", [*RUN, "--constraint", "bitops<=1e300G"], "too large"),
    ("trial-seconds-beyond-timer", [*RUN, "--max-trial-seconds", "1e12"], "at most 31622400"),
    ("search-seconds-beyond-timer", [*RUN, "--max-search-seconds", "1e300"], "at most"),
    ("max-samples-negative", [*RUN, "--max-search-samples", "-5"], "at least 1"),
    ("max-samples-float", [*RUN, "--max-search-samples", "1.5"], "whole number"),
    ("max-seconds-zero", [*RUN, "--max-search-seconds", "0"], "above 0"),
    ("method-options-not-json", [*RUN, "--method-options", "{bad"], "not valid JSON"),
    ("method-options-list", [*RUN, "--method-options", "[1]"], "must be a JSON object"),
    (
        "method-options-unknown-method",
        [*RUN, "--method-options", '{"random": {"num_samples": 3}}'],
        "'random', which is not in --methods",
    ),
    (
        "method-options-not-a-dict",
        [*RUN, "--method-options", '{"uniform": 3}'],
        "must be a JSON object of config keys",
    ),
    # --- cost: names and policy files of the wrong shape
    ("cost-unknown-space", ["cost", "--space", "vgg"], ("unknown space 'vgg'", "resnet20")),
    ("cost-uniform-bits-5", ["cost", "--policy", "w5a5"], "not in the allowed set"),
    ("cost-unreadable-spec", ["cost", "--policy", "nonsense"], "w4a4"),
    (
        "cost-unknown-layer",
        ["cost", "--space", "resnet20", "--policy", "{in}/unknown_layer.json"],
        "unknown layer",
    ),
    ("cost-bits-5", ["cost", "--space", "resnet20", "--policy", "{in}/bits5.json"], "w_bits=5"),
    (
        "cost-json-list",
        ["cost", "--space", "resnet20", "--policy", "{in}/list.json"],
        "must be a JSON object",
    ),
    (
        "cost-no-w-bits",
        ["cost", "--space", "resnet20", "--policy", "{in}/no_w_bits.json"],
        "has no w_bits",
    ),
    (
        "cost-string-bits",
        ["cost", "--space", "resnet20", "--policy", "{in}/string_bits.json"],
        "must be integers",
    ),
    (
        "cost-three-bits",
        ["cost", "--space", "resnet20", "--policy", "{in}/triple.json"],
        '{"w_bits": B, "a_bits": B}',
    ),
    (
        "cost-missing-layers",
        ["cost", "--space", "resnet20", "--policy", "{in}/partial.json"],
        "missing 17 layer(s)",
    ),
    (
        "cost-fixed-layer",
        ["cost", "--space", "resnet20", "--policy", "{in}/fixed_at_4.json"],
        "fixed at W8A8",
    ),
    ("cost-not-json", ["cost", "--policy", "{in}/not_json.json"], "not valid JSON"),
    ("cost-missing-file", ["cost", "--policy", "{in}/nowhere.json"], "does not exist"),
    ("cost-bad-arch-json", ["cost", "--arch", "{bad"], "neither a JSON file nor inline JSON"),
    (
        "cost-bad-arch",
        ["cost", "--space", "mbv3-cifar", "--arch", '{"kernels": [3]}'],
        "needs exactly the keys",
    ),
    ("cost-fixed-bits", ["cost", "--fixed-bits", "5"], "fixed_bits must be one of"),
    ("cost-num-classes-zero", ["cost", "--num-classes", "0"], "at least 1"),
    ("cost-num-classes-huge", ["cost", "--num-classes", "10000000"], "at most"),
    # --- leaderboard
    ("leaderboard-missing-dir", ["leaderboard", "{in}/nowhere"], "does not exist"),
    ("leaderboard-nothing-readable", ["leaderboard", "{in}/unreadable_run"], "no readable"),
    (
        "leaderboard-out-under-a-file",
        ["leaderboard", "{in}/unreadable_run", "--out", "{in}/a_file/lb"],
        "is a file, not a folder",
    ),
]


def _materials(folder: Path) -> None:
    for name, content in FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture()
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a case gets as far as running trials."""

    def started(*args: object, **kwargs: object) -> None:
        pytest.fail("a bad input reached the executor (validation missed it)")

    monkeypatch.setattr(benchmark.harness.executors, "run_serial", started)
    monkeypatch.setattr(benchmark.harness.executors, "run_ray", started)


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(
    argv: list[str],
    expected: str | tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    no_training: None,
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    _materials(inputs)
    argv = [a.replace("{in}", str(inputs)) for a in argv]
    if argv[0] == "run" and "--out" not in argv:
        argv += ["--out", str(out)]
    monkeypatch.chdir(tmp_path)  # a default path (results/) would land here
    before = _tree(tmp_path)

    code = main(argv)  # no_training fails it if it reaches the executor (no clock raced)

    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for word in (expected,) if isinstance(expected, str) else expected:
        assert word in err, err
    assert "Traceback" not in err + captured.out
    assert not out.exists()
    assert _tree(tmp_path) == before, "a bad input wrote files"
