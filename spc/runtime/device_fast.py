"""The device fast paths of one kernel, one per operand family, chosen per call."""
from __future__ import annotations

import importlib.util

_UNMADE = object()


class DeviceFastPaths:
    """``call(args, validate)``: the result through the fast path of the first
    operand's family (torch: ``torch_fast``; CuPy and cupyx: ``cupy_fast``),
    or None where there is none or it does not take the call (the general
    path runs).  Each family's path is made at its first call."""

    def __init__(self, ck):
        self.ck = ck
        self.torch = _UNMADE
        self.cupy = _UNMADE
        # the first operand's type -> its path (None: none); CompiledKernel.__call__ reads it
        self.by_type: dict[type, object] = {}

    def call(self, args, validate: bool):
        if not args:
            return None
        path = self.by_type.get(args[0].__class__, _UNMADE)
        if path is _UNMADE:
            path = self.by_type[args[0].__class__] = self._path_of(args[0].__class__)
        return None if path is None else path.call(args, validate)

    def _path_of(self, cls: type):
        """The fast path of operands whose first is of type ``cls`` (None: none)."""
        family = cls.__module__
        if family.startswith("torch"):
            path = self.torch
            if path is _UNMADE:
                path = self.torch = self._made("torch", "torch_fast", "TorchFastPath")
        elif family.startswith("cupy"):
            path = self.cupy
            if path is _UNMADE:
                path = self.cupy = self._made("cupy", "cupy_fast", "CupyFastPath")
        else:
            return None
        return path

    def _made(self, package: str, module: str, cls: str):
        if importlib.util.find_spec(package) is None:
            return None
        mod = importlib.import_module(f"{__package__}.{module}")
        return getattr(mod, cls).of(self.ck)
