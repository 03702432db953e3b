"""Label selectors: one model for JIBRI_SELECTOR and for the Deployments' and ReplicaSets'
LabelSelector objects, and one rule for evaluating them.

A selector is a conjunction of `Requirement`s. It is written two ways:

- as text (`parse_selector`): ``app=jibri,!paused``, the form of JIBRI_SELECTOR and of the
  ``labelSelector`` query. JIBRI_SELECTOR keeps to equality (``k=v``, ``k==v``), inequality
  (``k!=v``), existence (``k``) and non-existence (``!k``): all a Jibri selector needs, and the
  same string is sent to the API server, so both sides agree on what matches.
- as a Kubernetes ``LabelSelector`` object (`label_selector`): ``matchLabels`` and
  ``matchExpressions`` with In, NotIn, Exists and DoesNotExist, as a Deployment's or a
  ReplicaSet's ``spec.selector``.

An operator outside these, or an object that is not a LabelSelector, raises `SelectorError`:
a selector this controller cannot read is a bad spec, never a silent non-match (a check that
reads "not selected" from it would pass when it must not). Every caller handles the error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Label keys: optional DNS subdomain prefix + "/" + name (63 chars, alnum at both ends).
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
_LABEL_KEY = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")


class SelectorError(ValueError):
    """A label selector or label list that cannot be read."""


class Op(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    NOT_EXISTS = "!"
    IN = "in"
    NOT_IN = "notin"


_OPERATORS = {"In": Op.IN, "NotIn": Op.NOT_IN, "Exists": Op.EXISTS, "DoesNotExist": Op.NOT_EXISTS}
"""A LabelSelector's matchExpressions operators."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Op
    value: str = ""
    """The value of EQUALS and NOT_EQUALS."""
    values: tuple[str, ...] = ()
    """The values of IN and NOT_IN, sorted."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.op:
            case Op.EQUALS:
                return labels.get(self.key) == self.value
            case Op.NOT_EQUALS:
                return labels.get(self.key) != self.value
            case Op.EXISTS:
                return self.key in labels
            case Op.NOT_EXISTS:
                return self.key not in labels
            case Op.IN:
                return self.key in labels and labels[self.key] in self.values
            case Op.NOT_IN:
                return self.key not in labels or labels[self.key] not in self.values

    def __str__(self) -> str:
        match self.op:
            case Op.EQUALS | Op.NOT_EQUALS:
                return f"{self.key}{self.op.value}{self.value}"
            case Op.EXISTS:
                return self.key
            case Op.NOT_EXISTS:
                return f"!{self.key}"
            case Op.IN | Op.NOT_IN:
                return f"{self.key} {self.op.value} ({','.join(self.values)})"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def equalities(self) -> dict[str, str]:
        """The ``key=value`` requirements: labels every selected pod carries."""
        return {r.key: r.value for r in self.requirements if r.op is Op.EQUALS}

    def implies(self, other: Selector) -> bool:
        """Whether every pod this selector selects is also selected by ``other``. Judged from
        this selector's equalities alone, and only for an ``other`` of equalities and
        existences: any other case answers False (the caller reads the pods instead)."""
        labels = self.equalities()
        return all(r.op in (Op.EQUALS, Op.EXISTS) and r.matches(labels) for r in other.requirements)

    def query(self) -> str:
        """The ``labelSelector`` query string. Never empty: an empty selector would select
        every pod of the namespace, which no caller means."""
        if not self.requirements:
            raise SelectorError("an empty selector would select every pod")
        return str(self)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _check_key(key: str, text: str) -> str:
    if not _LABEL_KEY.match(key) or len(key) > 316:
        raise SelectorError(f"invalid label key {key!r} in {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise SelectorError(f"invalid label value {value!r} in {text!r}")
    return value


def parse_selector(text: str) -> Selector:
    """Parse an equality-based label selector such as ``app=jibri,!paused``."""
    requirements: list[Requirement] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise SelectorError(f"empty requirement in {text!r}")
        if " in " in part or " notin " in part or "(" in part:
            raise SelectorError(f"set-based requirement {part!r} is not supported")
        if "!=" in part:
            key, value = part.split("!=", 1)
            requirements.append(
                Requirement(
                    _check_key(key.strip(), text), Op.NOT_EQUALS, _check_value(value.strip(), text)
                )
            )
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            requirements.append(
                Requirement(
                    _check_key(key.strip(), text), Op.EQUALS, _check_value(value.strip(), text)
                )
            )
        elif part.startswith("!"):
            requirements.append(Requirement(_check_key(part[1:].strip(), text), Op.NOT_EXISTS))
        else:
            requirements.append(Requirement(_check_key(part, text), Op.EXISTS))
    return Selector(tuple(requirements))


def parse_labels(text: str) -> dict[str, str]:
    """Parse a label list such as ``app=jibri,state=busy`` (every part must be ``k=v``)."""
    labels: dict[str, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        if "=" not in part or "!=" in part:
            raise SelectorError(f"{part!r} is not of the form key=value in {text!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        key, value = _check_key(key, text), _check_value(value, text)
        if key in labels:
            raise SelectorError(f"label {key!r} given twice in {text!r}")
        labels[key] = value
    return labels


def label_selector(raw: Any) -> Selector:
    """A Kubernetes LabelSelector object as a `Selector`: the ``matchLabels`` pairs (sorted by
    key) as equalities, then the ``matchExpressions`` in their order. An empty object selects
    everything, as in Kubernetes."""
    if not isinstance(raw, Mapping):
        raise SelectorError(f"{raw!r} is not a LabelSelector object")
    match_labels = raw.get("matchLabels") or {}
    expressions = raw.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        raise SelectorError(f"{dict(raw)!r} is not a LabelSelector object")
    requirements = [
        Requirement(str(key), Op.EQUALS, str(value)) for key, value in sorted(match_labels.items())
    ]
    for expression in expressions:
        if not isinstance(expression, Mapping) or not isinstance(expression.get("key"), str):
            raise SelectorError(f"{expression!r} is not a label selector requirement")
        operator = expression.get("operator")
        op = _OPERATORS.get(operator) if isinstance(operator, str) else None
        if op is None:
            raise SelectorError(f"unknown selector operator {operator!r}")
        values = tuple(sorted(str(v) for v in expression.get("values") or ()))
        requirements.append(Requirement(expression["key"], op, values=values))
    return Selector(tuple(requirements))
