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
