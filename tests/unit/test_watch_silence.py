"""How long a live watch can be silent, from kube-apiserver's measured bookmark interval."""

from __future__ import annotations

import pytest

from jibri_pod_controller.adapters.kube import watch_silence


@pytest.mark.parametrize(
    ("timeout_seconds", "allowed"),
    [
        (300, 75.0),  # the pod cache's watch: a bookmark every minute, plus the margin
        (600, 75.0),
        (60, 75.0),  # may get no bookmark at all: the server ends it at 60 s
        (30, 45.0),
        (1, 16.0),
    ],
)
def test_the_silence_allowed_is_the_next_bookmark_or_the_end_plus_a_margin(
    timeout_seconds: int, allowed: float
) -> None:
    assert watch_silence(timeout_seconds) == allowed
