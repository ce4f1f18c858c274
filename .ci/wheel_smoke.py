"""Smoke test of an installed spc wheel (run by .ci/run in a fresh venv, outside
the source tree): spc is imported from site-packages, its version is the
package metadata's, a CPU kernel computes the right numbers, and the files the
wheel must ship (grammar, CUDA template and header) are there."""
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import numpy as np

import spc

site = Path(spc.__file__).resolve().parent
assert "site-packages" in site.parts, f"spc imported from {site}, not from the installed wheel"
assert spc.__version__ == importlib.metadata.version("spc-compiler"), spc.__version__

# SpMV on a matrix with an empty row, against numpy
A = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]], dtype=np.float32)
x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
y = spc.compile("spmv", fmt="csr")(spc.tensor(A, "csr"), x)
np.testing.assert_allclose(y, A @ x)

# an expression kernel, taking its tensors by name
k = spc.compile("y[i] = A[i,j] * x[j] + b[i]", formats={"A": "csr"})
np.testing.assert_allclose(k(A=spc.tensor(A, "csr"), x=x, b=np.ones(3, np.float32)), A @ x + 1)

# CUDA C renders without a GPU: the template and the header are in the wheel
source = spc.compile("spmm", fmt="csr", target="cuda", arch="sm_90").source
assert "__global__" in source, "no CUDA kernel rendered"
assert (site / "runtime_include" / "spc_cuda.h").is_file()

# the console script
script = Path(sys.executable).parent / "spc"   # the venv need not be activated
out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True).stdout
assert out.strip() == f"spc {spc.__version__}", out

print(f"wheel smoke: spc {spc.__version__} from {site}: ok")
sys.exit(0)
