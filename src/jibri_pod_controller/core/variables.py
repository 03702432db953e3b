"""Settings declared once, as the fields of frozen dataclasses, and read from the environment.

A field of a `settings_class` is declared with `setting(...)`: the variable's name, its reader
(the type, and the bounds or choices it accepts), its default, its help text and any rule
across settings (`Check`). Everything else is derived from that one declaration:
`read_settings` walks the fields to build the object, and scripts/generate.py walks them
(`declarations`, `rules`) to write the chart's values.schema.json and values.yaml defaults and
docs/configuration.md. mypy checks each declaration: the reader's type is the field's type.

Values no single variable makes are fields too: a `group` is a nested settings class (its own
fields declared the same way), a `composite` is built by a function from several settings
(for example a value that is None unless a switch turns it on).

A bad value raises `ConfigError`, one line that starts with the variable's name. Every field is
read, so when several values are bad `ConfigErrors` names all of them (each setting's own errors
in declaration order, then the broken rules across settings); an operator fixes them in one go.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar, dataclass_transform

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


class ConfigError(ValueError):
    """A setting is missing or invalid. ``str()`` is one line naming the variable."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


class ConfigErrors(ConfigError):
    """Several settings are bad; ``errors`` has one `ConfigError` per problem, in order."""

    def __init__(self, errors: list[ConfigError]) -> None:
        ValueError.__init__(self, "\n".join(str(e) for e in errors))
        self.name = errors[0].name
        self.errors = errors


class Invalid(ValueError):
    """A reader refused a value; the message says what is wrong, without the variable's name."""


# -- readers: how one variable's text becomes a value -------------------------------------------


class Kind(StrEnum):
    """What a setting's value is, for the chart's values.schema.json and the docs."""

    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    FLAG = "flag"
    CHOICE = "choice"


@dataclass(frozen=True)
class Accepts:
    """The values a reader accepts, as the schema and the docs describe them."""

    kind: Kind
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    """The values of a CHOICE (case-insensitive)."""
    or_zero: bool = False
    """0 (off) is accepted too, below the minimum."""
    what: str = "text"
    """A TEXT value, in words ("a label selector")."""


@dataclass(frozen=True)
class Context:
    """What a default may depend on besides the environment."""

    hostname: str


class Read(ABC, Generic[T]):
    """How the text of one variable (stripped, never empty) becomes a value."""

    accepts: Accepts

    @abstractmethod
    def __call__(self, text: str) -> T: ...

    def unset(self, context: Context) -> T:
        """The value of a variable that is unset and has no default."""
        raise Invalid("is required")


class Integer(Read[int]):
    def __init__(self, minimum: int, maximum: int) -> None:
        self.accepts = Accepts(Kind.INTEGER, minimum, maximum)
        self.minimum, self.maximum = minimum, maximum

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise Invalid(f"{text!r} is not an integer") from None
        if not self.minimum <= value <= self.maximum:
            raise Invalid(f"{value} is out of range [{self.minimum}, {self.maximum}]")
        return value


class Number(Read[float]):
    """A decimal number within bounds (no maximum: any finite or infinite value above).

    ``or_zero``: 0 means off, and a value between 0 and the minimum is refused with the
    message this function gives. ``whole_seconds``: only whole numbers, for this reason.
    """

    def __init__(
        self,
        minimum: float,
        maximum: float | None = None,
        *,
        or_zero: Callable[[float], str] | None = None,
        whole_seconds: str | None = None,
    ) -> None:
        kind = Kind.INTEGER if whole_seconds else Kind.NUMBER
        self.accepts = Accepts(kind, minimum, maximum, or_zero=or_zero is not None)
        self.minimum, self.maximum = minimum, maximum
        self.below, self.whole_seconds = or_zero, whole_seconds

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise Invalid(f"{text!r} is not a number") from None
        low = 0.0 if self.below else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        if not low <= value <= high:
            raise Invalid(f"{value:g} is out of range [{low:g}, {high:g}]")
        if self.below and 0 < value < self.minimum:
            raise Invalid(self.below(value))
        if self.whole_seconds and value != int(value):
            raise Invalid(f"{value:g} is not whole seconds ({self.whole_seconds})")
        return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Flag(Read[bool]):
    accepts = Accepts(Kind.FLAG)

    def __call__(self, text: str) -> bool:
        value = text.lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise Invalid(f"{value!r} is not true or false")


class Choice(Read[E]):
    """One of an enum's values, case-insensitive."""

    def __init__(self, kind: type[E]) -> None:
        self.kind = kind
        self.accepts = Accepts(Kind.CHOICE, choices=tuple(m.value for m in kind))

    def __call__(self, text: str) -> E:
        value = text.lower()
        try:
            return self.kind(value)
        except ValueError:
            raise Invalid(f"{value!r} is not one of {', '.join(self.accepts.choices)}") from None


class Text(Read[str]):
    """Free text, or text that ``valid`` accepts (``what`` names it in the error)."""

    def __init__(
        self,
        what: str = "text",
        valid: Callable[[str], bool] | None = None,
        *,
        required: str = "is required",
        otherwise: Callable[[Context], str] | None = None,
    ) -> None:
        self.accepts = Accepts(Kind.TEXT, what=what)
        self.valid, self.required, self.otherwise = valid, required, otherwise

    def __call__(self, text: str) -> str:
        if self.valid is not None and not self.valid(text):
            raise Invalid(f"{text!r} is not {self.accepts.what}")
        return text

    def unset(self, context: Context) -> str:
        if self.otherwise is None:
            raise Invalid(self.required)
        return self(self.otherwise(context))


class Parsed(Read[T]):
    """Text parsed by a function; its ValueError's message is added to the error."""

    def __init__(self, parse: Callable[[str], T], what: str) -> None:
        self.parse = parse
        self.accepts = Accepts(Kind.TEXT, what=what)

    def __call__(self, text: str) -> T:
        try:
            return self.parse(text)
        except ValueError as exc:
            raise Invalid(f"{text!r} is not {self.accepts.what} ({exc})") from None


class LocalPath(Read[Path | None]):
    """An existing directory or file; unset: None."""

    def __init__(self, *, directory: bool) -> None:
        self.directory = directory
        self.accepts = Accepts(Kind.TEXT, what="a directory" if directory else "a file")

    def __call__(self, text: str) -> Path | None:
        path = Path(text)
        if self.directory and not path.is_dir():
            raise Invalid(f"{text!r} is not a readable directory")
        if not self.directory and not path.is_file():
            raise Invalid(f"{text!r} is not a readable file")
        return path

    def unset(self, context: Context) -> Path | None:
        return None


class OrUnset(Read[T | None]):
    """What ``read`` reads, or None when the variable is unset."""

    def __init__(self, read: Read[T]) -> None:
        self.read = read
        self.accepts = read.accepts

    def __call__(self, text: str) -> T | None:
        return self.read(text)

    def unset(self, context: Context) -> T | None:
        return None


# -- declarations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A rule across settings, declared on (and named after) the setting it refuses."""

    needs: tuple[str, ...]
    """The other fields of the same class the rule reads."""
    rule: Callable[..., str | None]
    """(this setting's value, then each needed value) -> the problem, or None."""
    doc: str
    """The rule in one sentence, for the docs."""


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable."""

    name: str
    read: Read[T]
    default: str | None
    """The text used when the variable is unset or blank; None: `Read.unset` decides."""
    help: str
    shown: str | None = None
    """The default as the docs show it, when it is not a fixed text ("(host name)")."""
    fallback: tuple[str, Read[T]] | None = None
    """Another variable, read by its own reader when this one is unset (an alias kept for an
    older name)."""
    check: Check | None = None

    @property
    def shown_default(self) -> str:
        return self.shown or self.default or "(unset)"


@dataclass(frozen=True)
class Group:
    cls: type[Any]


@dataclass(frozen=True)
class Composite:
    build: Callable[[Reader], Any]
    parts: tuple[Setting[Any] | type[Any], ...]
    """What ``build`` reads, in the docs' order: settings, and settings classes."""
    doc: str
    """The rule ``build`` applies across its parts, in one sentence, for the docs."""


_KEY = "jibri_pod_controller.declaration"


def setting(
    name: str,
    read: Read[T],
    default: str | None,
    /,
    help: str,
    *,
    shown: str | None = None,
    fallback: tuple[str, Read[T]] | None = None,
    check: Check | None = None,
) -> T:
    """Declare a field as the environment variable ``name``."""
    declared: T = field(metadata={_KEY: Setting(name, read, default, help, shown, fallback, check)})
    return declared


def group(cls: type[T]) -> T:
    """Declare a field as a nested settings class, read field by field."""
    declared: T = field(metadata={_KEY: Group(cls)})
    return declared


def composite(build: Callable[[Reader], T], *parts: Setting[Any] | type[Any], doc: str) -> T:
    """Declare a field built by ``build`` from the settings ``parts``, by the rule ``doc``."""
    declared: T = field(metadata={_KEY: Composite(build, parts, doc)})
    return declared


@dataclass_transform(
    frozen_default=True, kw_only_default=True, field_specifiers=(setting, group, composite)
)
def settings_class(cls: type[T]) -> type[T]:
    """A frozen, keyword-only dataclass whose every field is a declaration."""
    return dataclass(frozen=True, kw_only=True)(cls)


def _fields(cls: type[Any]) -> tuple[Field[Any], ...]:
    return fields(cls)


def _declaration(f: Field[Any]) -> Setting[Any] | Group | Composite:
    declaration = f.metadata.get(_KEY)
    if not isinstance(declaration, Setting | Group | Composite):
        raise TypeError(f"field {f.name} is not declared with setting(), group() or composite()")
    return declaration


def declarations(cls: type[Any]) -> Iterator[Setting[Any]]:
    """Every variable a settings class reads, in its declaration order."""
    for f in _fields(cls):
        declaration = _declaration(f)
        if isinstance(declaration, Setting):
            yield declaration
        elif isinstance(declaration, Group):
            yield from declarations(declaration.cls)
        else:
            for part in declaration.parts:
                if isinstance(part, Setting):
                    yield part
                else:
                    yield from declarations(part)


def rules(cls: type[Any]) -> Iterator[tuple[str, str]]:
    """Every rule across settings, as (the variable it names, the rule in one sentence)."""
    for f in _fields(cls):
        declaration = _declaration(f)
        if isinstance(declaration, Setting) and declaration.check is not None:
            yield declaration.name, declaration.check.doc
        elif isinstance(declaration, Group):
            yield from rules(declaration.cls)
        elif isinstance(declaration, Composite):
            named = next(p for p in declaration.parts if isinstance(p, Setting))
            yield named.name, declaration.doc


# -- reading -------------------------------------------------------------------------------------


def _each(error: ConfigError) -> list[ConfigError]:
    return error.errors if isinstance(error, ConfigErrors) else [error]


class Reader:
    """Reads declared settings from one environment mapping."""

    def __init__(self, env: Mapping[str, str], context: Context) -> None:
        self._env = env
        self._context = context

    def _text(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def value(self, declared: Setting[T]) -> T:
        """One variable's value (raises `ConfigError` naming the variable read)."""
        name, read, text = declared.name, declared.read, self._text(declared.name)
        if text is None and declared.fallback is not None:
            other, other_read = declared.fallback
            if (other_text := self._text(other)) is not None:
                name, read, text = other, other_read, other_text
        if text is None:
            text = declared.default
        try:
            return read.unset(self._context) if text is None else read(text)
        except Invalid as exc:
            raise ConfigError(name, str(exc)) from None

    def read_fields(self, cls: type[Any], *names: str) -> tuple[Any, ...]:
        """The values of some fields of a settings class, read alone (no checks)."""
        by_name = {f.name: f for f in _fields(cls)}
        return tuple(self._field(_declaration(by_name[name])) for name in names)

    def _field(self, declaration: Setting[Any] | Group | Composite) -> Any:
        if isinstance(declaration, Setting):
            return self.value(declaration)
        if isinstance(declaration, Group):
            return self.build(declaration.cls)
        return declaration.build(self)

    def build(self, cls: type[T]) -> T:
        """Every field of ``cls``, then its checks; raises all the errors found at once."""
        values: dict[str, Any] = {}
        errors: list[ConfigError] = []
        declared = [(f.name, _declaration(f)) for f in _fields(cls)]
        for key, declaration in declared:
            try:
                values[key] = self._field(declaration)
            except ConfigError as exc:
                errors.extend(_each(exc))
        for key, declaration in declared:
            if not isinstance(declaration, Setting) or declaration.check is None:
                continue
            check = declaration.check
            if unknown := set(check.needs) - {k for k, _ in declared}:
                raise TypeError(f"{declaration.name}'s check needs unknown fields {unknown}")
            if all(k in values for k in (key, *check.needs)):
                problem = check.rule(values[key], *(values[k] for k in check.needs))
                if problem is not None:
                    errors.append(ConfigError(declaration.name, problem))
        if errors:
            raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
        return cls(**values)


def read_settings(cls: type[T], env: Mapping[str, str], context: Context) -> T:
    """Build the settings class ``cls`` from an environment mapping."""
    return Reader(env, context).build(cls)
