"""LLVM's optimization remarks kept off the user's stderr.

A loop that spc asks LLVM to vectorize at a given width (``llvm_ir``'s VECTOR
hints) makes LLVM print ``remark: <unknown>:0:0: loop not vectorized: ...`` to
file descriptor 2 wherever its vectorizer declines (LLVM always prints the
remarks of loops with explicit hints, and llvmlite offers no diagnostic
handler).  Such a remark says something about spc's code generation, not about
the user's program, so ``quiet_remarks`` captures descriptor 2 around an LLVM
call and passes on everything else LLVM printed (warnings, errors) unchanged.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

REMARK = "remark: "


@contextlib.contextmanager
def quiet_remarks():
    """Run the body with descriptor 2 captured; afterwards every captured line
    that is not an LLVM remark is written to ``sys.stderr``.

    Requires: callers serialize (descriptor 2 is the process's: another thread's
    writes during the body are captured too, and passed on afterwards).
    Ensures: descriptor 2 is restored, also when the body raises."""
    try:
        saved = os.dup(2)
    except OSError:                      # no stderr to protect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):
            pass
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = "".join(line for line in text.splitlines(keepends=True)
                           if not line.startswith(REMARK))
            if kept:
                sys.stderr.write(kept)


__all__ = ["quiet_remarks"]
