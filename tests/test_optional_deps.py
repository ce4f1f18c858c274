"""spc's core needs only its declared dependencies (numpy, llvmlite, numba, lark,
jinja2, ml_dtypes): scipy and torch are optional, so ``import spc`` and a CPU
kernel on numpy data must work without them (as in a fresh ``pip install``)."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# a None entry in sys.modules makes `import NAME` raise ImportError
WITHOUT = """
import sys
for name in {names!r}:
    sys.modules[name] = None
import numpy as np
import spc
A = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]], dtype=np.float32)
x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
y = spc.compile("spmv", fmt="csr")(spc.tensor(A, "csr"), x)
np.testing.assert_allclose(y, A @ x)
print("ok", spc.__version__)
"""


@pytest.mark.parametrize("names", [("scipy",), ("torch",), ("scipy", "torch", "cupy")],
                         ids=["no-scipy", "no-torch", "none-optional"])
def test_import_and_cpu_call_without_optional_packages(names):
    r = subprocess.run([sys.executable, "-c", WITHOUT.format(names=list(names))], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok ")
