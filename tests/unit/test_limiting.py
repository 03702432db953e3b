"""The per-source token bucket, on an injected clock."""

from __future__ import annotations

from jibri_pod_controller.core.limiting import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused() -> None:
    limiter = RateLimiter(rate=1, burst=3, clock=Clock())
    assert [limiter.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]


def test_tokens_refill_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=2, clock=clock)
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    clock.now += 0.25
    assert limiter.allow("a") is False  # half a token
    clock.now += 0.25
    assert limiter.allow("a") is True
    assert limiter.allow("a") is False


def test_refill_is_capped_at_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=5, burst=2, clock=clock)
    limiter.allow("a")
    clock.now += 3600
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]


def test_sources_are_independent() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=Clock())
    assert limiter.allow("a") is True
    assert limiter.allow("a") is False
    assert limiter.allow("b") is True


def test_zero_rate_disables_the_limit() -> None:
    limiter = RateLimiter(rate=0, burst=0, clock=Clock())
    assert not limiter.enabled
    assert all(limiter.allow("a") for _ in range(1000))


def test_the_table_is_bounded_and_evicts_the_least_recent() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, max_sources=2, clock=clock)
    assert limiter.allow("a")
    assert limiter.allow("b")
    assert limiter.allow("a") is False  # "a" is now the most recent
    assert limiter.allow("c") is True  # evicts "b"
    assert limiter.allow("a") is False  # "a" kept its empty bucket
    assert limiter.allow("b") is True  # "b" starts afresh (evicting "c")
