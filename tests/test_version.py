"""spc.__version__ comes from one source: pyproject.toml's version (through the
installed package's metadata, or read from the checkout)."""
from importlib import metadata
from pathlib import Path

import pytest

import spc
from spc import _version

REPO = Path(__file__).resolve().parent.parent


def test_version_matches_pyproject():
    expected = _version._version_from_pyproject(REPO / "pyproject.toml")
    assert expected is not None and expected != _version.UNKNOWN
    assert spc.__version__ == expected


def test_source_checkout_without_install_reads_pyproject(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(_version.metadata, "distribution", not_installed)
    assert _version.find_version() == spc.__version__


PROJECT = '[build-system]\nrequires = ["setuptools"]\n\n[project]\nname = "{name}"\nversion = "{version}"\n'


@pytest.mark.parametrize("text, expected", [
    (PROJECT.format(name="spc-compiler", version="1.2.3"), "1.2.3"),
    (PROJECT.format(name="spc-compiler", version="1.2.3") + '\n[tool.x]\nversion = "9"\n', "1.2.3"),
    (PROJECT.format(name="someone-else", version="1.2.3"), None),   # not spc's pyproject
    ('[tool.x]\nname = "spc-compiler"\nversion = "9"\n', None),       # no [project] table
    ("", None),
], ids=["spc", "spc-with-later-table", "other-project", "no-project-table", "empty"])
def test_version_from_pyproject(tmp_path, text, expected):
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    assert _version._version_from_pyproject(path) == expected


def test_missing_pyproject_gives_none(tmp_path):
    assert _version._version_from_pyproject(tmp_path / "absent.toml") is None
