"""One typed config per method: the preset's section sets its defaults, options override
them, every bad value is refused with one line, and the variant is named by what changed."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from benchmark.arena import Method, PresetError
from benchmark.arena.presets import Preset, list_presets, load_preset
from benchmark.harness.spec import config_json, variant_name
from methods import changed_options, get_method, list_methods

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN = [name for name in list_methods() if get_method(name).__module__.startswith("methods.")]


def test_every_built_in_method_has_one_config_class_named_after_it() -> None:
    assert set(BUILT_IN) >= {"dnas", "haq", "hawq", "ompq", "oqat", "qfa", "random", "uniform"}
    for name in BUILT_IN:
        cls = get_method(name)
        assert cls.config_class is not None, name
        assert cls.config_class.__name__.endswith("Config"), cls.config_class.__name__
        assert "__init__" not in cls.__dict__, f"{name}: settings go in its config class"
        cls.config_class()  # the defaults are valid


@pytest.mark.parametrize("preset_name", list_presets())
@pytest.mark.parametrize("name", BUILT_IN)
def test_the_preset_section_sets_the_defaults(name: str, preset_name: str) -> None:
    cls, preset = get_method(name), load_preset(preset_name)
    config = cls.configure(preset)
    section = preset.methods.get(name, {})
    defaults = cls.config_class()
    for field in dataclasses.fields(config):
        expected = getattr(cls.config_class(**{field.name: section[field.name]}), field.name) if (
            field.name in section
        ) else getattr(defaults, field.name)  # fmt: skip
        assert getattr(config, field.name) == expected, (name, preset_name, field.name)
    assert cls(config).config == config


def _other_value(value: object) -> object | None:
    """A different valid-looking value of the same kind (None: none to try)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, tuple) and len(value) > 1:
        return value[:-1]
    return None


@pytest.mark.parametrize("name", BUILT_IN)
def test_an_option_overrides_the_section_and_names_the_variant(name: str) -> None:
    cls, preset = get_method(name), load_preset("smoke")
    base = cls.configure(preset)
    tried = 0
    for field in dataclasses.fields(base):
        other = _other_value(getattr(base, field.name))
        if other is None:
            continue
        try:
            changed = cls.configure(preset, {field.name: other})
        except PresetError:
            continue  # out of its range or against another key: the refusal tests cover it
        tried += 1
        assert getattr(changed, field.name) == other
        assert changed_options(cls, preset, {field.name: other}) == {field.name: other}
        text = f"{field.name}={json.dumps(other, separators=(',', ':'))}"
        assert variant_name(name, {field.name: other}, {}) == f"{name}[{text}]"
        same = {field.name: getattr(base, field.name)}
        assert changed_options(cls, preset, same) == {}  # the preset's own value: no variant
    assert tried, f"{name}: no number, flag or list to override"


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_bad_value_is_refused_with_one_line_naming_its_key(name: str) -> None:
    cls, preset = get_method(name), load_preset("smoke")
    for field in dataclasses.fields(cls.config_class):
        with pytest.raises(PresetError) as info:
            cls.configure(preset, {field.name: {"not": "a value"}})
        text = str(info.value)
        assert "\n" not in text and text.startswith(f"--method-options for {name}: ")
        assert re.search(rf"\b{field.name}\b", text), text
    with pytest.raises(PresetError, match="unknown key"):
        cls.configure(preset, {"no_such_key": 1})
    broken = Preset.from_dict({**preset.to_dict(), "methods": {name: {"no_such_key": 1}}})
    with pytest.raises(PresetError, match=rf"preset smoke: unknown key \[methods.{name}\]"):
        cls.configure(broken)


def test_the_row_records_the_whole_config() -> None:
    cls = get_method("ompq")
    config = cls.configure(load_preset("smoke"), {"a_bits": 4})
    assert '"a_bits": 4' in config_json(config) and '"beta": 10.0' in config_json(config)

    class Bare(Method):
        name = "bare"

        def search(self, ctx):  # pragma: no cover - never searched here
            raise AssertionError

    assert config_json(Bare.configure(load_preset("smoke"))) == "{}"
    with pytest.raises(PresetError, match="takes no options"):
        Bare.configure(load_preset("smoke"), {"x": 1})


def test_no_method_reads_a_second_configuration_channel() -> None:
    for path in sorted((ROOT / "methods").rglob("*.py")):
        if path == ROOT / "methods" / "__init__.py":
            continue  # the registry validates the preset's sections
        text = path.read_text()
        for word in ("preset_section", "ctx.preset.methods", "def __init__(self, **"):
            assert word not in text, f"{path.relative_to(ROOT)}: {word} (use self.config)"
