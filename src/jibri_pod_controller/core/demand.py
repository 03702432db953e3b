"""How many spares a pool needs for its measured demand: a Poisson tail, nothing more.

A recording that starts finds a Ready spare unless more recordings started since the last
replacement was asked for than there were spares. A replacement takes the lead time L to become
Ready, so with starts arriving at ``rate`` per second, the number of starts within L is modelled
as Poisson(rate x L), and the pool needs the smallest N with P(X > N) <= the accepted shortfall
probability. The sum is done in log space, so a large rate x L neither underflows nor overflows.
"""

from __future__ import annotations

import math


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
    bounds anyway). A rate or lead time of zero (or less) needs no spare.
    """
    mean = rate * lead_time
    if mean <= 0 or not math.isfinite(mean):
        return 0 if mean <= 0 else limit
    if shortfall_probability >= 1:
        return 0
    target = math.log(1.0 - shortfall_probability) if shortfall_probability > 0 else 0.0
    log_mean = math.log(mean)
    log_pmf = -mean  # P(X = 0)
    log_cdf = log_pmf
    for n in range(limit):
        if log_cdf >= target:
            return n
        log_pmf += log_mean - math.log(n + 1)
        log_cdf = _log_add(log_cdf, log_pmf)
    return limit
