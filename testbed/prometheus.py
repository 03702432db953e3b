"""A real Prometheus server (Debian's `prometheus` package) scraping controller replicas.

Started with a scrape and rule-evaluation interval of one second and a private TSDB directory, on
a free loopback port; stopped (and its data removed with the directory) by the caller. Its HTTP
API answers the queries and the alert states the tests check.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"


class PrometheusError(RuntimeError):
    pass


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise PrometheusError(
            f"{tool} is not installed (scripts/bootstrap.sh installs Debian's prometheus package)"
        )
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require(PROMTOOL), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def shortened_rules(rules: Mapping[str, Any], for_: str) -> dict[str, Any]:
    """A copy of a rules file whose every `for` is ``for_`` (the expressions unchanged)."""
    groups = []
    for group in rules["groups"]:
        entries = []
        for rule in group["rules"]:
            entry = dict(rule)
            if "for" in entry:
                entry["for"] = for_
            entries.append(entry)
        groups.append({**group, "rules": entries})
    return {"groups": groups}


@dataclass
class PrometheusServer:
    workdir: Path
    port: int
    targets: Sequence[str]
    labels: Mapping[str, str] = field(default_factory=dict)
    rule_files: Sequence[Path] = ()
    interval: str = "1s"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": "jibri-pod-controller",
                    "scrape_timeout": self.interval,
                    "static_configs": [
                        {"targets": list(self.targets), "labels": dict(self.labels)}
                    ],
                }
            ],
        }

    def start(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        checked = promtool("check", "config", str(config))
        if checked.returncode != 0:
            raise PrometheusError(f"promtool check config:\n{checked.stdout}{checked.stderr}")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    require(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited {self.process.returncode}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise PrometheusError(f"prometheus not ready after 60 s:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, n: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raise PrometheusError(f"{path} {params}: {exc.code} {exc.read()!r}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def query_range(
        self, expr: str, *, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        data = self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets_up(self) -> dict[str, str]:
        """Each scraped target's health (up, down, unknown), by address."""
        active = self.api("targets", state="active")["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active}

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
