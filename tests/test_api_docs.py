"""The API reference stays complete: every public name is documented by a
docstring and appears in a page of docs/api/ (mkdocs builds those pages from
the docstrings; CI builds them with warnings as errors)."""
import importlib
import inspect
import re
from pathlib import Path

import pytest

import spc
import spc.cache
import spc.prune

REPO = Path(__file__).resolve().parent.parent
API_PAGES = sorted((REPO / "docs" / "api").glob("*.md"))
DIRECTIVES = {m.group(1) for page in API_PAGES
              for m in re.finditer(r"^::: ([\w.]+)\s*$", page.read_text(), re.M)}


def _public_modules():
    """(module, its public names): spc, spc.cache, spc.prune and, where torch is
    installed, spc.torch."""
    out = [(spc, spc.__all__)]
    for mod in (spc.cache, spc.prune):
        out.append((mod, [n for n, v in vars(mod).items() if not n.startswith("_")
                          and inspect.isfunction(v) and v.__module__ == mod.__name__]))
    try:
        spc_torch = importlib.import_module("spc.torch")
    except ImportError:          # torch is the user's own; without it spc.torch is not importable
        pass
    else:
        out.append((spc_torch, spc_torch.__all__))
    return out


def _documentable(obj) -> bool:
    """Functions, classes and modules carry docstrings; values (NAMED_KERNELS) do not."""
    return inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismodule(obj)


PUBLIC = [(mod.__name__, name) for mod, names in _public_modules() for name in names
          if _documentable(getattr(mod, name))]


def _methods(cls):
    """Public methods and properties ``cls`` defines itself, and ``__call__``."""
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(value, (property, classmethod, staticmethod)) or inspect.isfunction(value):
            yield name


PUBLIC_CLASSES = [getattr(spc, n) for n in spc.__all__ if inspect.isclass(getattr(spc, n))
                  and not issubclass(getattr(spc, n), (Exception, Warning))]
PUBLIC_METHODS = [(cls.__name__, m) for cls in PUBLIC_CLASSES for m in _methods(cls)]


@pytest.mark.parametrize("module, name", PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_name_has_a_docstring(module, name):
    obj = getattr(importlib.import_module(module), name)
    assert (inspect.getdoc(obj) or "").strip(), f"{module}.{name} has no docstring"


@pytest.mark.parametrize("cls_name, method", PUBLIC_METHODS,
                         ids=[f"{c}.{m}" for c, m in PUBLIC_METHODS])
def test_public_method_has_a_docstring(cls_name, method):
    doc = inspect.getdoc(getattr(getattr(spc, cls_name), method))
    assert doc and doc != inspect.getdoc(object.__call__), f"spc.{cls_name}.{method}"


def test_compiled_kernel_call_is_documented():
    doc = inspect.getdoc(spc.CompiledKernel.__call__)
    assert "validate" in doc and "Requires" in doc and "Ensures" in doc


@pytest.mark.parametrize("name", spc.__all__)
def test_public_name_is_in_the_api_reference(name):
    assert f"spc.{name}" in DIRECTIVES, f"no '::: spc.{name}' in docs/api/*.md"


def test_torch_operators_are_in_the_api_reference():
    assert "spc.torch" in DIRECTIVES
