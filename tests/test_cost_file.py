"""User cost tables (``benchmark.arena.cost_file``): CSV and JSON round trips against the
shared cost model, and each way a table can fail to fit a space (one line each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.arena import CostFileError, cost_file_from_table, get_space, load_cost_file
from benchmark.arena.cost_file import parse_csv, required_bits


@pytest.fixture(scope="module")
def resnet20():
    space = get_space("resnet20")
    return space, space.cost_table()


def test_round_trip_csv_and_json_equal_the_shared_table(resnet20, tmp_path: Path) -> None:
    space, table = resnet20
    made = cost_file_from_table(table, "resnet20")
    assert required_bits(table) == (2, 3, 4, 8)
    for name in ("lat.csv", "lat.json"):
        loaded = load_cost_file(made.write(tmp_path / name))
        assert loaded == made and loaded.unit == "BitOPs" and loaded.space == "resnet20"
        loaded.check("resnet20", table)
        bits = (2, 3, 4, 8)
        np.testing.assert_array_equal(
            loaded.coefficients(table, bits), table.coefficients("bitops", bits)
        )
        assert loaded.fixed_total(table) == table.fixed_total("bitops")
        assert loaded.reference_total(table) == space.reference().bitops_w8a8
    size = cost_file_from_table(table, "resnet20", "size")
    assert size.layer_cost("layer1.0.conv1", 4, 2) == table.size_bits("layer1.0.conv1", 4)


def test_the_readme_example_reads(tmp_path: Path) -> None:
    text = (
        "# space=resnet20 unit=ms\n"
        "layer,w_bits,a_bits,cost\n"
        "layer1.0.conv1,2,2,0.0123\n"
        "layer1.0.conv1,2,3,0.0131\n"
        "layer1.0.conv1,2,4,0.0140\n"
    )
    table = parse_csv(text, "lat.csv")
    assert table.unit == "ms" and table.layer_cost("layer1.0.conv1", 2, 3) == 0.0131


def test_mbv3_tables_need_w8a8_beside_the_choices() -> None:
    space = get_space("mbv3-cifar")
    table = space.cost_table(space.reference_arch)
    assert required_bits(table) == (2, 3, 4, 8)
    made = cost_file_from_table(table, "mbv3-cifar")
    made.check("mbv3-cifar", table)
    name = table.searchable[0]
    row = {p: c for p, c in made.costs[name].items() if p != (8, 8)}
    short = type(made)(made.space, made.unit, {**made.costs, name: row}, "t")
    with pytest.raises(CostFileError, match=f"no cost for {name} at W8A8"):
        short.check("mbv3-cifar", table)


HEAD = "# space=resnet20 unit=ms\nlayer,w_bits,a_bits,cost\n"


def _full_csv(table, change: tuple[str, str] | None = None, extra: str = "") -> str:
    text = cost_file_from_table(table, "resnet20").to_csv() + extra
    if change is not None:
        old, new = change
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("wrong-space", lambda t: _full_csv(t, ("space=resnet20", "space=mbv3-cifar")),
         "is for space 'mbv3-cifar', not 'resnet20'"),
        ("no-space", lambda t: _full_csv(t, ("# space=resnet20 unit=BitOPs\n", "")),
         "does not say which space it is for"),
        ("unknown-layer", lambda t: _full_csv(t, extra="layer9.conv,2,2,1.0\n"),
         ("line 293", "unknown layer 'layer9.conv' for resnet20")),
        ("bits-not-allowed", lambda t: _full_csv(t, ("layer2.0.conv1,3,4,", "layer2.0.conv1,3,5,")),
         ("a_bits 5 of layer2.0.conv1 is not a bit-width",)),
        ("negative", lambda t: _full_csv(t, ("\nlayer1.1.conv2,2,2,", "\nlayer1.1.conv2,2,2,-")),
         ("line", "is negative")),
        ("not-a-number", lambda t: HEAD + "layer1.0.conv1,2,2,fast\n", "'fast' is not a number"),
        ("nan", lambda t: HEAD + "layer1.0.conv1,2,2,nan\n", "not a finite number"),
        ("bits-text", lambda t: HEAD + "layer1.0.conv1,two,2,1\n", "w_bits 'two' is not a whole"),
        ("bad-header", lambda t: "# space=resnet20\nname,w,a,latency\n", "the header must be"),
        ("no-header", lambda t: "# space=resnet20\n", "no header line"),
        ("short-row", lambda t: HEAD + "layer1.0.conv1,2,2\n", "3 fields, expected 4"),
        ("twice", lambda t: HEAD + "layer1.0.conv1,2,2,1\nlayer1.0.conv1,2,2,1\n",
         "given twice (first at line 3)"),
    ],
)  # fmt: skip
def test_csv_problems_are_one_line(name, make, message, resnet20, tmp_path: Path) -> None:
    _, table = resnet20
    path = tmp_path / f"{name}.csv"
    path.write_text(make(table))
    with pytest.raises(CostFileError) as err:
        load_cost_file(path).check("resnet20", table)
    text = str(err.value)
    assert "\n" not in text and str(path) in text
    for part in (message,) if isinstance(message, str) else message:
        assert part in text, text


def test_missing_pairs_layers_and_fixed_layers(resnet20, tmp_path: Path) -> None:
    _, table = resnet20
    full = cost_file_from_table(table, "resnet20")
    costs = {n: dict(r) for n, r in full.costs.items()}
    del costs["layer3.2.conv2"][(3, 8)]
    with pytest.raises(CostFileError, match="no cost for layer3.2.conv2 at W3A8"):
        type(full)("resnet20", "ms", costs, "t").check("resnet20", table)
    costs = {n: dict(r) for n, r in full.costs.items() if n != "layer2.1.conv1"}
    with pytest.raises(CostFileError, match="no costs for layer 'layer2.1.conv1'"):
        type(full)("resnet20", "ms", costs, "t").check("resnet20", table)
    costs = {n: dict(r) for n, r in full.costs.items() if n not in ("conv1", "fc")}
    without_fixed = type(full)("resnet20", "ms", costs, "t")
    without_fixed.check("resnet20", table)  # fixed layers may be left out
    assert without_fixed.fixed_total(table) == 0.0
    costs["fc"] = {(4, 4): 1.0}
    with pytest.raises(CostFileError, match="fc is fixed at W8A8 .* no cost for it"):
        type(full)("resnet20", "ms", costs, "t").check("resnet20", table)


def test_json_problems(resnet20, tmp_path: Path) -> None:
    _, table = resnet20
    cases = {
        "junk": ("{not json", "is not valid JSON"),
        "shape": (json.dumps([1, 2]), 'a JSON table is {"space"'),
        "key": (json.dumps({"space": "resnet20", "costs": {"conv1": {"8x8": 1}}}),
                "key '8x8' is not a bit pair"),
        "text": (json.dumps({"space": "resnet20", "costs": {"conv1": {"w8a8": "1"}}}),
                 None),
        "bool": (json.dumps({"space": "resnet20", "costs": {"conv1": {"w8a8": True}}}),
                 "not a number"),
        "nospace": (json.dumps({"costs": {"conv1": {"w8a8": 1}}}), 'add "space": NAME'),
    }  # fmt: skip
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        if message is None:  # a number in text is read (as CSV cells are) ...
            loaded = load_cost_file(path)
            assert loaded.layer_cost("conv1", 8, 8) == 1.0
            with pytest.raises(CostFileError, match="no costs for layer 'layer1.0.conv1'"):
                loaded.check("resnet20", table)  # ... and then the table is incomplete
            continue
        with pytest.raises(CostFileError, match=message.replace("(", r"\(")):
            load_cost_file(path)
    with pytest.raises(CostFileError, match="does not exist"):
        load_cost_file(tmp_path / "none.csv")
    with pytest.raises(CostFileError, match="is a folder"):
        load_cost_file(tmp_path)
