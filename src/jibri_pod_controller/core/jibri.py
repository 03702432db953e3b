"""Jibri's messages, parsed strictly into typed values.

Two shapes arrive from Jibri: the status webhook (``{"jibriId", "status"}``) and the session
webhook (``{"jibriId", "session"}``); one shape is read from it, the health API answer
(``{"status", "environmentContext"?}``). Webhook bodies come from the network and may be forged,
so their schema is strict: unknown top-level keys, wrong types and unknown enum values are
rejected with a short reason. The health answer is read as strictly for the fields that drive
a decision, and tolerantly for the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

MAX_ID_LENGTH = 253
_E = TypeVar("_E", bound=StrEnum)


class BusyStatus(StrEnum):
    IDLE = "IDLE"
    BUSY = "BUSY"
    EXPIRED = "EXPIRED"


class HealthStatus(StrEnum):
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"


class SessionState(StrEnum):
    ON = "ON"
    OFF = "OFF"
    PENDING = "PENDING"
    UNDEFINED = "UNDEFINED"


class InvalidMessage(ValueError):
    """A Jibri message that does not follow the protocol; ``str()`` is a short reason."""


@dataclass(frozen=True)
class JibriStatus:
    busy: BusyStatus
    health: HealthStatus


@dataclass(frozen=True)
class StatusReport:
    jibri_id: str
    status: JibriStatus


@dataclass(frozen=True)
class SessionReport:
    jibri_id: str
    session_id: str
    state: SessionState
    failure_reason: str | None


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidMessage(f"{where} must be an object")
    return value


def _only(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(obj) - allowed
    if extra:
        raise InvalidMessage(f"unexpected field {sorted(extra)[0]!r} in {where}")


def _str(value: Any, where: str, *, max_len: int = MAX_ID_LENGTH) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidMessage(f"{where} must be a non-empty string of at most {max_len} chars")
    return value


def _enum(kind: type[_E], value: Any, where: str) -> _E:
    if not isinstance(value, str):
        raise InvalidMessage(f"{where} must be a string")
    try:
        return kind(value)
    except ValueError:
        raise InvalidMessage(f"unknown {where} {value[:32]!r}") from None


def _status(value: Any, where: str) -> JibriStatus:
    status = _obj(value, where)
    busy = _enum(BusyStatus, status.get("busyStatus"), f"{where}.busyStatus")
    health = _obj(status.get("health"), f"{where}.health")
    health_status = _enum(HealthStatus, health.get("healthStatus"), f"{where}.health.healthStatus")
    details = health.get("details", {})
    if not isinstance(details, dict):
        raise InvalidMessage(f"{where}.health.details must be an object")
    return JibriStatus(busy=busy, health=health_status)


def parse_status_report(body: Any) -> StatusReport:
    """Parse a status webhook body (already JSON-decoded)."""
    obj = _obj(body, "body")
    _only(obj, {"jibriId", "status"}, "body")
    jibri_id = _str(obj.get("jibriId"), "jibriId")
    status_obj = _obj(obj.get("status"), "status")
    _only(status_obj, {"busyStatus", "health"}, "status")
    return StatusReport(jibri_id=jibri_id, status=_status(status_obj, "status"))


def parse_session_report(body: Any) -> SessionReport:
    """Parse a session webhook body (already JSON-decoded)."""
    obj = _obj(body, "body")
    _only(obj, {"jibriId", "session"}, "body")
    jibri_id = _str(obj.get("jibriId"), "jibriId")
    session = _obj(obj.get("session"), "session")
    _only(session, {"sessionId", "status", "sipAddress", "failure", "shouldRetry"}, "session")
    session_id = _str(session.get("sessionId"), "session.sessionId", max_len=1024)
    state = _enum(SessionState, session.get("status"), "session.status")
    failure = session.get("failure")
    reason: str | None = None
    if failure is not None:
        reason_value = _obj(failure, "session.failure").get("reason")
        reason = _str(reason_value, "session.failure.reason", max_len=64)
    return SessionReport(
        jibri_id=jibri_id, session_id=session_id, state=state, failure_reason=reason
    )


def parse_health(body: Any) -> JibriStatus:
    """Parse the answer of Jibri's health API (already JSON-decoded)."""
    obj = _obj(body, "health answer")
    return _status(obj.get("status"), "status")
