"""One version everywhere, a changelog that names it, and nothing built or downloaded in git."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib.metadata import version as installed_version
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def package_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def test_the_version_is_one_number_everywhere() -> None:
    version = package_version()
    chart = yaml.safe_load((REPO / "charts/jibri-pod-controller/Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (version, version)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.findall(r"^ARG VERSION=(\S+)$", dockerfile, re.M) == [version]
    assert 'org.opencontainers.image.version="$VERSION"' in dockerfile
    assert f"jibri-pod-controller:{version}" in dockerfile  # the build example
    deployment = (REPO / "deploy/deployment.yaml").read_text()
    assert re.findall(r"image: jibri-pod-controller:(\S+)", deployment) == [version]
    readme_tags = re.findall(r"^TAG=(\S+)$", (REPO / "README.md").read_text(), re.M)
    assert readme_tags
    assert set(readme_tags) == {version}
    ci_values = yaml.safe_load(
        (REPO / "charts/jibri-pod-controller/ci/all-options-values.yaml").read_text()
    )
    assert ci_values["image"]["tag"] == version
    # build_info reports the installed package's version: the same number.
    assert installed_version("jibri-pod-controller") == version


def test_the_changelog_names_the_version_and_keeps_its_form() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, re.M)
    assert releases, "no released version in CHANGELOG.md"
    # The package carries the newest released version; what came since is "Unreleased".
    assert releases[0][0] == package_version()
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert headings[0] in ("Unreleased", package_version())
    for name in headings:  # every heading has its link at the bottom
        assert re.search(rf"^\[{re.escape(name)}\]: https://", text, re.M), name
    sections = set(re.findall(r"^### (\w+)$", text, re.M))
    assert sections <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


ARCHIVE = re.compile(r"\.(whl|jar|war|zip|tar|tgz|gz|bz2|xz|zst|7z|rpm|deb|egg|so|pyc|exe)$")
IMAGES = (".png", ".svg")
"""Binary files the docs may hold: the plots and diagrams they show."""


def test_no_archive_or_binary_is_tracked() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    offenders = []
    for raw in filter(None, tracked):
        name = raw.decode()
        path = REPO / name
        if ARCHIVE.search(name):
            offenders.append(f"{name}: an archive or build output")
        elif name.endswith(IMAGES):
            if not name.startswith("docs/"):
                offenders.append(f"{name}: an image outside docs/")
        elif path.is_file() and b"\0" in path.read_bytes()[:8192]:
            offenders.append(f"{name}: binary content")
    assert not offenders, "\n".join(offenders)


def test_test_files_have_unique_names() -> None:
    """pytest imports test files by their base name (no packages under tests/): two files of
    the same name in different layers fail the second's collection."""
    names: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
