"""spc's thread pool under threadpoolctl: ``threadpool_limits(n)`` caps spc's CPU
calls as it caps OpenMP and BLAS runtimes, and ``threadpool_info()`` lists spc.

threadpoolctl finds runtimes among the loaded shared libraries.  spc's pool has
no library of its own (llvmlite JIT-compiles it, ``codegen/cpu_pool.py``), so
its controller is keyed to llvmlite's, which every spc process loads; it reads
and sets ``spc.get_num_threads`` / ``spc.set_num_threads``.  Its user API is
"openmp": spc's pool plays an OpenMP runtime's part, so
``threadpool_limits(1, user_api="openmp")`` (what libraries do around nested
parallel work) caps it too.
"""
from __future__ import annotations

import importlib.util
import sys

_registered = False


def register() -> bool:
    """Register spc's controller with threadpoolctl (once); False where
    threadpoolctl is not installed or spc's pool does not run here."""
    global _registered
    if _registered:
        return True
    if importlib.util.find_spec("threadpoolctl") is None:
        return False
    if not sys.platform.startswith("linux"):       # spc's pool runs on Linux only
        return False
    import llvmlite.binding  # noqa: F401 - loads libllvmlite, the library threadpoolctl finds
    import threadpoolctl

    from ._version import find_version
    from .threads import get_num_threads, set_num_threads

    class SpcPoolController(threadpoolctl.LibController):
        user_api = "openmp"
        internal_api = "spc"
        filename_prefixes = ("libllvmlite",)

        def get_num_threads(self):
            return get_num_threads()

        def set_num_threads(self, num_threads):
            set_num_threads(int(num_threads))

        def get_version(self):
            return find_version()

    threadpoolctl.register(SpcPoolController)
    _registered = True
    return True
