"""The front door holds together: every relative link in README.md and docs/*.md points to a file that
exists, every docs page is reachable from docs/index.md, and no recipe in configs/ names a path that
exists only on one machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RECIPES = sorted((REPO / "configs").glob("*.yaml"))

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*<?([^\s>]+)", re.M)  # [name]: target
_HTML = re.compile(r"\b(?:src|href)=\"([^\"]+)\"")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...
# A path that is absolute on some machine: /dir/..., ~/..., C:\... or C:/...; "96/224" or
# "X_train/y_train" are not, since a word character comes before the slash.
_ABSOLUTE = re.compile(r"(?<![\w./|)\]])(?:~/|/(?=[A-Za-z_.])|[A-Za-z]:[\\/])[\w.~-]+(?:[\\/][\w.~-]*)*")


def relative_links(text: str) -> list[str]:
    """Targets of the markdown links and images in ``text`` that name a local file, outside code."""
    prose = _INLINE_CODE.sub("", _FENCE.sub("", text))
    targets = []
    for target in _LINK.findall(prose) + _REFERENCE.findall(prose) + _HTML.findall(prose):
        if _EXTERNAL.match(target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file does not exist (resolved from the page's folder)."""
    return [t for t in relative_links(page.read_text(encoding="utf-8")) if not (page.parent / t).exists()]


def absolute_paths(text: str) -> list[str]:
    """Absolute or home-relative paths in ``text`` (a recipe's values and comments alike)."""
    return _ABSOLUTE.findall(text)


def test_the_checkers_find_what_they_look_for():
    page = "[ok](docs/index.md) ![fig](figures/a.png) [web](https://x.org/a) [here](#top)\n" \
           "`[code](not/a/link.md)`\n```\n[fenced](nope.md)\n```\n[section](pretexts.md#part)\n" \
           "[ref]: data.md\n<img src=\"figures/b.png\">\n"
    assert relative_links(page) == ["docs/index.md", "figures/a.png", "pretexts.md", "data.md", "figures/b.png"]
    recipe = ("# Run: relpos train --data /work/shared/data/eeg/blink.npz\n"
              "# ~/relpos_data/sleep or C:\\data\\x.npz; 96/224 of it, X_train/y_train, |E_C|/8\n"
              "data: ../shared/data/eeg/scp1.npz\n")
    assert absolute_paths(recipe) == ["/work/shared/data/eeg/blink.npz", "~/relpos_data/sleep", "C:\\data\\x.npz"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.relative_to(REPO)} links to missing files: {broken_links(page)}"


def test_readme_leads_to_the_docs_index_and_the_index_to_every_page():
    assert "docs/index.md" in relative_links((REPO / "README.md").read_text(encoding="utf-8"))
    linked = {Path(t).name for t in relative_links((REPO / "docs" / "index.md").read_text(encoding="utf-8"))}
    pages = {p.name for p in PAGES if p.parent.name == "docs" and p.name != "index.md"}
    assert pages - linked == set(), f"docs/index.md does not link {sorted(pages - linked)}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipes_name_no_absolute_path(recipe):
    text = recipe.read_text(encoding="utf-8")
    assert isinstance(yaml.safe_load(text), dict)
    assert not absolute_paths(text), f"{recipe.name} names {absolute_paths(text)}: use a path relative to the repository"
