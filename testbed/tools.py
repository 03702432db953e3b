"""The command-line tools the tests run, built and cached by the repository's scripts.

- kubectl of the cluster's version (scripts/build-kubectl.sh);
- kubeconform, its schemas generated from the cluster's OpenAPI document and prometheus-operator's
  CRDs, and those CRDs (scripts/build-tools.sh);
- the container image (scripts/build-image.sh) and the storage options podman needs to see it.

Each script returns at once when its output is cached; each is run once per test session.
"""

from __future__ import annotations

import functools
import resource
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


class ToolBuildError(RuntimeError):
    pass


def _run(script: str, *args: str, timeout: float = 3600) -> list[str]:
    result = subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise ToolBuildError(f"scripts/{script} failed:\n{result.stderr[-4000:]}")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


@functools.cache
def kubectl() -> Path:
    return Path(_run("build-kubectl.sh")[-1])


@dataclass(frozen=True)
class Checkers:
    kubeconform: Path
    schemas: Path
    """kubeconform schemas: ``<kind>_<group>_<version>.json``."""
    prometheus_operator_crds: Path

    def schema_location(self, directory: Path | None = None) -> str:
        """A -schema-location for kubeconform in ``directory`` (default: the generated ones)."""
        where = directory or self.schemas
        return (
            f"{where}/{{{{ .ResourceKind }}}}_{{{{ .Group }}}}_{{{{ .ResourceAPIVersion }}}}.json"
        )


@functools.cache
def checkers() -> Checkers:
    values = dict(line.split("=", 1) for line in _run("build-tools.sh") if "=" in line)
    return Checkers(
        kubeconform=Path(values["kubeconform"]),
        schemas=Path(values["schemas"]),
        prometheus_operator_crds=Path(values["prometheus_operator_crds"]),
    )


@dataclass(frozen=True)
class Image:
    name: str
    storage: tuple[str, ...]
    """The storage options (vfs, its root and runroot) that buildah built it with."""

    def podman(self, *args: str) -> list[str]:
        """A podman command line on the image's storage (no daemon; cgroupfs, events to a file,
        as there is no systemd)."""
        return [
            "podman",
            *self.storage,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            *args,
        ]

    def run_command(
        self,
        *,
        name: str,
        env: Mapping[str, str],
        mounts: Sequence[tuple[Path, str]],
    ) -> list[str]:
        """`podman run` of the image as a hardened pod would run it: runc, a read-only root
        filesystem, every capability dropped, uid/gid 1000, the host's network (so that it
        reaches the API server and the Jibris on loopback addresses), ``mounts`` read-only.

        Two settings are there for this environment, not for the image: a user namespace (runc
        sets a container's rlimits with prlimit(2) from outside, which across users needs
        CAP_SYS_RESOURCE, a capability this environment's root lacks, or the ownership of the
        container's user namespace), and rlimits no higher than the current hard limits (raising
        one needs CAP_SYS_RESOURCE as well)."""
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        args = [
            "run",
            "--rm",
            "--name",
            name,
            "--runtime",
            "runc",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--user",
            "1000:1000",
            "--network",
            "host",
            "--uidmap",
            "0:100000:65536",
            "--gidmap",
            "0:100000:65536",
            "--ulimit",
            f"nofile={min(nofile, 65536)}:{min(nofile, 65536)}",
            "--ulimit",
            "nproc=4096:4096",
            "--pull=never",
        ]
        for source, target in mounts:
            args += ["--volume", f"{source}:{target}:ro"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        return self.podman(*args, self.name)


@functools.cache
def image() -> Image:
    name = _run("build-image.sh")[-1]
    storage = tuple(_run("build-image.sh", "--storage")[-1].split())
    return Image(name=name, storage=storage)
