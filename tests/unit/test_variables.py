"""The declaration machinery, on a small settings class of its own: the readers, groups,
composites, checks across settings, fallbacks, and refusing what is not declared."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest

from jibri_pod_controller.core.variables import (
    Check,
    Choice,
    ConfigError,
    ConfigErrors,
    Context,
    Flag,
    Integer,
    LocalPath,
    Number,
    OrUnset,
    Parsed,
    Reader,
    Setting,
    Text,
    composite,
    declarations,
    group,
    read_settings,
    rules,
    setting,
    settings_class,
)

CONTEXT = Context(hostname="host-1")


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@settings_class
class Window:
    low: int = setting(
        "LOW",
        Integer(0, 10),
        "1",
        help="Low.",
        check=Check(("high",), lambda low, high: None if low < high else "not below HIGH", "."),
    )
    high: int = setting("HIGH", Integer(0, 10), "5", help="High.")


SWITCH = Setting("SWITCH", OrUnset(Flag()), None, "On or off.", shown="(off)")


@settings_class
class Extra:
    size: float = setting("SIZE", Number(1, 2), "1.5", help="Size.")


def _extra(reader: Reader) -> Extra | None:
    return reader.build(Extra) if reader.value(SWITCH) else None


@settings_class
class Toy:
    name: str = setting(
        "NAME",
        Text("a lower-case name", str.islower, otherwise=lambda c: c.hostname),
        None,
        help=".",
    )
    colour: Colour = setting("COLOUR", Choice(Colour), "red", help=".")
    words: list[str] = setting("WORDS", Parsed(lambda t: t.split(":"), "words"), "a:b", help=".")
    window: Window = group(Window)
    extra: Extra | None = composite(_extra, SWITCH, Extra, doc="SIZE is read when SWITCH is on.")
    level: str = setting(
        "LEVEL", Text(), "info", help=".", fallback=("OLD_LEVEL", Text("upper", str.isupper))
    )


def read(env: dict[str, str]) -> Toy:
    return read_settings(Toy, env, CONTEXT)


def test_defaults_and_derived_defaults() -> None:
    toy = read({})
    assert (toy.name, toy.colour, toy.words, toy.level) == (
        "host-1",
        Colour.RED,
        ["a", "b"],
        "info",
    )
    assert (toy.window.low, toy.window.high, toy.extra) == (1, 5, None)


def test_the_docs_order_walks_groups_and_composites() -> None:
    names = [s.name for s in declarations(Toy)]
    assert names == ["NAME", "COLOUR", "WORDS", "LOW", "HIGH", "SWITCH", "SIZE", "LEVEL"]
    assert [name for name, _ in rules(Toy)] == ["LOW", "SWITCH"]
    assert SWITCH.shown_default == "(off)"


@pytest.mark.parametrize(
    ("env", "errors"),
    [
        ({"NAME": "Upper"}, ["NAME: 'Upper' is not a lower-case name"]),
        ({"COLOUR": "Green"}, ["COLOUR: 'green' is not one of red, blue"]),
        ({"LOW": "11"}, ["LOW: 11 is out of range [0, 10]"]),
        ({"LOW": "5"}, ["LOW: not below HIGH"]),
        # A check is not run on a value that failed: only the value's own error.
        ({"LOW": "x", "HIGH": "0"}, ["LOW: 'x' is not an integer"]),
        ({"SWITCH": "on", "SIZE": "3"}, ["SIZE: 3 is out of range [1, 2]"]),
        ({"SWITCH": "maybe"}, ["SWITCH: 'maybe' is not true or false"]),
        ({"OLD_LEVEL": "debug"}, ["OLD_LEVEL: 'debug' is not upper"]),
        (
            {"NAME": "X", "LOW": "9", "HIGH": "1", "SWITCH": "1", "SIZE": "0"},
            [
                "NAME: 'X' is not a lower-case name",
                "LOW: not below HIGH",
                "SIZE: 0 is out of range [1, 2]",
            ],
        ),
    ],
)
def test_every_error_names_its_variable(env: dict[str, str], errors: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        read(env)
    found = caught.value.errors if isinstance(caught.value, ConfigErrors) else [caught.value]
    assert [str(e) for e in found] == errors


def test_a_composite_and_a_fallback_read_their_parts() -> None:
    toy = read({"SWITCH": "yes", "SIZE": "2", "OLD_LEVEL": "DEBUG", "LEVEL": " "})
    assert toy.extra == Extra(size=2.0)
    assert toy.level == "DEBUG"
    assert read({"LEVEL": "warn", "OLD_LEVEL": "DEBUG"}).level == "warn"  # the new name wins


@pytest.mark.parametrize(
    ("reader", "text", "value"),
    [
        (Number(0.25, or_zero=lambda v: f"{v:g} is too small"), "0", 0.0),
        (Number(0.25, or_zero=lambda v: f"{v:g} is too small"), "0.25", 0.25),
        (Number(1, 3600, whole_seconds="why"), "15.0", 15.0),
        (Number(0), "1e300", 1e300),
    ],
)
def test_numbers_accepted(reader: Number, text: str, value: float) -> None:
    assert reader(text) == value


@pytest.mark.parametrize(
    ("reader", "text", "problem"),
    [
        (Number(0.25, or_zero=lambda v: f"{v:g} is too small"), "0.1", "0.1 is too small"),
        (Number(0.25, or_zero=lambda v: f"{v:g} is too small"), "-1", "out of range [0, inf]"),
        (Number(1, 3600, whole_seconds="why"), "15.5", "15.5 is not whole seconds (why)"),
        (Number(1, 2), "nan", "nan is out of range [1, 2]"),
        (Number(1, 2), "soon", "'soon' is not a number"),
    ],
)
def test_numbers_refused(reader: Number, text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        reader(text)


def test_paths(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    assert LocalPath(directory=True)(str(tmp_path)) == tmp_path
    assert LocalPath(directory=False)(str(file)) == file
    assert LocalPath(directory=True).unset(CONTEXT) is None
    with pytest.raises(ValueError, match="is not a readable directory"):
        LocalPath(directory=True)(str(file))
    with pytest.raises(ValueError, match="is not a readable file"):
        LocalPath(directory=False)(str(tmp_path))


def test_a_required_text_says_why() -> None:
    with pytest.raises(ValueError, match=r"^is required when it is$"):
        Text(required="is required when it is").unset(CONTEXT)


def test_what_is_not_declared_is_refused() -> None:
    @dataclass(frozen=True)
    class Plain:
        x: int

    with pytest.raises(TypeError, match="field x is not declared"):
        read_settings(Plain, {}, CONTEXT)

    @settings_class
    class BadCheck:
        a: int = setting(
            "A", Integer(0, 1), "0", help=".", check=Check(("b",), lambda a, b: None, ".")
        )

    with pytest.raises(TypeError, match="unknown fields"):
        read_settings(BadCheck, {}, CONTEXT)
