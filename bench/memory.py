"""Figure 5: the controller's peak resident memory, at rest, in a burst and in a big sweep.

Nothing is run for it: every controller the bench starts is sampled every 100 ms (RSS of the
process and any children), and this figure gathers the peaks of figure 1 (at rest, before the
bursts, and during the webhook burst) and figure 2 (the sweeps at the largest size).
"""

from __future__ import annotations

from bench.results import FigureResult, Goal, Row

RSS_GOAL = Goal("<=", 80)
"""Through the burst and the 5,000-pod sweep."""
REST_GOAL = Goal("<=", 64)


def derive(impl: str, burst: FigureResult | None, sweep: FigureResult | None) -> FigureResult:
    result = FigureResult(5, impl)
    windows: dict[str, float] = {}
    if burst is not None and "rss_mib" in burst.details:
        windows["at rest"] = burst.details["rss_mib"]["rest"]
        windows["burst"] = burst.details["rss_mib"]["burst"]
    if sweep is not None and "rss_mib" in sweep.details:
        windows[f"sweep of {sweep.details['rss_mib']['sweep_size']} pods"] = sweep.details[
            "rss_mib"
        ]["sweep"]
    peak = max(windows.values(), default=None)
    result.rows.append(Row("peak RSS (all windows)", peak, "MiB", RSS_GOAL))
    for window, value in windows.items():
        goal = REST_GOAL if window == "at rest" else None
        result.rows.append(Row(f"peak RSS, {window}", value, "MiB", goal))
    result.details = {"rss_mib": windows, "sampling_s": 0.1}
    if len(windows) < 3:
        result.error = "figure 5 needs figures 1 and 2 measured in the same run"
    return result
