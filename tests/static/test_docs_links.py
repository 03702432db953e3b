"""Every relative link of the documentation resolves: the file exists, and an anchor names a
heading of its target as GitHub spells it."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
ABSOLUTE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces to
    hyphens."""
    text = INLINE_LINK.sub(r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated one gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    seen: Counter[str] = Counter()
    for line in prose_lines(text):
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(1))
        found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def links(text: str) -> list[str]:
    """The targets of the relative links and images, outside code."""
    targets = []
    for line in prose_lines(text):
        line = CODE_SPAN.sub("code", line)
        targets += [t for t in LINK.findall(line) if not ABSOLUTE.match(t)]
    return targets


def broken(page: Path, root: Path) -> list[str]:
    """What is wrong with each relative link of `page`."""
    problems = []
    for target in links(page.read_text()):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved.read_text())):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken(page, ROOT) == []


def test_the_pages_link_to_each_other() -> None:
    # Not vacuous: the README links every page of docs/ and CONTRIBUTING.md.
    readme = {t.partition("#")[0] for t in links((ROOT / "README.md").read_text())}
    for page in PAGES[1:]:
        assert str(page.relative_to(ROOT)) in readme, page.name
    assert sum(len(links(p.read_text())) for p in PAGES) >= 50


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Install", "install"),
        (
            "Spare pools: replicas by hand, or a JibriPool",
            "spare-pools-replicas-by-hand-or-a-jibripool",
        ),
        (
            "Scale-down through Jibri's graceful shutdown",
            "scale-down-through-jibris-graceful-shutdown",
        ),
        (
            "Internal API (the pod's preStop hook, and the controller, to Jibri)",
            "internal-api-the-pods-prestop-hook-and-the-controller-to-jibri",
        ),
        ("5. Memory: 54.5 MiB at rest", "5-memory-545-mib-at-rest"),
        ("`JibriStuckBusy`", "jibristuckbusy"),
        ("The [chaos](x.md) run", "the-chaos-run"),
        ("snake_case stays", "snake_case-stays"),
    ],
)
def test_slugs_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# A\n\n## Same\n\n## Same\n\n```sh\n# Not a heading\n```\n"
    )
    page = tmp_path / "README.md"
    page.write_text(
        "# Top\n\n"
        "[ok](docs/a.md) [ok](docs/a.md#same-1) [ok](#top) ![ok](docs/a.md) "
        "[web](https://example.com/x.md#nowhere) `[code](nowhere.md)`\n"
        "[gone](docs/b.md) [bad](docs/a.md#same-2) [fenced](docs/a.md#not-a-heading) "
        "[self](#nowhere) [out](../elsewhere.md)\n"
        "```\n[in a block](missing.md)\n```\n"
    )
    assert broken(page, tmp_path) == [
        "docs/b.md: no such file",
        "docs/a.md#same-2: no heading #same-2 in docs/a.md",
        "docs/a.md#not-a-heading: no heading #not-a-heading in docs/a.md",
        "#nowhere: no heading #nowhere in README.md",
        "../elsewhere.md: outside the repository",
    ]
