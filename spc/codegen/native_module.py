"""Native helper code of spc's runtime (the thread pool, the kept workspaces),
compiled from LLVM IR into this process once."""
from __future__ import annotations

from typing import Callable


def jit_native(emit: Callable[[str, str], str]):
    """An MCJIT engine holding ``emit(triple, data_layout)``'s module, verified and
    finalized for this machine.  The caller keeps the engine alive as long as any
    code may run in it."""
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tm = llvm.Target.from_default_triple().create_target_machine(
        opt=2, reloc="default", codemodel="jitdefault", jit=True)
    mod = llvm.parse_assembly(emit(llvm.get_process_triple(), str(tm.target_data)))
    mod.verify()
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    return engine


__all__ = ["jit_native"]
