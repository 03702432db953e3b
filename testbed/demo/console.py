"""The demo's output: plain lines, each with the time since the Jibri Deployment was created."""

from __future__ import annotations

import time


class Console:
    """Plain lines with the time since the Jibri Deployment was created; no terminal tricks."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.wall0 = 0.0

    def start_clock(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()

    def now(self) -> float:
        return 0.0 if self.t0 is None else time.monotonic() - self.t0

    def from_wall(self, wall: float) -> float:
        return wall - self.wall0

    def setup(self, text: str) -> None:
        print(f"[setup] {text}", flush=True)

    def at(self, t: float, text: str) -> None:
        print(f"{t:7.1f}s  {text}", flush=True)

    def line(self, text: str = "") -> None:
        print(text, flush=True)
