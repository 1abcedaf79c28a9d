"""The documentation's relative links resolve: every [text](path#anchor) in the repository's Markdown
names a file that exists and, with an anchor, a heading of that file (GitHub's heading slugs)."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def markdown_files() -> list[pathlib.Path]:
    def kept(path: pathlib.Path) -> bool:  # not in hidden folders (.venv, caches) or training runs
        parts = path.relative_to(ROOT).parts[:-1]
        return not any(part.startswith(".") or part in ("runs", "node_modules") for part in parts)
    return sorted(p for p in ROOT.rglob("*.md") if kept(p))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces → hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def relative_links(path: pathlib.Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_slug_matches_github():
    assert slug("Earlier CPU (Zen 4)") == "earlier-cpu-zen-4"
    assert slug("Scaling the number of students, ablations, embedding collapse") == (
        "scaling-the-number-of-students-ablations-embedding-collapse")
    assert slug("Student zoo / KDEF_Latest") == "student-zoo--kdef_latest"


def test_the_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "a.md"
    page.write_text("# Top\n[ok](#top) [gone](missing.md) [bad anchor](#nowhere)\n```\n[in code](x.md)\n```\n")
    assert relative_links(page) == ["#top", "missing.md", "#nowhere"]
    assert broken_links(page) == ["missing.md (no such file)", "#nowhere (no heading 'nowhere' in a.md)"]


def broken_links(page: pathlib.Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading {anchor!r} in {dest.name})")
    return broken


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)}: broken links"


def test_the_readme_layout_names_every_module_of_the_package():
    """README "Layout" lists each kdef_jax module (interrupts.py was once left out)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):]
    modules = sorted(p.name for p in (ROOT / "kdef_jax").glob("*.py") if p.name != "__init__.py")
    assert [m for m in modules if m not in layout] == []
