"""How many spares a pool needs for its measured demand: a Poisson tail, nothing more.

A recording that starts finds a Ready spare unless more recordings started since the last
replacement was asked for than there were spares. A replacement takes the lead time L to become
Ready, so with starts arriving at ``rate`` per second, the number of starts within L is modelled
as Poisson(rate x L), and the pool needs the smallest N with P(X > N) <= the accepted shortfall
probability. The sum is done in log space, so a large rate x L neither underflows nor overflows.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def spares_for_demand(
    *, rate: float, lead_time: float, shortfall_probability: float, limit: int = 10_000
) -> int:
    """The smallest N with P(Poisson(rate x lead_time) > N) <= ``shortfall_probability``.

    Returns ``limit`` when even that many spares would not do (the caller clamps to its own
    bounds anyway). A rate or lead time of zero (or less) needs no spare. NaN anywhere, or a
    probability of zero or less (no finite N has it), is a ValueError.
    """
    if math.isnan(rate) or math.isnan(lead_time):
        raise ValueError(f"rate {rate} and lead time {lead_time} must be numbers")
    if not shortfall_probability > 0:  # also NaN
        raise ValueError(f"shortfall probability {shortfall_probability} must be above 0")
    mean = rate * lead_time if rate > 0 and lead_time > 0 else 0.0
    if mean <= 0 or shortfall_probability >= 1:
        return 0
    if not math.isfinite(mean):
        return limit
    target = math.log(1.0 - shortfall_probability)
    log_mean = math.log(mean)
    log_pmf = -mean  # P(X = 0)
    log_cdf = log_pmf
    for n in range(limit):
        if log_cdf >= target:
            return n
        log_pmf += log_mean - math.log(n + 1)
        log_cdf = _log_add(log_cdf, log_pmf)
    return limit


RATE_SCALES = (8, 4, 2, 1)
"""The start rate is measured over the whole window and over its last half, quarter and
eighth; the highest of the four wins. A rise shows first in the shortest span, so the estimate
follows it within an eighth of the window; a fall shows only once the whole window has
forgotten the busier past, so the estimate comes down slowly."""


def estimate_start_rate(starts: Sequence[float], *, now: float, window: float) -> float:
    """Recording starts per second, from the start times (seconds, any epoch) seen so far.

    Fast when starts rise, slow when they fall (see `RATE_SCALES`); starts in the future or
    older than ``window`` are ignored. Zero without starts or without a window.
    """
    if window <= 0:
        return 0.0
    ages = sorted(now - t for t in starts if 0 <= now - t <= window)
    best = 0.0
    for scale in RATE_SCALES:
        span = window / scale
        count = bisect.bisect_right(ages, span)
        best = max(best, count / span)
    return best


def lead_time(durations: Sequence[float], *, quantile: float = 0.9) -> float | None:
    """The ``quantile`` (nearest rank) of recent creation-to-Ready durations; None when there
    are none yet."""
    values = sorted(d for d in durations if d >= 0 and math.isfinite(d))
    if not values:
        return None
    rank = max(1, math.ceil(quantile * len(values)))
    return values[min(rank, len(values)) - 1]
