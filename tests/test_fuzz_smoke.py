"""A short seeded run of the differential fuzzer (benchmarks/fuzz.py) in CI:
every case must come out OK or as a clean refusal (an spc.SpcError other than
CompileError).  Cases run in worker processes, so a crash or a hang fails its
own case; each case is its own test and a failure prints a minimal-size
Python reproducer of the case as generated (``python benchmarks/fuzz.py
--seed 2026 --cases 600 --minimize`` shrinks it)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from fuzz.gen import gen_case  # noqa: E402
from fuzz.minimize import reproducer  # noqa: E402
from fuzz.pool import Pool  # noqa: E402

SEED = 2026
CASES = 600


@pytest.fixture(scope="module")
def outcomes():
    cases = [gen_case(SEED, n) for n in range(CASES)]
    pool = Pool(2, timeout=60.0, env={"SPC_NO_DISK_CACHE": "1", "SPC_NUM_THREADS": "2"})
    return {case["id"]: (case, res) for case, res in pool.run(cases)}


@pytest.mark.parametrize("number", range(CASES))
def test_fuzz_case_is_ok_or_refused(outcomes, number):
    case, res = outcomes[f"{SEED}-{number}"]
    if res["outcome"] not in ("ok", "refused"):
        pytest.fail(f"{res['kind']}: {res.get('error', '')} {res.get('message', '')}\n"
                    f"{reproducer(case, res)}", pytrace=False)


def test_smoke_run_mostly_compiles(outcomes):
    """The generator is not refused wholesale (a broken generator would pass
    every case above as a refusal)."""
    ok = sum(res["outcome"] == "ok" for _, res in outcomes.values())
    assert ok >= CASES // 2, f"only {ok} of {CASES} cases ran"


def test_the_oracle_flags_a_wrong_answer():
    """check_result accepts numpy's answer and rejects one off by 1e-3."""
    import numpy as np
    from fuzz.execute import check_result
    A = [[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]
    x = [0.5, 1.0, -1.0]
    tree = ["sum", [[1, ["mul", [["acc", "A", ["i", "j"]], ["acc", "x", ["j"]]]]]], False]
    case = {"expr": "y[i] = A[i,j]*x[j]", "tree": tree, "out": "y", "out_idx": ["i"],
            "tensors": {"A": ["i", "j"], "x": ["j"]}, "extents": {"i": 2, "j": 3},
            "dtype": "float64", "formats": {"A": "csr"},
            "operands": {"A": {"values": A, "family": "numpy", "seed": 0},
                         "x": {"values": x, "family": "numpy", "seed": 0}}}
    assert check_result(case, np.array([-1.5, 0.0]))["outcome"] == "ok"
    assert check_result(case, np.array([-1.501, 0.0]))["kind"] == "wrong-answer"
    assert check_result(case, np.array([-1.5, 0.0], dtype=np.float32))["kind"] == "wrong-dtype"
    assert check_result(case, np.array([-1.5]))["kind"] == "wrong-shape"
