"""Jibri's messages: the bodies of the protocol page parse; every malformed variant is refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jibri_pod_controller.core.jibri import (
    BusyStatus,
    HealthStatus,
    InvalidMessage,
    JibriStatus,
    SessionReport,
    SessionState,
    StatusReport,
    parse_health,
    parse_session_report,
    parse_status_report,
)


def status_body(busy: str = "BUSY", health: str = "HEALTHY") -> dict[str, Any]:
    return {
        "jibriId": "jibri-5d9c7b-abcde",
        "status": {
            "busyStatus": busy,
            "health": {
                "healthStatus": health,
                "details": {"ffmpeg": {"healthStatus": "HEALTHY", "detail": ""}},
            },
        },
    }


def session_body(**session: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sessionId": "b1c2d3",
        "status": "ON",
        "sipAddress": None,
        "failure": None,
        "shouldRetry": None,
    }
    base.update(session)
    return {"jibriId": "jibri-5d9c7b-abcde", "session": base}


@pytest.mark.parametrize("busy", list(BusyStatus))
@pytest.mark.parametrize("health", list(HealthStatus))
def test_status_report(busy: BusyStatus, health: HealthStatus) -> None:
    report = parse_status_report(status_body(busy.value, health.value))
    assert report == StatusReport("jibri-5d9c7b-abcde", JibriStatus(busy, health))


def test_status_report_without_details() -> None:
    body = status_body()
    del body["status"]["health"]["details"]
    assert parse_status_report(body).status.busy is BusyStatus.BUSY


_DELETE = object()


def _mutate(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(status_body())
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "body must be an object"),
        ([], "body must be an object"),
        ("BUSY", "body must be an object"),
        ({}, "jibriId must be a non-empty string"),
        (_mutate(("jibriId",), _DELETE), "jibriId must be a non-empty string"),
        (_mutate(("jibriId",), ""), "jibriId must be a non-empty string"),
        (_mutate(("jibriId",), 7), "jibriId must be a non-empty string"),
        (_mutate(("jibriId",), "j" * 254), "jibriId must be a non-empty string"),
        (_mutate(("extra",), 1), "unexpected field 'extra' in body"),
        (_mutate(("status",), _DELETE), "status must be an object"),
        (_mutate(("status",), "BUSY"), "status must be an object"),
        (_mutate(("status", "environmentContext"), {}), "unexpected field 'environmentContext'"),
        (_mutate(("status", "busyStatus"), _DELETE), "status.busyStatus must be a string"),
        (_mutate(("status", "busyStatus"), 1), "status.busyStatus must be a string"),
        (_mutate(("status", "busyStatus"), "busy"), "unknown status.busyStatus 'busy'"),
        (_mutate(("status", "busyStatus"), "RECORDING"), "unknown status.busyStatus 'RECORDING'"),
        (_mutate(("status", "health"), _DELETE), "status.health must be an object"),
        (_mutate(("status", "health"), "HEALTHY"), "status.health must be an object"),
        (
            _mutate(("status", "health", "healthStatus"), "GOOD"),
            "unknown status.health.healthStatus 'GOOD'",
        ),
        (
            _mutate(("status", "health", "healthStatus"), None),
            "status.health.healthStatus must be a string",
        ),
        (_mutate(("status", "health", "details"), []), "status.health.details must be an object"),
    ],
)
def test_malformed_status_report(body: Any, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_status_report(body)
    assert reason in str(caught.value)


def test_an_unknown_status_is_quoted_short() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_status_report(_mutate(("status", "busyStatus"), "X" * 10_000))
    assert len(str(caught.value)) < 100


@pytest.mark.parametrize("state", list(SessionState))
def test_session_report(state: SessionState) -> None:
    report = parse_session_report(session_body(status=state.value, sipAddress="sip:a@b"))
    assert report == SessionReport("jibri-5d9c7b-abcde", "b1c2d3", state, None)


def test_session_report_with_failure() -> None:
    body = session_body(
        status="OFF",
        failure={"reason": "ERROR", "error": {"code": "RECORDING_FAILED"}},
        shouldRetry=True,
    )
    report = parse_session_report(body)
    assert (report.state, report.failure_reason) == (SessionState.OFF, "ERROR")


def test_session_report_minimal() -> None:
    body = {"jibriId": "j", "session": {"sessionId": "s", "status": "PENDING"}}
    assert parse_session_report(body).state is SessionState.PENDING


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"jibriId": "j"}, "session must be an object"),
        ({**session_body(), "status": {}}, "unexpected field 'status' in body"),
        (session_body(extra=1), "unexpected field 'extra' in session"),
        (session_body(sessionId=""), "session.sessionId must be a non-empty string"),
        (session_body(sessionId="s" * 1025), "session.sessionId must be a non-empty string"),
        (session_body(status="STARTED"), "unknown session.status 'STARTED'"),
        (session_body(failure="ERROR"), "session.failure must be an object"),
        (session_body(failure={}), "session.failure.reason must be a non-empty string"),
        (session_body(failure={"reason": "E" * 65}), "session.failure.reason must be"),
    ],
)
def test_malformed_session_report(body: Any, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_session_report(body)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("body", "busy"),
    [
        (
            {
                "status": {
                    "busyStatus": "IDLE",
                    "health": {"healthStatus": "HEALTHY", "details": {}},
                }
            },
            BusyStatus.IDLE,
        ),
        (
            {
                "status": {"busyStatus": "BUSY", "health": {"healthStatus": "HEALTHY"}},
                "environmentContext": {"name": "meet.example.org"},
            },
            BusyStatus.BUSY,
        ),
        (
            {"status": {"busyStatus": "EXPIRED", "health": {"healthStatus": "UNHEALTHY"}}},
            BusyStatus.EXPIRED,
        ),
    ],
)
def test_health_answer(body: Any, busy: BusyStatus) -> None:
    assert parse_health(body).busy is busy


@pytest.mark.parametrize(
    "body",
    [
        None,
        "IDLE",
        {},
        {"status": None},
        {"status": {"busyStatus": "SLEEPING", "health": {"healthStatus": "HEALTHY"}}},
        {"status": {"busyStatus": "IDLE"}},
        {"status": {"busyStatus": "IDLE", "health": {"healthStatus": "OK"}}},
    ],
)
def test_invalid_health_answer(body: Any) -> None:
    with pytest.raises(InvalidMessage):
        parse_health(body)
