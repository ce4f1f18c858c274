"""spc's version, from its one source: the ``version`` in ``pyproject.toml``.

An installed spc (a wheel, or ``pip install -e .``) reads it from the package
metadata of the ``spc-compiler`` distribution; a source checkout used without
installing (``PYTHONPATH=checkout``) reads the ``pyproject.toml`` beside the
package instead.
"""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "spc-compiler"
UNKNOWN = "0+unknown"


def _version_from_pyproject(path: Path) -> str | None:
    """The ``[project]`` table's ``version`` in ``path``, or None.

    Requires: nothing (a missing or unreadable file gives None).
    Ensures: a value is returned only if ``path`` declares the spc-compiler
    distribution, so an unrelated pyproject.toml above an installed spc is ignored.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    table = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if table is None:
        return None
    name = re.search(r'^name\s*=\s*"([^"]+)"', table.group(1), re.M)
    version = re.search(r'^version\s*=\s*"([^"]+)"', table.group(1), re.M)
    if name is None or version is None or name.group(1) != DISTRIBUTION:
        return None
    return version.group(1)


def find_version() -> str:
    """spc's version string.

    Ensures: the ``spc-compiler`` metadata's version if that distribution holds
    this very package (an installed wheel); else the version in the
    ``pyproject.toml`` of the checkout this package sits in (a source checkout,
    installed in editable mode or not at all); else the metadata's version of
    whatever ``spc-compiler`` is installed; else ``"0+unknown"``.
    """
    here = Path(__file__).resolve().parent
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None and _holds(dist, here / "__init__.py"):
        return dist.version
    from_checkout = _version_from_pyproject(here.parent / "pyproject.toml")
    if from_checkout is not None:
        return from_checkout
    return dist.version if dist is not None else UNKNOWN


def _holds(dist: metadata.Distribution, init_file: Path) -> bool:
    """Whether ``dist`` installed ``init_file`` (spc's ``__init__.py``) where it is."""
    try:
        return Path(dist.locate_file("spc/__init__.py")).resolve() == init_file
    except (OSError, TypeError, ValueError):
        return False
