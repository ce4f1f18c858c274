"""mkdocs hooks for spc's documentation (mkdocs.yml's ``hooks:``).

The pages under docs/ link to repository files outside docs/ (examples,
benchmarks) with relative links that work where the repository is browsed.
The site holds only docs/, so such a link would break there: this hook checks
that the file exists and shows it as its repository path instead (a code
span).  A link to a file that does not exist is left alone, so mkdocs' strict
build still reports it.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>\.\./[^)\s#]+)\)")


def on_page_markdown(markdown: str, page, config, files) -> str:
    """``markdown`` with every relative link that leaves docs/ for an existing
    repository file replaced by the file's path; other links unchanged."""
    docs = Path(config["docs_dir"]).resolve()
    repo = docs.parent
    page_dir = posixpath.dirname(page.file.src_uri)

    def replace(m: re.Match) -> str:
        target = (docs / page_dir / m.group("target")).resolve()
        if docs in target.parents or not target.is_file() or repo not in target.parents:
            return m.group(0)
        text = m.group("text").strip("`")
        path = target.relative_to(repo).as_posix()
        return f"`{path}`" if text == path else f"{text} (`{path}`)"

    return _LINK.sub(replace, markdown)


SECTION_TITLES = {"Api": "API reference"}    # mkdocs titles a folder's section by its name


def on_nav(nav, config, files):
    """The navigation (built from every page under docs/, no ``nav:`` in
    mkdocs.yml) with the sections of ``SECTION_TITLES`` renamed."""
    for item in nav.items:
        if getattr(item, "is_section", False) and item.title in SECTION_TITLES:
            item.title = SECTION_TITLES[item.title]
    return nav
