"""An array spc knows only through DLPack (as a JAX array is): the interop tests'
stand-in for frameworks that are not installed here."""
from __future__ import annotations


class DLPackOnly:
    """Wraps an array that has ``__dlpack__`` and shows nothing else of it."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()
