"""Policies: validation against a space, the fixed-layer convention, the JSON format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.arena.policy import (
    LayerBits,
    PolicyError,
    load_policy_file,
    parse_uniform,
    policy_from_dict,
    policy_to_dict,
    uniform_policy,
    validate_policy,
)
from benchmark.arena.spaces import SpaceError, get_space

SEARCHABLE = [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2)]
ALL_LAYERS = ["conv1", *SEARCHABLE, "fc"]


@pytest.fixture(scope="module")
def space():
    return get_space("resnet20")


def mixed(names: list[str] = SEARCHABLE) -> dict[str, LayerBits]:
    return {n: LayerBits((2, 3, 4, 8)[i % 4], (8, 4, 3, 2)[i % 4]) for i, n in enumerate(names)}


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- the space's layers


def test_resnet20_layer_lists(space) -> None:
    assert space.layer_names() == ALL_LAYERS
    assert space.searchable_layers() == SEARCHABLE
    assert space.fixed_layer_names() == ["conv1", "fc"]
    assert {2, 3, 4, 8} <= set(space.allowed_bits())
    assert not {0, 1, 5, 6, 7, 16} & set(space.allowed_bits())


def test_valid_policy_is_completed_with_fixed_layers(space) -> None:
    policy = mixed()
    full = space.full_policy(policy)
    assert list(full) == ALL_LAYERS  # network order
    assert full["conv1"] == full["fc"] == LayerBits(8, 8)
    assert {n: full[n] for n in SEARCHABLE} == policy
    # listing a fixed layer at its fixed bits is allowed and changes nothing
    assert space.full_policy({**policy, "conv1": LayerBits(8, 8)}) == full


# --------------------------------------------------------------------------- errors


def test_unknown_layer(space) -> None:
    with pytest.raises(PolicyError) as err:
        space.full_policy({**mixed(), "layer4.0.conv1": LayerBits(4, 4)})
    message = one_line(err)
    assert "unknown layer" in message and "'layer4.0.conv1'" in message
    assert "layer1.0.conv1" in message  # points at what is valid


@pytest.mark.parametrize("bad", [5, 1, 0, 16, -4])
@pytest.mark.parametrize("kind", ["w_bits", "a_bits"])
def test_bits_outside_the_set(space, bad: int, kind: str) -> None:
    policy = mixed()
    good = policy["layer2.1.conv2"]
    policy["layer2.1.conv2"] = (
        LayerBits(bad, good.a_bits) if kind == "w_bits" else LayerBits(good.w_bits, bad)
    )
    with pytest.raises(PolicyError) as err:
        space.full_policy(policy)
    message = one_line(err)
    assert "'layer2.1.conv2'" in message and f"{kind}={bad}" in message
    assert "allowed set [2, 3, 4, 8" in message


def test_missing_layers(space) -> None:
    policy = mixed()
    del policy["layer3.0.conv2"], policy["layer3.1.conv1"]
    with pytest.raises(PolicyError) as err:
        space.full_policy(policy)
    message = one_line(err)
    assert "missing 2 layer" in message and "'layer3.0.conv2'" in message
    with pytest.raises(PolicyError, match="missing 18"):
        space.full_policy({})


def test_policy_errors_are_value_errors() -> None:
    assert issubclass(PolicyError, ValueError)


def test_validate_policy_directly() -> None:
    names = ["a", "b"]
    validate_policy({"a": LayerBits(4, 4), "b": LayerBits(2, 8)}, names, (2, 4, 8))
    validate_policy({"a": LayerBits(4, 4)}, names, (2, 4, 8), require_all=False)
    with pytest.raises(PolicyError, match="missing"):
        validate_policy({"a": LayerBits(4, 4)}, names, (2, 4, 8))
    with pytest.raises(PolicyError, match="'c'"):
        validate_policy({"c": LayerBits(4, 4)}, names, (2, 4, 8), require_all=False)
    with pytest.raises(PolicyError, match="a_bits=3"):
        validate_policy({"a": LayerBits(4, 3), "b": LayerBits(4, 4)}, names, (2, 4, 8))


# --------------------------------------------------------------------------- fixed layers


@pytest.mark.parametrize("layer", ["conv1", "fc"])
@pytest.mark.parametrize("bits", [LayerBits(4, 4), LayerBits(8, 4), LayerBits(32, 32)])
def test_fixed_layers_reject_other_bits(space, layer: str, bits: LayerBits) -> None:
    with pytest.raises(PolicyError) as err:
        space.full_policy({**mixed(), layer: bits})
    message = one_line(err)
    assert f"'{layer}'" in message and "fixed" in message and "W8A8" in message


def test_fixed_bits_32_makes_fixed_layers_full_precision() -> None:
    fp = get_space("resnet20", fixed_bits=32)
    full = fp.full_policy(mixed())
    assert full["conv1"] == full["fc"] == LayerBits(32, 32)
    assert fp.uniform_policy(4)["fc"] == LayerBits(32, 32)
    assert fp.config()["fixed_bits"] == 32
    with pytest.raises(PolicyError, match="fixed"):
        fp.full_policy({**mixed(), "conv1": LayerBits(8, 8)})
    model = fp.build(policy=mixed())
    assert (model.conv1.w_bits, model.fc.a_bits) == (32, 32)


def test_fixed_bits_must_be_sensible() -> None:
    assert get_space("resnet20", fixed_bits=4).uniform_policy(2)["conv1"] == LayerBits(4, 4)
    with pytest.raises(SpaceError, match="fixed_bits"):
        get_space("resnet20", fixed_bits=5)


# --------------------------------------------------------------------------- helpers


def test_uniform_and_parse(space) -> None:
    assert uniform_policy(["a", "b"], 4, 2) == {"a": LayerBits(4, 2), "b": LayerBits(4, 2)}
    assert parse_uniform("w4a8") == LayerBits(4, 8)
    assert parse_uniform(" W2A3 ") == LayerBits(2, 3)
    assert parse_uniform("w4") is None and parse_uniform("4bit") is None
    full = space.parse_policy("w3a4")
    assert full == {
        n: LayerBits(8, 8) if n in ("conv1", "fc") else LayerBits(3, 4) for n in ALL_LAYERS
    }
    assert space.parse_policy(mixed()) == space.full_policy(mixed())
    with pytest.raises(PolicyError, match="w4a4"):
        space.parse_policy("four bits")
    with pytest.raises(PolicyError, match="w_bits=5"):
        space.parse_policy("w5a4")


# --------------------------------------------------------------------------- JSON


def test_json_round_trip(space, tmp_path: Path) -> None:
    policy = space.full_policy(mixed())
    data = policy_to_dict(policy)
    assert data["conv1"] == {"w_bits": 8, "a_bits": 8}
    assert data["layer1.0.conv1"] == {"w_bits": 2, "a_bits": 8}
    text = json.dumps(data)
    assert policy_from_dict(json.loads(text)) == policy
    path = tmp_path / "policy.json"
    path.write_text(text)
    loaded = load_policy_file(path)
    assert loaded == policy and list(loaded) == list(policy)
    assert space.full_policy(loaded) == policy
    assert load_policy_file(str(path)) == policy  # str paths too


def test_pair_form_is_accepted() -> None:
    assert policy_from_dict({"a": [4, 8], "b": (2, 2)}) == {
        "a": LayerBits(4, 8),
        "b": LayerBits(2, 2),
    }


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('["conv1", 8]', "JSON object"),
        ("42", "JSON object"),
        ('{"conv1": {"w_bits": 8}}', "conv1"),
        ('{"conv1": 8}', "conv1"),
        ('{"conv1": [8, 8, 8]}', "conv1"),
        ('{"conv1": {"w_bits": "8", "a_bits": 8}}', "integers"),
        ('{"conv1": {"w_bits": 8.0, "a_bits": 8}}', "integers"),
        ('{"conv1": {"w_bits": true, "a_bits": 8}}', "integers"),
        ('{"conv1": {"w_bits": 8, "a_bits": null}}', "integers"),
    ],
)
def test_malformed_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PolicyError, match=match) as err:
        load_policy_file(path)
    one_line(err)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy_file(tmp_path / "nowhere.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(PolicyError, match="not valid JSON") as err:
        load_policy_file(binary)
    one_line(err)
    with pytest.raises(PolicyError):
        load_policy_file(tmp_path)  # a folder


def test_file_with_bad_bits_fails_validation(space, tmp_path: Path) -> None:
    data = policy_to_dict(mixed())
    data["layer1.1.conv1"] = {"w_bits": 5, "a_bits": 4}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    policy = load_policy_file(path)  # well-formed JSON ...
    with pytest.raises(PolicyError, match="w_bits=5"):  # ... but not a policy of this space
        space.full_policy(policy)
