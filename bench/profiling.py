"""Where a controller process spends its CPU during a measurement: py-spy, attached from outside.

``--profile`` attaches ``py-spy record`` (100 samples/s, non-blocking, idle frames left out) to
the controller for the measured window of a figure, keeps the raw collapsed stacks, and
summarises them: the functions with the most samples on top of the stack (self) and anywhere on
it (inclusive), and the packages the self time falls in. Profiling costs CPU on a small machine,
so a profiled run's numbers are flagged and never written to docs/performance.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# Waiting, not working: py-spy's idle detection misses these now and then.
IDLE_LEAVES = frozenset(
    {
        "EpollSelector.select",
        "_worker",
        "Condition.wait",
        "Event.wait",
        "Thread.join",
        "Queue.get",
        "SimpleQueue.get",
        "_wait_for_tstate_lock",
    }
)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


class Profiler:
    def __init__(self, pid: int, out: Path, *, enabled: bool) -> None:
        self.pid = pid
        self.raw_path = out.with_suffix(".collapsed.txt")
        self.enabled = enabled and py_spy() is not None
        self.summary: dict[str, Any] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def _launch(self, tool: str) -> subprocess.Popen[bytes]:
        self.raw_path.parent.mkdir(parents=True, exist_ok=True)
        with self.raw_path.with_suffix(".log").open("wb") as log:
            return subprocess.Popen(
                [
                    tool,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--nonblocking",
                    "--full-filenames",
                    "--output",
                    str(self.raw_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def __aenter__(self) -> Profiler:
        tool = py_spy()
        if self.enabled and tool is not None:
            self._process = self._launch(tool)
            await asyncio.sleep(0.5)  # attached and sampling
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is None:
            return
        process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
        with contextlib.suppress(OSError):
            self.summary = summarize(self.raw_path.read_text())
            self.summary["file"] = str(self.raw_path)


def _parse_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match.group("func"), match.group("file")


def package_of(path: str) -> str:
    """``aiohttp``, ``jibri_pod_controller``, ``stdlib:asyncio``, ... for a source file."""
    if not path:
        return "?"
    parts = Path(path).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else "?"
    for index, part in enumerate(parts):
        if re.fullmatch(r"python3\.\d+", part) and index + 1 < len(parts):
            return "stdlib:" + parts[index + 1].removesuffix(".py")
    if "src" in parts:
        rest = parts[parts.index("src") + 1 :]
        return rest[0] if rest else "?"
    return Path(path).name


def summarize(raw: str, top: int = 15) -> dict[str, Any]:
    """Top functions (self and inclusive) and packages from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse_frame(f) for f in stack.split(";")]
        if frames[-1][0] in IDLE_LEAVES:
            idle += count
            continue
        total += count
        names = [f"{func} ({Path(file).name})" for func, file in frames]
        own[names[-1]] += count
        packages[package_of(frames[-1][1])] += count
        for name in set(names):
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"name": name, "samples": n, "percent": round(100 * n / max(1, total), 1)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "self": share(own),
        "inclusive": share(inclusive),
        "packages": share(packages),
    }
