#!/usr/bin/env python3
"""Rewrite Jibri's pom.xml so that every dependency resolves from Maven Central.

    python3 scripts/lib/jibri-pom.py path/to/pom.xml     # rewrites the file in place

Used by scripts/build-jibri.sh on its own copy of Jibri's source; the build's cache key includes
a hash of this file, so a change here rebuilds the jar. Only the pom changes, never Jibri's code.
As published, the pom pins versions that only Jitsi's own Maven repository serves; the versions
below are the nearest ones Maven Central has, checked by building and running Jibri with them
(its HTTP API, webhooks, JWT and a file recording; its XMPP code paths were not exercised).
Exits non-zero, naming what it did not find, if the pom is not the one these overrides were
written for.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

NS = "http://maven.apache.org/POM/4.0.0"
Q = f"{{{NS}}}"

# artifactId -> (version as published, version that Maven Central serves)
VERSIONS = {
    "jicoco-mucclient": ("${jicoco.version}", "1.1-153-g24fdb58"),
    "jicoco-jwt": ("${jicoco.version}", "1.1-178-ga09ed33"),
    "jicoco-test-kotlin": ("${jicoco.version}", "1.1-178-ga09ed33"),
    "jitsi-xmpp-extensions": ("1.0-110-g00660c3", "1.0-120-g80f0eee"),
    # 3.4.3 is not on Central; 3.0.3 is, and it runs on Jetty 11 (the Jetty 12 BOMs go below).
    "ktor-server-jetty-jakarta-jvm": ("${ktor.version}", "3.0.3"),
}

# Not needed to build and run src/main, and not on Maven Central at the pinned version.
DROPPED = ("ktor-client-jackson-jvm", "ktor-client-jetty-jakarta-jvm")

# Every jitsi-xmpp-extensions on Central pulls Smack 4.4.8-jitsi-4, which only Jitsi's
# repository serves: pin upstream Smack 4.4.8 instead.
SMACK_VERSION = "4.4.8"
SMACK = (
    "smack-core",
    "smack-java8",
    "smack-extensions",
    "smack-xmlparser-stax",
    "smack-xmlparser",
    "smack-tcp",
    "smack-im",
    "smack-resolver-javax",
    "smack-sasl-javax",
)

# Jetty 12 BOM imports: they would drag ktor 3.0.3's Jetty 11 to 12, which it cannot run on.
DROPPED_BOMS = ("jetty-bom", "jetty-ee10-bom")


class PomError(Exception):
    pass


def _text(element: ET.Element, tag: str) -> str:
    child = element.find(Q + tag)
    return (child.text or "").strip() if child is not None else ""


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, Q + tag)
    child.text = text
    return child


def rewrite(root: ET.Element) -> None:
    dependencies = root.find(f"{Q}dependencies")
    managed = root.find(f"{Q}dependencyManagement/{Q}dependencies")
    if dependencies is None or managed is None:
        raise PomError("no <dependencies> or <dependencyManagement><dependencies>")

    found: set[str] = set()
    for dependency in list(dependencies):
        artifact = _text(dependency, "artifactId")
        if artifact in DROPPED:
            dependencies.remove(dependency)
            found.add(artifact)
        elif artifact in VERSIONS:
            published, central = VERSIONS[artifact]
            version = dependency.find(f"{Q}version")
            if version is None or (version.text or "").strip() != published:
                raise PomError(f"{artifact}: expected version {published}")
            version.text = central
            found.add(artifact)

    for dependency in list(managed):
        artifact = _text(dependency, "artifactId")
        if artifact in DROPPED_BOMS:
            managed.remove(dependency)
            found.add(artifact)
    for artifact in SMACK:
        pin = _sub(managed, "dependency", "")
        _sub(pin, "groupId", "org.igniterealtime.smack")
        _sub(pin, "artifactId", artifact)
        _sub(pin, "version", SMACK_VERSION)

    # Only Maven Central: the published pom also lists Jitsi's repositories, which this build
    # must not depend on (and which would cost a timeout per missing artifact where unreachable).
    repositories = root.find(f"{Q}repositories")
    if repositories is not None:
        root.remove(repositories)

    missing = sorted({*VERSIONS, *DROPPED, *DROPPED_BOMS} - found)
    if missing:
        raise PomError(f"not found in the pom: {', '.join(missing)}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} POM", file=sys.stderr)
        return 2
    path = Path(argv[1])
    ET.register_namespace("", NS)
    try:
        # The pom of a source whose checksum or commit the build script has pinned.
        tree = ET.parse(path)  # noqa: S314
        rewrite(tree.getroot())
    except (OSError, ET.ParseError, PomError) as exc:
        print(f"jibri-pom: {path}: {exc}", file=sys.stderr)
        return 1
    ET.indent(tree, space="    ")
    tree.write(path, encoding="UTF-8", xml_declaration=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
