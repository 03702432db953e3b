"""Label selectors: the text form (JIBRI_SELECTOR), label lists, and LabelSelector objects
(a Deployment's or a ReplicaSet's ``spec.selector``), all evaluated by one model."""

from __future__ import annotations

from typing import Any

import pytest

from jibri_pod_controller.core.selectors import (
    Op,
    Requirement,
    Selector,
    SelectorError,
    label_selector,
    parse_labels,
    parse_selector,
)


@pytest.mark.parametrize(
    ("text", "requirements"),
    [
        ("app=jibri", [("app", Op.EQUALS, "jibri")]),
        ("app==jibri", [("app", Op.EQUALS, "jibri")]),
        ("app = jibri , tier!=web", [("app", Op.EQUALS, "jibri"), ("tier", Op.NOT_EQUALS, "web")]),
        ("app", [("app", Op.EXISTS, "")]),
        ("!paused", [("paused", Op.NOT_EXISTS, "")]),
        ("example.com/role=recorder", [("example.com/role", Op.EQUALS, "recorder")]),
        ("app=", [("app", Op.EQUALS, "")]),
    ],
)
def test_parse_selector(text: str, requirements: list[tuple[str, Op, str]]) -> None:
    assert parse_selector(text).requirements == tuple(Requirement(*r) for r in requirements)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "app=jibri,",
        ",app=jibri",
        "app in (jibri,other)",
        "app notin (web)",
        "app in(jibri)",
        "=jibri",
        "app=jibri=x",
        "app=-jibri",
        "app=" + "v" * 64,
        "Example.com/role=x",
        "-app=x",
        "a/b/c=x",
        "!app=x",
        "app!",
    ],
)
def test_invalid_selectors(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("app=jibri", {"app": "jibri"}, True),
        ("app=jibri", {"app": "web"}, False),
        ("app=jibri", {}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("app", {"app": ""}, True),
        ("app", {"other": "x"}, False),
        ("!paused", {"app": "jibri"}, True),
        ("!paused", {"paused": "no"}, False),
        ("app=jibri,state!=idle", {"app": "jibri", "state": "busy"}, True),
        ("app=jibri,state!=idle", {"app": "jibri", "state": "idle"}, False),
    ],
)
def test_selector_matches(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(selector).matches(labels) is matches


@pytest.mark.parametrize(
    "text", ["app=jibri", "app=jibri,state!=idle", "app,!paused", "example.com/role=r"]
)
def test_selector_round_trips(text: str) -> None:
    assert str(parse_selector(str(parse_selector(text)))) == text


def test_parse_labels() -> None:
    assert parse_labels(" app=jibri , state=busy") == {"app": "jibri", "state": "busy"}
    assert parse_labels("example.com/state=") == {"example.com/state": ""}


@pytest.mark.parametrize(
    "text", ["", "app", "app=jibri,", "app!=jibri", "app=a,app=b", "app=a b", "=x", "!app"]
)
def test_invalid_labels(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_labels(text)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"matchLabels": {"app": "jibri"}}, {"app": "jibri", "state": "busy"}, True),
        (
            {"matchLabels": {"app": "jibri", "state": "idle"}},
            {"app": "jibri", "state": "busy"},
            False,
        ),
        ({"matchLabels": {"app": "jibri"}}, {"app": "web"}, False),
        (
            {"matchExpressions": [{"key": "state", "operator": "In", "values": ["idle"]}]},
            {"state": "busy"},
            False,
        ),
        (
            {"matchExpressions": [{"key": "state", "operator": "In", "values": ["idle", "busy"]}]},
            {"state": "busy"},
            True,
        ),
        (
            {"matchExpressions": [{"key": "state", "operator": "NotIn", "values": ["busy"]}]},
            {"state": "busy"},
            False,
        ),
        (
            {"matchExpressions": [{"key": "state", "operator": "NotIn", "values": ["busy"]}]},
            {},
            True,
        ),
        ({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, {"x": ""}, True),
        ({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, {}, True),
        ({}, {"anything": "at-all"}, True),
    ],
)
def test_label_selector_matches(selector: Any, labels: dict[str, str], expected: bool) -> None:
    assert label_selector(selector).matches(labels) is expected


@pytest.mark.parametrize(
    ("selector", "labels", "matches", "query"),
    [
        (
            {"matchLabels": {"app": "jibri", "state": "idle"}},
            {"app": "jibri", "state": "idle"},
            True,
            "app=jibri,state=idle",
        ),
        (
            {"matchLabels": {"app": "jibri", "state": "idle"}},
            {"app": "jibri", "state": "busy"},
            False,
            "app=jibri,state=idle",
        ),
        (
            {"matchExpressions": [{"key": "state", "operator": "In", "values": ["idle", "x"]}]},
            {"state": "idle"},
            True,
            "state in (idle,x)",
        ),
        (
            {"matchExpressions": [{"key": "state", "operator": "NotIn", "values": ["busy"]}]},
            {"state": "busy"},
            False,
            "state notin (busy)",
        ),
        (
            {"matchExpressions": [{"key": "busy", "operator": "DoesNotExist"}]},
            {"app": "j"},
            True,
            "!busy",
        ),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {}, False, "app"),
    ],
)
def test_label_selectors(
    selector: dict[str, object], labels: dict[str, str], matches: bool, query: str
) -> None:
    assert label_selector(selector).matches(labels) is matches
    assert label_selector(selector).query() == query


def test_an_empty_selector_has_no_query() -> None:
    assert label_selector({}).matches({"any": "labels"})  # as in Kubernetes
    with pytest.raises(SelectorError, match="every pod"):
        label_selector({}).query()
    with pytest.raises(SelectorError, match="every pod"):
        Selector(()).query()


# An operator this model does not know, or an object that is not a LabelSelector, is a bad
# spec: it raises, for matching and for the query alike, never a silent non-match.
UNREADABLE: list[Any] = [
    {"matchExpressions": [{"key": "a", "operator": "Near"}]},
    {"matchExpressions": [{"key": "x", "operator": "Gt", "values": ["1"]}]},
    {"matchExpressions": [{"key": "x", "operator": "in", "values": ["1"]}]},
    {"matchExpressions": [{"key": "x"}]},
    {"matchExpressions": [{"operator": "Exists"}]},
    {"matchExpressions": ["x"]},
    {"matchExpressions": {"key": "x", "operator": "Exists"}},
    {"matchLabels": ["app"]},
    "app=jibri",
    None,
]


@pytest.mark.parametrize("selector", UNREADABLE)
def test_an_unreadable_selector_raises(selector: Any) -> None:
    with pytest.raises(SelectorError):
        label_selector(selector)


def test_an_unknown_operator_names_itself() -> None:
    with pytest.raises(SelectorError, match="unknown selector operator 'Near'"):
        label_selector({"matchExpressions": [{"key": "a", "operator": "Near"}]})


@pytest.mark.parametrize(
    ("match_labels", "jibri", "implied"),
    [
        ({"app": "jibri", "state": "idle"}, "app=jibri", True),
        ({"app": "jibri", "state": "idle"}, "app=jibri,state", True),
        ({"state": "idle"}, "app=jibri", False),  # a pod without app=jibri would be selected
        ({"app": "other", "state": "idle"}, "app=jibri", False),
        ({"app": "jibri"}, "app=jibri,!canary", False),  # negations are never implied
        ({"app": "jibri", "tier": "a"}, "app=jibri,tier!=b", False),
    ],
)
def test_selector_implies_jibri_selector(
    match_labels: dict[str, str], jibri: str, implied: bool
) -> None:
    selector = {
        "matchLabels": match_labels,
        "matchExpressions": [{"key": "x", "operator": "Exists"}],
    }
    assert label_selector(selector).implies(parse_selector(jibri)) is implied


@pytest.mark.parametrize(
    ("text", "object_form"),
    [
        ("app=jibri", {"matchLabels": {"app": "jibri"}}),
        ("app", {"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
        ("!paused", {"matchExpressions": [{"key": "paused", "operator": "DoesNotExist"}]}),
    ],
)
def test_the_two_forms_are_one_model(text: str, object_form: dict[str, Any]) -> None:
    assert parse_selector(text) == label_selector(object_form)
    for labels in ({}, {"app": "jibri"}, {"app": "web"}, {"paused": ""}):
        assert parse_selector(text).matches(labels) is label_selector(object_form).matches(labels)
