"""Shared test setup.

Compiled kernels go to a fresh per-session cache directory (unless
SPC_CACHE_DIR is set), so a stale on-disk binary can never mask a change to
the compiler; under pytest-xdist (the README's ``-n 2``) the workers of one run
share it, so a kernel two workers need is compiled once.  ``compiled`` memoizes spc.compile within the session: many
tests call the same kernel on different matrices.
"""
from __future__ import annotations

import functools
import os

import pytest

import spc


@pytest.fixture(scope="session", autouse=True)
def _fresh_cache_dir(tmp_path_factory):
    if os.environ.get("SPC_CACHE_DIR"):
        yield
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):      # one run's workers: one shared folder
        shared = tmp_path_factory.getbasetemp().parent / "spc-cache"
        shared.mkdir(exist_ok=True)
        os.environ["SPC_CACHE_DIR"] = str(shared)
    else:
        os.environ["SPC_CACHE_DIR"] = str(tmp_path_factory.mktemp("spc-cache"))
    try:
        yield
    finally:
        os.environ.pop("SPC_CACHE_DIR", None)


@functools.lru_cache(maxsize=None)
def _compile(kernel, fmt, formats, dtype, schedule):
    return spc.compile(kernel, fmt=fmt, formats=dict(formats) if formats else None,
                       dtype=dtype, schedule=schedule)


@pytest.fixture(scope="session")
def compiled():
    """``compiled(kernel, fmt=None, formats=None, dtype="float32", schedule=None)``:
    spc.compile, memoized for the session."""
    def get(kernel, *, fmt=None, formats=None, dtype="float32", schedule=None):
        key = tuple(sorted(formats.items())) if formats else None
        return _compile(kernel, fmt, key, str(dtype), schedule)
    return get


@pytest.fixture
def general_path_counter(monkeypatch):
    """Counts calls that reach the general device path (runtime/device.py)."""
    from spc.runtime.device import DeviceOperands
    calls = []
    original = DeviceOperands.call

    def counting(self, ck, bound, validate, **options):
        calls.append(ck.name)
        return original(self, ck, bound, validate, **options)

    monkeypatch.setattr(DeviceOperands, "call", counting)
    return calls
